"""A loopback HTTP server standing in for the hosts of item pictures and of Amazon's files (127.0.0.1 only, a port
the system picks), started and stopped by the test (or benchmark) that uses it. It counts the requests per path.

    /img/<name>          a small JPEG, its colour drawn from the name
    /status/<code>/<n>   that HTTP status, always (404, 500, ...)
    /flaky/<name>        500 on the first request, then the JPEG
    /slow/<name>         the JPEG after ``slow_seconds`` (longer than the client's timeout)
    /truncated/<name>    the first half of the JPEG
    /html/<name>         an HTML page served as text/html
    /big/<name>          ``big_bytes`` bytes (over the client's size limit)
    /loop/<name>         a redirect to itself, forever
    /files/<path>        a file of ``files`` (bytes), with HTTP range requests (resumed downloads)

``latency`` seconds are added to every reply (a far host); ``cut_files_after`` ends a file reply after that
many bytes (a dropped connection), once per path.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def jpeg_bytes(name: str, size: int = 48) -> bytes:
    colour = tuple(hashlib.sha256(name.encode()).digest()[:3])
    image = Image.new("RGB", (size, size), colour)
    for x in range(0, size, 6):  # some structure, so the JPEG is more than one flat block
        for y in range(size):
            image.putpixel((x, y), (255 - colour[0], colour[1], 255 - colour[2]))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connect at once (the default backlog of 5 drops their connects)

    def handle_error(self, request, client_address):  # a client that gave up (timeout) breaks the pipe: expected
        pass


class ImageServer:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 2.0, big_bytes: int = 2 * 1024 * 1024,
                 files: dict[str, bytes] | None = None, cut_files_after: int | None = None):
        self.latency, self.slow_seconds, self.big_bytes = latency, slow_seconds, big_bytes
        self.files, self.cut_files_after = dict(files or {}), cut_files_after
        self.requests: Counter = Counter()
        self.ranges: list[str] = []  # the Range headers of file requests, in order
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with server.lock:
                    server.requests[self.path] += 1
                    count = server.requests[self.path]
                time.sleep(server.latency)
                server.reply(self, count)

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def reply(self, handler: BaseHTTPRequestHandler, count: int) -> None:
        parts = handler.path.strip("/").split("/")
        kind, name = parts[0], "/".join(parts[1:])
        if kind == "img" or (kind == "flaky" and count > 1):
            return send(handler, 200, jpeg_bytes(name))
        if kind == "flaky":
            return send(handler, 500, b"try again")
        if kind == "status":
            return send(handler, int(parts[1]), b"no")
        if kind == "slow":
            time.sleep(self.slow_seconds)
            return send(handler, 200, jpeg_bytes(name))
        if kind == "truncated":
            body = jpeg_bytes(name)
            return send(handler, 200, body[: len(body) // 2])
        if kind == "html":
            return send(handler, 200, b"<html><body>Sorry, this picture moved.</body></html>", "text/html")
        if kind == "big":
            return send(handler, 200, b"\xff" * self.big_bytes)
        if kind == "loop":
            handler.send_response(302)
            handler.send_header("Location", handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if kind == "files" and name in self.files:
            return self.send_file(handler, self.files[name], count)
        return send(handler, 404, b"not found")

    def send_file(self, handler: BaseHTTPRequestHandler, body: bytes, count: int) -> None:
        start = 0
        asked = handler.headers.get("Range", "")
        self.ranges.append(asked)
        if asked.startswith("bytes="):
            start = int(asked[len("bytes="):].split("-")[0])
            if start >= len(body):
                return send(handler, 416, b"")
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Type", "application/gzip")
        handler.send_header("Content-Length", str(len(body) - start))
        handler.end_headers()
        end = len(body)
        if self.cut_files_after is not None and count == 1:
            end = min(end, start + self.cut_files_after)  # the connection drops partway, the first time
        handler.wfile.write(body[start:end])
        if end < len(body):
            handler.close_connection = True


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
