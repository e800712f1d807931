"""Amazon Reviews 2023 from its published files: ``dmesr data fetch amazon-2023 --category All_Beauty``.

Each category is two gzipped JSON-lines files on the McAuley lab's host (reviews, and item metadata
with picture URLs). They are downloaded into ``$DMESR_HOME/raw/amazon-2023/<category>/``, resumably
(an interrupted download continues from its ``.part`` file with an HTTP range request), renamed into
place when complete, and their sha256 and size are recorded in ``sha256.json`` beside them. With
``add=NAME`` the category is then registered (``dmesr data add``), so download, registration and
``dmesr data images NAME`` are one flow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests
from tqdm.auto import tqdm

from dmesr.data.download_settings import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from dmesr.data.images import make_session
from dmesr.data.loaders import sha256_file
from dmesr.paths import dmesr_home, write_atomically

BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw"
CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry", "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
    "Handmade_Products", "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments",
    "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Software", "Sports_and_Outdoors",
    "Subscription_Boxes", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games", "Unknown",
)
CHECKSUMS = "sha256.json"


def category_files(category: str) -> dict[str, str]:
    """role -> path of the file under the host's ``raw/`` folder."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown Amazon Reviews 2023 category {category!r}; known: {', '.join(CATEGORIES)}")
    return {"reviews": f"review_categories/{category}.jsonl.gz", "meta": f"meta_categories/meta_{category}.jsonl.gz"}


def download_file(session: requests.Session, url: str, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``url`` to ``path``, continuing a ``.part`` file left by an interrupted download (HTTP range request)."""
    partial = path.with_name(path.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as reply:
        if reply.status_code == 416 and have:  # nothing after what we have: the part file is whole
            os.replace(partial, path)
            return
        if reply.status_code not in (200, 206):
            raise RuntimeError(f"{url}: HTTP {reply.status_code}; nothing kept but {partial} (rerun to continue)")
        resumed = reply.status_code == 206
        total = int(reply.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with open(partial, "ab" if resumed else "wb") as handle, \
                tqdm(total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                     desc=path.name) as bar:
            try:
                for block in reply.iter_content(1 << 13):
                    handle.write(block)
                    bar.update(len(block))
            except requests.RequestException as error:
                raise RuntimeError(f"{url}: the download broke off after {handle.tell()} bytes ({type(error).__name__}); "
                                   f"rerun to continue from {partial}") from None
    if total and partial.stat().st_size != total:
        raise RuntimeError(f"{url}: the reply ended after {partial.stat().st_size} of {total} bytes; rerun to continue")
    os.replace(partial, path)


def fetch_amazon_2023(category: str, home: Path | str | None = None, base_url: str = BASE_URL,
                      retries: int = DEFAULT_RETRIES) -> dict[str, Path]:
    """Download (or find) one category's reviews and metadata; returns role -> local file."""
    folder = dmesr_home(home) / "raw" / "amazon-2023" / category
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / CHECKSUMS
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    session = make_session(1, retries, backoff=1.0)
    files = {}
    for role, remote in category_files(category).items():
        path = folder / Path(remote).name
        known = recorded.get(path.name)
        if not (known and path.is_file() and path.stat().st_size == known["bytes"]):
            url = f"{base_url.rstrip('/')}/{remote}"
            print(f"dmesr: downloading {url}")
            download_file(session, url, path)
            recorded[path.name] = {"url": url, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            write_atomically(record_path, json.dumps(recorded, indent=2))
        files[role] = path
    return files
