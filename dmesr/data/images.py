"""Item pictures downloaded from their URLs (``dmesr data images NAME``); pictures given as files are checked by
:mod:`dmesr.data.image_checks`.

Amazon metadata and many item tables give pictures as URLs. ``download_images`` fetches each item's
first ``per_item`` URLs into ``$DMESR_HOME/images/<dataset key>/`` (one folder per dataset identity,
:func:`images_folder`), concurrently, and keeps a file only once it decodes fully as an image. Every
outcome is appended to ``manifest.jsonl`` in that folder (``done`` with the file, its size and sha256,
or ``failed`` with the reason), one flushed line per URL, so a killed download resumes where it
stopped: done URLs are never fetched again, failed ones only with ``retry_failed``. Bytes go to
``.partial/`` first and are renamed into place once checked, so no torn picture is ever kept.

Missing pictures are normal on scraped catalogues. An item without one keeps its text view (the
DMESR item encoder masks the missing image view); :func:`image_counts` says how many and why, for
``data stats`` and a run's ``data.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from dmesr.data.download_settings import DEFAULT_MAX_BYTES, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_WORKERS
from dmesr.data.identity import dataset_key
from dmesr.data.image_checks import check_image, item_urls, wanted_urls
from dmesr.data.loaders import sha256_file
from dmesr.paths import dmesr_home

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
USER_AGENT = "dmesr-image-download/0.1 (research; item pictures for recommendation)"
MANIFEST = "manifest.jsonl"


def images_folder(dataset: str, home: Path | str | None = None) -> Path:
    """Where a dataset's downloaded pictures live: under its identity, so other data never shares them."""
    return dmesr_home(home) / "images" / dataset_key(dataset)


# ---------------------------------------------------------------- the manifest


def read_manifest(folder: Path) -> dict[str, dict]:
    """url -> its last record; a line torn by a kill (the last one) is ignored, so that URL is fetched again."""
    records = {}
    path = Path(folder) / MANIFEST
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["url"]] = record
    return records


class ManifestWriter:
    """Appends one record per line, flushed and synced, so a record on disk means its file is in place."""

    def __init__(self, folder: Path):
        path = folder / MANIFEST
        if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with open(path, "ab") as handle:  # end a line torn by a kill, so the next record starts clean
                handle.write(b"\n")
        self.handle = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def append(self, record: dict) -> None:
        with self.lock:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------- one download


