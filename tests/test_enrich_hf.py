"""The ``hf`` describer end to end on tiny random-weight models saved to disk and loaded back
through the same ``from_pretrained`` path users take (a LLaVA vision-language model and a Llama
causal LM, with an offline word-level tokenizer); the cascade on its real bundled weights (slow)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from dmesr.enrich.cache import read_descriptions
from dmesr.enrich.hf import HFGenerator
from dmesr.enrich.pipeline import describe_items
from dmesr.enrich.registry import make_describer

SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>"]
WORDS = ("user assistant the a of and in to is it picture item title year genres toy story comedy drama "
         "sentences two describe what this kind person would enjoy shows its appearance style colours "
         "objects mood belongs . , : red blue film book").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    " <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
PATCH, IMAGE_SIZE = 8, 32


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>", additional_special_tokens=SPECIALS[2:])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=0, eos_token_id=3, bos_token_id=2)


def build_tiny_vlm(folder):
    """A random-weight LLaVA (CLIP vision tower + Llama) with its processor, saved to ``folder``."""
    tokenizer = tiny_tokenizer()
    config = LlavaConfig(
        text_config=tiny_llama_config(len(tokenizer)),
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def build_tiny_causal_lm(folder):
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


def item_table(tmp_path, num_items: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(num_items):
        path = tmp_path / f"poster{index}.png"
        Image.fromarray(rng.integers(0, 255, size=(40 + 8 * index, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    paths[-1] = None  # the last item has no picture
    return pd.DataFrame({
        "item": [f"m{index}" for index in range(num_items)],
        "text": [f"Title: toy story {index} . Genres: comedy drama ." for index in range(num_items)],
        "image_path": paths,
    })


def test_vlm_describes_both_views_batched_and_resumes(tiny_vlm, tmp_path):
    items = item_table(tmp_path)
    options = dict(model=str(tiny_vlm), max_new_tokens=6, device="cpu", progress=False)
    summary = describe_items(items, "toy", "hf", views=["image", "text"], cache_dir=tmp_path / "cache",
                             batch_size=3, **options)
    assert summary["skipped"] == {"no image": 1}
    assert summary["done"] + sum(summary["failed"].values()) == 4 + 5
    assert summary["done"] >= 7  # random weights may emit only special tokens for an item, rarely
    table = read_descriptions(tmp_path / "cache", "toy")
    assert not table.duplicated(["item", "view"]).any()
    assert set(table.loc[table["view"] == "image", "item"]) <= {"m0", "m1", "m2", "m3"}
    again = describe_items(items, "toy", "hf", views=["image", "text"], cache_dir=tmp_path / "cache", **options)
    assert again["done"] == 0 and again["cached"] == summary["done"]


def test_generation_is_deterministic_and_left_padded(tiny_vlm):
    generator = HFGenerator(tiny_vlm, max_new_tokens=5, device="cpu")
    assert generator.sees_images and generator.tokenizer.padding_side == "left"
    prompts = ["two sentences", "describe what this item is and what kind of person would enjoy it"]
    first = generator.generate(prompts)
    assert first == generator.generate(prompts)
    images = [Image.new("RGB", (50, 30), "red"), Image.new("RGB", (30, 50), "blue")]
    assert len(generator.generate(prompts, images)) == 2


def test_causal_lm_writes_text_view_and_refuses_images(tiny_causal_lm, tmp_path):
    items = item_table(tmp_path, num_items=3)
    summary = describe_items(items, "toy", "hf", views=["text", "image"], cache_dir=tmp_path / "cache",
                             model=str(tiny_causal_lm), max_new_tokens=5, device="cpu", progress=False)
    image_failures = {reason: n for reason, n in summary["failed"].items() if "text-only" in reason}
    assert sum(image_failures.values()) == 2  # two items have pictures; the model cannot see them
    table = read_descriptions(tmp_path / "cache", "toy")
    assert set(table["view"]) <= {"text"}


def test_no_repeat_ngram_option_breaks_word_loops(tiny_causal_lm):
    prompts = ["in two sentences describe the film", "what kind of person would enjoy this book"]
    looping = HFGenerator(tiny_causal_lm, max_new_tokens=12, device="cpu").generate(prompts)
    guarded = HFGenerator(tiny_causal_lm, max_new_tokens=12, no_repeat_ngram_size=2, device="cpu").generate(prompts)

    def repeated_bigrams(text):
        words = text.split()
        pairs = list(zip(words, words[1:]))
        return len(pairs) - len(set(pairs))

    assert sum(map(repeated_bigrams, looping)) > 0  # random weights loop, like a tiny real LM does
    assert sum(map(repeated_bigrams, guarded)) == 0
    assert make_describer("hf", model="m", no_repeat_ngram_size=2).describer_id == "hf:m:mnt64:nr2"


def test_remote_code_model_needs_explicit_flag(tmp_path):
    config = {"model_type": "my-novel-vlm", "auto_map": {"AutoConfig": "configuration_novel.NovelConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        HFGenerator(tmp_path, device="cpu")


@pytest.mark.slow
def test_cascade_on_real_bundled_weights(tmp_path):
    import sklearn.datasets

    photo = sklearn.datasets.__path__[0] + "/images/china.jpg"
    items = pd.DataFrame({
        "item": ["1", "2"],
        "text": ["Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy.",
                 "Title: The Forbidden City. Genres: Documentary, History."],
        "image_path": [None, photo],
    })
    summary = describe_items(items, "real", "cascade", views=["image", "text"], cache_dir=tmp_path,
                             max_new_tokens=16, progress=False)
    assert summary["done"] == 3 and summary["skipped"] == {"no image": 1} and not summary["failed"]
    table = read_descriptions(tmp_path, "real").set_index(["item", "view"])["description"]
    assert all(len(text.split()) >= 5 for text in table)
