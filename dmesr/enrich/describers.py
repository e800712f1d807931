"""Describers: items in, one description per item and view out.

Four backends share one small interface (``describer_id`` + ``describe(requests)``):

* ``hf``: a real Hugging Face vision-language model (or a causal LM for the text view), see hf.py;
* ``cascade``: the offline default, in cascade.py: an ImageNet classifier names what a picture
  shows and a small LLM writes the descriptions. It stands in for a real MLLM, it is not one;
* ``gemma3``: Gemma 3 270M (pretrained, bundled 4-bit GGUF) writing the text view, in gemma.py;
* ``precomputed``: descriptions read from a JSONL / parquet file (item, view, description).

Models load on the first ``describe`` call, so a resumed run with nothing left to do is instant.
Make one by name with :func:`dmesr.enrich.registry.make_describer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dmesr.enrich.prompts import build_prompt


@dataclass
class DescribeRequest:
    item: str
    view: str  # "image" | "text"
    text: str  # the item's original text (grounds the image view too)
    image: Image.Image | None = None  # set for the image view only


class Describer(ABC):
    """``describe`` gets requests of one view and returns one description per request, in order."""

    describer_id: str  # names the backend, model and generation settings; part of the cache key
    about: str = ""  # one line for people: which model(s) write the descriptions, and how

    @abstractmethod
    def describe(self, requests: list[DescribeRequest]) -> list[str]: ...

    def load(self) -> None:
        """Load the models now (they load lazily otherwise), so that one that cannot load is one error
        before any item, not a failure counted per item."""


def generation_tag(max_new_tokens: int, no_repeat_ngram_size: int) -> str:
    """The generation settings that change the text, for the describer id (and so the cache key)."""
    return f"mnt{max_new_tokens}" + (f":nr{no_repeat_ngram_size}" if no_repeat_ngram_size else "")


def generation_about(max_new_tokens: int, no_repeat_ngram_size: int) -> str:
    """The same settings in words, for the ``about`` line of a describer."""
    return f"greedy, at most {max_new_tokens} new tokens" + (
        f", no repeated {no_repeat_ngram_size}-gram" if no_repeat_ngram_size else "")


def single_view(requests: list[DescribeRequest]) -> str:
    views = {request.view for request in requests}
    if len(views) != 1:
        raise ValueError(f"a describe batch must hold one view, got {sorted(views)}")
    return views.pop()


class HFDescriber(Describer):
    def __init__(self, model: str, *, max_new_tokens: int = 64, no_repeat_ngram_size: int = 0, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False):
        if not model:
            raise ValueError("the hf describer needs model=<hub name or local folder>")
        self.options = dict(model=model, max_new_tokens=max_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size,
                            device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self.describer_id = f"hf:{model}:{generation_tag(max_new_tokens, no_repeat_ngram_size)}"
        self.about = f"Hugging Face model {model}; {generation_about(max_new_tokens, no_repeat_ngram_size)}"
        self._generator = None

    def load(self) -> None:
        self.generator  # noqa: B018 - loading is the point

    @property
    def generator(self):
        if self._generator is None:
            from dmesr.enrich.hf import HFGenerator

            self._generator = HFGenerator(**self.options)
        return self._generator

    def describe(self, requests: list[DescribeRequest]) -> list[str]:
        view = single_view(requests)
        prompts = [build_prompt(view, request.text) for request in requests]
        images = [request.image for request in requests] if view == "image" else None
        return self.generator.generate(prompts, images)


class PrecomputedDescriber(Describer):
    """Looks descriptions up in a file; an (item, view) the file lacks is an error for that item."""

    def __init__(self, path: str | Path):
        from dmesr.enrich.cache import read_descriptions

        table = read_descriptions(path)
        self.lookup = {(row.item, row.view): row.description for row in table.itertuples()}
        self.describer_id = f"precomputed:{Path(path).name}"
        self.about = f"descriptions read from {path}"

    def describe(self, requests: list[DescribeRequest]) -> list[str]:
        missing = [(r.item, r.view) for r in requests if (r.item, r.view) not in self.lookup]
        if missing:
            raise KeyError(f"no precomputed description for (item, view) {missing[0]}")
        return [self.lookup[(r.item, r.view)] for r in requests]
