"""Picture download on a loopback host with added latency: throughput by worker count, and a kill then a rerun.

    python benchmarks/bench_image_download.py --images 200 --latency 0.05 --out reports/bench/image-download.json

Throughput: ``--images`` pictures served by a local server (127.0.0.1) that waits ``--latency`` seconds
before each reply (a far host), downloaded with 1 worker and with the default worker count, each into a
fresh folder; prints images/s and their ratio. Kill and rerun: a child process downloads the same
pictures with 2 workers, is killed (SIGKILL) once ``--kill-after`` are recorded, and a rerun finishes
the job; prints the manifest counts before and after, how many pictures were requested more than
once, and whether any partial file was left.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmesr.data.download_settings import DEFAULT_WORKERS  # noqa: E402
from dmesr.data.images import download_images, read_manifest  # noqa: E402
from tests.image_server import ImageServer  # noqa: E402


def url_items(base: str, count: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame({"item": [f"i{k}" for k in range(count)], "text": "x",
                         "image_urls": [[f"{base}/img/{tag}{k}.jpg"] for k in range(count)]})


def throughput(server: ImageServer, count: int, workers: int, scratch: Path) -> dict:
    summary = download_images(url_items(server.url, count, f"w{workers}-"), scratch / f"workers-{workers}",
                              workers=workers, progress=False)
    assert summary["fetched"] == count, summary
    return {"workers": workers, "images": count, "seconds": summary["seconds"], "images_per_s": summary["images_per_s"]}


def kill_and_rerun(server: ImageServer, count: int, kill_after: int, scratch: Path) -> dict:
    folder = scratch / "killed"
    items = url_items(server.url, count, "k")
    items.to_parquet(scratch / "items.parquet")
    script = ("import pandas as pd; from dmesr.data.images import download_images; "
              f"download_images(pd.read_parquet({str(scratch / 'items.parquet')!r}), {str(folder)!r}, workers=2, "
              "progress=False)")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while len(read_manifest(folder)) < kill_after and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = read_manifest(folder)
    partial_at_kill = len(list((folder / ".partial").glob("*")))
    summary = download_images(items, folder, workers=DEFAULT_WORKERS, progress=False)
    after = read_manifest(folder)
    requested = {path: n for path, n in server.requests.items() if path.startswith("/img/k")}
    done_before = {url.split("/", 3)[3] for url, r in before.items() if r["status"] == "done"}
    return {"images": count, "manifest_done_at_kill": sum(r["status"] == "done" for r in before.values()),
            "partial_files_at_kill": partial_at_kill, "fetched_by_rerun": summary["fetched"],
            "kept_from_before": summary["already_kept"],
            "manifest_done_after": sum(r["status"] == "done" for r in after.values()),
            "done_before_kill_requested_again": sum(requested.get("/" + path, 0) > 1 for path in done_before),
            "requested_twice_in_all": sum(n > 1 for n in requested.values()),
            "partial_files_after": len(list((folder / ".partial").glob("*")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each reply")
    parser.add_argument("--kill-after", type=int, default=40, help="recorded pictures before the kill")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, ImageServer(latency=args.latency) as server:
        scratch = Path(scratch)
        one = throughput(server, args.images, 1, scratch)
        many = throughput(server, args.images, DEFAULT_WORKERS, scratch)
        resumed = kill_and_rerun(server, args.images, args.kill_after, scratch)
    result = {"latency_s": args.latency, "one_worker": one, "default_workers": many,
              "speedup": round(many["images_per_s"] / one["images_per_s"], 2), "kill_and_rerun": resumed,
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "command": "python benchmarks/bench_image_download.py " + " ".join(sys.argv[1:])}
    print(f"1 worker: {one['images_per_s']} images/s; {DEFAULT_WORKERS} workers: {many['images_per_s']} images/s; "
          f"ratio {result['speedup']}x ({args.latency * 1000:g} ms added per request)")
    print("kill and rerun:", json.dumps(resumed))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
