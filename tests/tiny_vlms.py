"""Tiny random-weight vision-language models of the families people describe items with, built from the real
configuration and processor classes of transformers and saved to disk, so the ``hf`` describer loads them through
the same ``from_pretrained`` path as a hub checkpoint: Qwen2.5-VL, Qwen2-VL and Idefics3 (SmolVLM's architecture). Each has
a word-level tokenizer holding its family's special tokens and a chat template that puts the family's image
placeholder before the prompt, as the real templates do. LLaVA's builder lives in test_enrich_hf.py."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from tests.test_enrich_hf import WORDS

QWEN_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
IDEFICS_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                    "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 3) for c in range(1, 3)]
IDEFICS_IMAGE = "<image>"


def chat_template(image_placeholder: str, end: str) -> str:
    return (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} "
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image_placeholder + " {% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %} " + end + " {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )


def word_tokenizer(specials: list[str], end: str, template: str) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token=end,
                                        additional_special_tokens=specials[2:])
    tokenizer.chat_template = template
    return tokenizer


def text_config(vocab_size: int, end_id: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, pad_token_id=0,
                eos_token_id=end_id, bos_token_id=2)


def build_tiny_qwen_vl(folder, version: str = "2.5"):
    """Qwen2.5-VL (a one-block windowed ViT) or Qwen2-VL (a one-block ViT), 14-pixel patches merged 2x2, and a
    one-layer Qwen2 with M-RoPE."""
    template = chat_template(QWEN_IMAGE, "<|im_end|>")
    tokenizer = word_tokenizer(QWEN_SPECIALS, "<|im_end|>", template)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    text = text_config(len(tokenizer), ids["<|im_end|>"])
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}  # sums to half the head width (16)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    vision = dict(depth=1, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2.5":
        config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            vision, hidden_size=32, intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[0],
            window_size=56), **tokens)
        model_class, processor = Qwen2_5_VLForConditionalGeneration, "Qwen2_5_VLProcessor"
    else:
        config = Qwen2VLConfig(text_config=text, vision_config=dict(vision, embed_dim=32, hidden_size=32, mlp_ratio=2),
                               **tokens)
        model_class, processor = Qwen2VLForConditionalGeneration, "Qwen2VLProcessor"
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    # the image processor, tokenizer and template saved one by one: the processor class would also want a video
    # processor (torchvision); the describer loads the processor from these files as a user's checkpoint does
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56 * 2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(template)
    (folder / "processor_config.json").write_text(f'{{"processor_class": "{processor}"}}')
    return folder


def build_tiny_qwen25_vl(folder):
    return build_tiny_qwen_vl(folder, "2.5")


def build_tiny_qwen2_vl(folder):
    return build_tiny_qwen_vl(folder, "2")


def build_tiny_idefics3(folder):
    """Idefics3 / SmolVLM: a one-layer SigLIP-style vision tower (32-pixel images, 8-pixel patches), pixel
    shuffle by 2 (4 image tokens per picture) and a one-layer Llama; images are not split into tiles."""
    template = chat_template(IDEFICS_IMAGE, "<end_of_utterance>")
    tokenizer = word_tokenizer(IDEFICS_SPECIALS, "<end_of_utterance>", template)
    config = Idefics3Config(
        text_config=LlamaConfig(**text_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<end_of_utterance>"))),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        image_token_id=tokenizer.convert_tokens_to_ids(IDEFICS_IMAGE), scale_factor=2,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(folder)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=False)
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                      chat_template=template).save_pretrained(folder)
    return folder
