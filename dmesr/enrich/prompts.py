"""The prompt for each enrichment view, in one place and versioned.

Stage 1 of DMESR asks a multimodal LLM for two coarse descriptions per item: an *image* view
(what the picture shows, grounded by the item text) and a *text* view (what the item is and who
it suits). The exact wording is this project's reading of the method, so it lives here, and
``prompt_hash(view)`` (version + wording) is part of every cache key: editing a prompt
invalidates exactly the descriptions written with the old one.
"""

from __future__ import annotations

import hashlib

PROMPT_VERSION = 1  # bump on any wording change, even one the hash would already catch
VIEWS = ("image", "text")
MAX_TEXT_CHARS = 1000  # longer item texts are cut here so one item cannot blow up a batch

PROMPTS = {
    # {visual_hints} is empty for a real MLLM (it sees the picture); the cascade describer fills
    # it with what its image classifier recognised, because its language model cannot see.
    "image": (
        "The picture belongs to this item.\n{text}\n{visual_hints}"
        "In two sentences, describe what the picture shows: its appearance, style, colours, "
        "objects and mood."
    ),
    "text": (
        "{text}\n"
        "In two sentences, describe what this item is and what kind of person would enjoy it."
    ),
}


def check_view(view: str) -> str:
    if view not in PROMPTS:
        raise ValueError(f"unknown view {view!r}; known views: {', '.join(VIEWS)}")
    return view


def prompt_hash(view: str) -> str:
    """Short, stable id of the prompt for ``view`` (part of the description cache key)."""
    wording = f"v{PROMPT_VERSION}\n{PROMPTS[check_view(view)]}"
    return hashlib.sha256(wording.encode("utf-8")).hexdigest()[:12]


def build_prompt(view: str, text: str, visual_hints: str = "") -> str:
    """The prompt for one item; ``text`` is cut to ``MAX_TEXT_CHARS`` characters."""
    text = " ".join(str(text).split())[:MAX_TEXT_CHARS]
    hints = f"{visual_hints.strip()}\n" if visual_hints.strip() else ""
    return PROMPTS[check_view(view)].format(text=text, visual_hints=hints)


def prompt_card(views: tuple[str, ...] | list[str]) -> dict:
    """Version, hash and wording of the prompts of ``views`` (for the header of exported files)."""
    return {view: {"version": PROMPT_VERSION, "hash": prompt_hash(view), "template": PROMPTS[check_view(view)]}
            for view in views}
