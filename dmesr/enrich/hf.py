"""Hugging Face generation backends: vision-language models and plain causal LMs.

Any image-text-to-text model that ``AutoProcessor`` + ``AutoModelForImageTextToText`` load
(Qwen2.5-VL, SmolVLM / Idefics3, LLaVA, ...) describes both views: the image view with the
picture in the chat turn, the text view through the same model without an image. A plain causal
LM (``AutoModelForCausalLM`` + ``AutoTokenizer``, also from a GGUF file) can only write the text
view. A pretrained (not instruction-tuned) causal LM has no chat template: with ``chat=False`` the
prompt is plain text the model continues. Generation is batched with left padding and greedy, so it is
deterministic for a given batch composition (padding can still change the last digits of the logits,
hence rarely a word).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import transformers
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU, float32 on CPU (bfloat16 matmuls are slow on most CPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if not hasattr(torch, str(dtype)) or not isinstance(getattr(torch, str(dtype)), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return getattr(torch, str(dtype))


def _load_config(model: str, trust_remote_code: bool, gguf_file: str | None):
    try:
        return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    except ValueError as error:
        if "trust_remote_code" in str(error) and not trust_remote_code:
            raise ValueError(
                f"model {model!r} needs its own code from the hub (trust_remote_code); "
                "pass trust_remote_code=True only if you trust its authors"
            ) from error
        raise
    except OSError as error:
        raise FileNotFoundError(f"cannot load model {model!r}: {error}") from error


def load_processor(model: str, model_type: str, trust_remote_code: bool):
    """The model's processor. Qwen2-VL / Qwen2.5-VL processors also hold a video processor that needs
    torchvision; without it, the same processor class is loaded without its video part (only images are fed)."""
    try:
        return AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except ImportError as error:
        name = PROCESSOR_MAPPING_NAMES.get(model_type)
        if "torchvision" not in str(error).lower() or not name or not hasattr(transformers, name):
            raise

    class ImagesOnly(getattr(transformers, name)):
        @classmethod
        def get_attributes(cls):
            return [attribute for attribute in super().get_attributes() if attribute != "video_processor"]

    return ImagesOnly.from_pretrained(model, trust_remote_code=trust_remote_code)


class HFGenerator:
    """Loads one model and turns prompts (+ optional images) into greedy completions."""

    def __init__(self, model: str | Path, *, device: str | None = "auto", dtype: str | None = "auto",
                 max_new_tokens: int = 64, no_repeat_ngram_size: int = 0, trust_remote_code: bool = False,
                 gguf_file: str | None = None, chat: bool = True):
        self.model_name = str(model)
        self.chat = chat  # False: the prompt is continued as plain text (pretrained models)
        self.device = resolve_device(device)
        self.max_new_tokens = int(max_new_tokens)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)  # > 0 stops small models' word loops
        config = _load_config(self.model_name, trust_remote_code, gguf_file)
        options = dict(trust_remote_code=trust_remote_code, dtype=resolve_dtype(dtype, self.device))
        if gguf_file:
            options["gguf_file"] = gguf_file
        self.sees_images = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        try:
            if self.sees_images:
                self.processor = load_processor(self.model_name, config.model_type, trust_remote_code)
                self.tokenizer = self.processor.tokenizer
                self.model = AutoModelForImageTextToText.from_pretrained(self.model_name, **options)
            elif config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
                self.processor = None
                self.tokenizer = AutoTokenizer.from_pretrained(
                    self.model_name, trust_remote_code=trust_remote_code, gguf_file=gguf_file
                )
                self.model = AutoModelForCausalLM.from_pretrained(self.model_name, **options)
            else:
                raise ValueError(
                    f"model {self.model_name!r} (type {config.model_type!r}) is neither an image-text-to-text "
                    "model nor a causal language model"
                )
        except pickle.UnpicklingError:  # torch's weights-only loader met pickled code: refused, never run
            weights = sorted(Path(self.model_name).glob("*.bin")) if Path(self.model_name).is_dir() else []
            raise ValueError(f"{weights[0] if weights else self.model_name}: its weights hold pickled objects that "
                             "would run code when loaded; refused (dmesr loads safetensors or plain tensors only: "
                             "get the model as safetensors)") from None
        if not chat and self.sees_images:
            raise ValueError(f"model {self.model_name!r} sees images; plain prompts (chat=False) are for causal LMs")
        self.templater = self.processor or self.tokenizer  # VLM chat templates live on the processor
        if chat and getattr(self.templater, "chat_template", None) is None:
            raise ValueError(f"model {self.model_name!r} has no chat template; use an instruction-tuned model "
                             "or chat=False")
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(self.device).eval()

    @torch.no_grad()
    def generate(self, prompts: list[str], images: list[Image.Image] | None = None) -> list[str]:
        """One completion per prompt; ``images`` (one per prompt) only for vision-language models."""
        inputs = self.model_inputs(self.prompt_texts(prompts, images is not None), images)
        output = self.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
            no_repeat_ngram_size=self.no_repeat_ngram_size, pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def prompt_texts(self, prompts: list[str], with_images: bool) -> list[str]:
        """Each prompt as the model reads it: in the chat template, with the image placeholder where it goes."""
        if with_images and not self.sees_images:
            raise ValueError(f"model {self.model_name!r} is text-only and cannot describe images")
        if not self.chat:  # a new line after the prompt: the model writes the answer as the next paragraph
            return [f"{prompt}\n" for prompt in prompts]
        return [
            self.templater.apply_chat_template(
                [{"role": "user", "content": self._content(prompt, with_image=with_images)}],
                add_generation_prompt=True, tokenize=False,
            )
            for prompt in prompts
        ]

    def model_inputs(self, texts: list[str], images: list[Image.Image] | None = None) -> dict:
        """Token ids (left-padded), masks and pixel values on the model's device; the processor expands each
        image placeholder into as many image tokens as the picture has patches."""
        if self.processor is None:  # plain prompts get the tokenizer's own start token (a chat template has it)
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        else:
            nested = None if images is None else [[image] for image in images]
            inputs = self.processor(text=texts, images=nested, return_tensors="pt", padding=True,
                                    add_special_tokens=False)  # the chat template already holds them
        inputs = {name: value.to(self.device) if torch.is_tensor(value) else value for name, value in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _content(self, prompt: str, with_image: bool):
        if self.processor is None:  # text-only chat templates expect a plain string
            return prompt
        parts = [{"type": "text", "text": prompt}]
        return ([{"type": "image"}] + parts) if with_image else parts