class RateLimit:
    """At most ``per_second`` requests started per second, over all workers (polite use of public hosts)."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next_start = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            start = max(self.next_start, time.monotonic())
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - time.monotonic()))


def make_session(workers: int, retries: int, backoff: float) -> requests.Session:
    """A session whose adapter retries connection errors and transient statuses (honouring Retry-After)."""
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                  status_forcelist=TRANSIENT_STATUSES, allowed_methods=frozenset({"GET"}), raise_on_status=False,
                  respect_retry_after_header=True)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=workers, pool_maxsize=workers)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = USER_AGENT
    return session


def url_name(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]


def fetch_image(session: requests.Session, url: str, folder: Path, timeout: float, max_bytes: int,
                limit: RateLimit) -> dict:
    """Download, check and keep one picture; returns its manifest record (never raises for a bad URL)."""
    partial = folder / ".partial" / (url_name(url) + ".part")
    limit.wait()
    try:
        with session.get(url, timeout=(timeout, timeout), stream=True) as reply:
            if reply.status_code != 200:
                return {"status": "failed", "reason": f"http {reply.status_code}"}
            declared = reply.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                return {"status": "failed", "reason": "over the size limit"}
            size, digest, deadline = 0, hashlib.sha256(), time.monotonic() + 6 * timeout
            with open(partial, "wb") as handle:
                for block in reply.iter_content(1 << 16):
                    size += len(block)
                    if size > max_bytes:
                        return {"status": "failed", "reason": "over the size limit"}
                    if time.monotonic() > deadline:  # a reply that trickles forever
                        return {"status": "failed", "reason": "timeout"}
                    digest.update(block)
                    handle.write(block)
        suffix, problem = check_image(partial)
        if problem:
            return {"status": "failed", "reason": problem}
        final = folder / (url_name(url) + suffix)
        os.replace(partial, final)
        return {"status": "done", "file": final.name, "bytes": size, "sha256": digest.hexdigest()}
    except requests.TooManyRedirects:
        return {"status": "failed", "reason": "redirect loop"}
    except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        reason = "timeout" if isinstance(error, requests.Timeout) or "timed out" in str(error) else "reply cut short"
        return {"status": "failed", "reason": reason}
    except requests.exceptions.InvalidURL:
        return {"status": "failed", "reason": "invalid url"}
    except requests.RequestException as error:
        cause = getattr(error.args[0], "reason", None) if error.args else None  # urllib3 gave up retrying
        if isinstance(cause, (ReadTimeoutError, ConnectTimeoutError)):
            return {"status": "failed", "reason": "timeout"}
        return {"status": "failed", "reason": f"connection error ({type(cause or error).__name__})"}
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------- the whole download


def download_images(items: pd.DataFrame, folder: Path | str, *, workers: int = DEFAULT_WORKERS,
                    timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
                    retries: int = DEFAULT_RETRIES, backoff: float = 0.5, rate: float | None = None,
                    per_item: int = 1, retry_failed: bool = False, progress: bool = True) -> dict:
    """Fetch every wanted picture not yet in the manifest; returns the summary (also printed with ``progress``)."""
    for name, value, low in (("workers", workers, 1), ("per_item", per_item, 1), ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    if timeout <= 0 or max_bytes <= 0 or (rate is not None and rate <= 0):
        raise ValueError("timeout, max_bytes and rate must be positive")
    folder = Path(folder)
    (folder / ".partial").mkdir(parents=True, exist_ok=True)
    for leftover in (folder / ".partial").iterdir():  # bytes of a download a kill interrupted
        leftover.unlink()
    wanted = wanted_urls(items, per_item)
    manifest = read_manifest(folder)
    writer = ManifestWriter(folder)
    todo, kept_before = [], 0
    on_disk = {path.stem: path for path in folder.iterdir() if path.is_file() and path.name != MANIFEST}
    for item, url in wanted:
        record = manifest.get(url)
        if record and record["status"] == "done" and (folder / record["file"]).is_file():
            kept_before += 1
        elif record and record["status"] == "failed" and not retry_failed:
            continue
        elif (path := on_disk.get(url_name(url))) is not None:  # checked and renamed, killed before its line
            writer.append({"url": url, "item": item, "status": "done", "file": path.name,
                           "bytes": path.stat().st_size, "sha256": sha256_file(path)})
            kept_before += 1
        else:
            todo.append((item, url))
    session_of = threading.local()
    limit = RateLimit(rate)

    def fetch(pair: tuple[str, str]) -> dict:
        if not hasattr(session_of, "session"):
            session_of.session = make_session(1, retries, backoff)
        item, url = pair
        return {"url": url, "item": item, **fetch_image(session_of.session, url, folder, timeout, max_bytes, limit)}

    fetched, failed, started = 0, Counter(), time.perf_counter()
    pool, queue = ThreadPoolExecutor(max_workers=workers), iter(todo)
    # a few URLs per worker in flight, not millions of futures; on Ctrl-C only those few are waited for
    running = {pool.submit(fetch, pair) for pair in itertools.islice(queue, 4 * workers)}
    try:
        with tqdm(total=len(todo), unit="img", desc="images", disable=not progress) as bar:
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    record = future.result()
                    writer.append(record)
                    if record["status"] == "done":
                        fetched += 1
                    else:
                        failed[record["reason"]] += 1
                    bar.update(1)
                    running |= {pool.submit(fetch, pair) for pair in itertools.islice(queue, 1)}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    seconds = time.perf_counter() - started
    manifest = read_manifest(folder)
    summary = {"folder": str(folder), "urls": len(wanted), "fetched": fetched, "already_kept": kept_before,
               "failed": dict(failed), "seconds": round(seconds, 2),
               "images_per_s": round(fetched / seconds, 2) if fetched and seconds else 0.0,
               **image_counts(items, folder, manifest)}
    if progress:
        print(summary_line(summary))
    return summary


def summary_line(summary: dict) -> str:
    missing = ", ".join(f"{reason}: {count}" for reason, count in summary["missing"].items()) or "none"
    return (f"images: {summary['fetched']} fetched ({summary['images_per_s']}/s), {summary['already_kept']} kept from "
            f"before, {sum(summary['failed'].values())} failed now; {summary['with_image']} of {summary['items']} "
            f"items have a picture; without one (they keep their text view): {missing}; in {summary['folder']}")


# ---------------------------------------------------------------- pictures of an item table


def with_downloaded_images(items: pd.DataFrame, folder: Path | str,
                           manifest: dict[str, dict] | None = None) -> pd.DataFrame:
    """``items`` with ``image_path`` set, where an item has none, to its first downloaded picture."""
    folder = Path(folder)
    if "image_urls" not in items.columns or not folder.is_dir():
        return items
    manifest = read_manifest(folder) if manifest is None else manifest
    paths = list(items["image_path"]) if "image_path" in items.columns else [None] * len(items)
    for row, value in enumerate(items["image_urls"]):
        if isinstance(paths[row], str) and paths[row]:
            continue
        done = [manifest[url]["file"] for url in item_urls(value)
                if manifest.get(url, {}).get("status") == "done" and (folder / manifest[url]["file"]).is_file()]
        paths[row] = str(folder / done[0]) if done else None
    return items.assign(image_path=pd.Series(paths, index=items.index, dtype=object))


def image_counts(items: pd.DataFrame, folder: Path | str | None = None,
                 manifest: dict[str, dict] | None = None) -> dict:
    """How many items have a picture (a file, or a downloaded URL), and why the others have none."""
    folder = Path(folder) if folder is not None else None
    if folder is not None and manifest is None:
        manifest = read_manifest(folder)
    manifest = manifest or {}
    missing, with_image = Counter(), 0
    urls = items["image_urls"] if "image_urls" in items.columns else [None] * len(items)
    paths = items["image_path"] if "image_path" in items.columns else [None] * len(items)
    for path, value in zip(paths, urls):
        if isinstance(path, str) and path:
            with_image += 1
            continue
        records = [manifest.get(url) for url in item_urls(value)]
        if not records:
            missing["no picture given"] += 1
        elif any(r and r["status"] == "done" and folder is not None and (folder / r["file"]).is_file()
                 for r in records):
            with_image += 1
        elif any(r is None for r in records):
            missing["not downloaded yet"] += 1
        else:
            missing[next(r["reason"] for r in records if r)] += 1
    return {"items": len(items), "with_image": with_image, "missing": dict(missing.most_common())}


def dataset_image_counts(dataset: str, items: pd.DataFrame) -> dict | None:
    """:func:`image_counts` for a dataset, with its downloaded pictures (for ``data stats`` and ``data.json``);
    None for a dataset that names no pictures at all (MovieLens)."""
    has_paths = "image_path" in items.columns and items["image_path"].map(lambda p: isinstance(p, str)).any()
    if not has_paths and not wanted_urls(items):
        return None
    try:
        folder = images_folder(dataset)
    except ValueError:
        folder = None
    return image_counts(items, folder if folder is not None and folder.is_dir() else None)
