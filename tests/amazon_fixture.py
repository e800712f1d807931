"""An Amazon-Reviews-2023-shaped category, small: gzipped reviews and metadata whose pictures are URLs on the
loopback :class:`tests.image_server.ImageServer`, a few of them hostile (one of each failure a real host shows)."""

from __future__ import annotations

import gzip
import json

import numpy as np

# item index -> the picture path its metadata gives (every other item: /img/<asin>.jpg)
HOSTILE = {0: "status/404/p0", 1: "flaky/p1", 2: "slow/p2", 3: "truncated/p3", 4: "html/p4", 5: "big/p5",
           6: "loop/p6"}
NO_PICTURE = (7,)  # metadata with an empty image list
# what the manifest should say of each hostile picture (the flaky one succeeds on its retry)
EXPECTED_REASONS = {"http 404": 1, "timeout": 1, "truncated or corrupt image": 1, "not an image": 1,
                    "over the size limit": 1, "redirect loop": 1}

WORDS = ("red blue green soft matte glossy travel daily gentle fresh classic bright compact "
         "lotion brush mirror shampoo serum palette comb kit").split()


def asin(index: int) -> str:
    return f"B0{index:08d}"


def amazon_category(base_url: str, num_items: int = 120, num_users: int = 160, per_user: int = 8,
                    seed: int = 0) -> tuple[bytes, bytes]:
    """``(reviews.jsonl.gz, meta.jsonl.gz)`` bytes. User ``u`` reviews ``per_user`` consecutive items from
    ``7u mod num_items`` on, in time order: a learnable next item, and every item reviewed by at least
    ``per_user`` users when ``num_users >= num_items`` (so the 5-core keeps them all)."""
    rng = np.random.default_rng(seed)
    reviews = []
    for user in range(num_users):
        start = 1_600_000_000_000 + int(rng.integers(0, 10**9))
        for step in range(per_user):
            item = (7 * user + step) % num_items
            reviews.append({"rating": float(rng.integers(1, 6)), "title": "ok", "text": "fine", "images": [],
                            "asin": asin(int(item)), "parent_asin": asin(int(item)), "user_id": f"U{user:05d}",
                            "timestamp": start + 86_400_000 * step, "helpful_vote": 0, "verified_purchase": True})
    meta = []
    for index in range(num_items):
        words = rng.choice(WORDS, size=3, replace=False)
        path = HOSTILE.get(index, f"img/{asin(index)}.jpg")
        url = f"{base_url}/{path}"
        images = [] if index in NO_PICTURE else [{"thumb": url + "?s=thumb", "large": url, "variant": "MAIN",
                                                   "hi_res": url}]
        meta.append({"main_category": "All Beauty", "title": f"{words[0]} {words[1]} {words[2]}",
                     "average_rating": 4.0, "rating_number": 10, "features": [f"{words[0]} finish"],
                     "description": [f"A {words[1]} {words[2]} for every day."], "price": None,
                     "images": images, "videos": [], "store": f"Store {index % 7}", "categories": [],
                     "details": {}, "parent_asin": asin(index), "bought_together": None})
    return gzip.compress(_lines(reviews), mtime=0), gzip.compress(_lines(meta), mtime=0)


def _lines(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()
