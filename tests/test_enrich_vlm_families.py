"""The ``hf`` describer on the vision-language families (LLaVA, Qwen2.5-VL, Qwen2-VL, Idefics3 / SmolVLM), each a tiny
random-weight model built from the real configuration classes: the image placeholder sits once in each prompt where
the template puts it, batched left-padded generation equals one prompt at a time, the text view needs no image,
and a prompt without the placeholder is refused by the model (so the first check guards something real)."""

from __future__ import annotations

import pytest
from PIL import Image

from dmesr.enrich.hf import HFGenerator
from tests.test_enrich_hf import build_tiny_vlm
from tests.tiny_vlms import IDEFICS_IMAGE, QWEN_IMAGE, build_tiny_idefics3, build_tiny_qwen2_vl, build_tiny_qwen25_vl

# family -> (builder, placeholder the chat template writes, token the processor expands it into)
FAMILIES = {
    "llava": (build_tiny_vlm, "<image>", "<image>"),
    "qwen2.5-vl": (build_tiny_qwen25_vl, QWEN_IMAGE, "<|image_pad|>"),
    "qwen2-vl": (build_tiny_qwen2_vl, QWEN_IMAGE, "<|image_pad|>"),
    "idefics3": (build_tiny_idefics3, IDEFICS_IMAGE, "<image>"),
}
PROMPTS = ["two sentences", "describe what this item is and what kind of person would enjoy it", "the film"]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    build, placeholder, token = FAMILIES[request.param]
    folder = build(tmp_path_factory.mktemp(request.param))
    return HFGenerator(folder, max_new_tokens=6, device="cpu"), placeholder, token


def pictures() -> list[Image.Image]:
    """Different sizes and aspect ratios, so families whose token count follows the size pad the batch."""
    return [Image.new("RGB", (50, 30), "red"), Image.new("RGB", (120, 60), "blue"), Image.new("RGB", (40, 90), "green")]


def test_image_placeholder_once_before_the_prompt(family):
    generator, placeholder, token = family
    for prompt, text in zip(PROMPTS, generator.prompt_texts(PROMPTS, with_images=True)):
        assert text.count(placeholder) == 1
        assert text.index(placeholder) < text.index(prompt)  # in the user turn, before the words
        assert text.index("user") < text.index(placeholder)
    inputs = generator.model_inputs(generator.prompt_texts(PROMPTS, True), pictures())
    token_id = generator.tokenizer.convert_tokens_to_ids(token)
    per_prompt = (inputs["input_ids"] == token_id).sum(dim=1)
    assert (per_prompt > 0).all()  # every prompt carries its picture's tokens, in one run each:
    for row in inputs["input_ids"]:
        positions = (row == token_id).nonzero().flatten()
        assert (positions.diff() == 1).all()
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding: every row ends where generation starts


def test_batched_generation_equals_one_at_a_time(family):
    generator, _, _ = family
    images = pictures()
    batched = generator.generate(PROMPTS, images)
    assert batched == [generator.generate([prompt], [image])[0] for prompt, image in zip(PROMPTS, images)]
    assert generator.generate(PROMPTS) == [generator.generate([prompt])[0] for prompt in PROMPTS]


def test_text_view_runs_without_an_image(family):
    generator, placeholder, token = family
    texts = generator.prompt_texts(PROMPTS, with_images=False)
    assert not any(placeholder in text for text in texts)
    inputs = generator.model_inputs(texts)
    assert "pixel_values" not in inputs
    assert not (inputs["input_ids"] == generator.tokenizer.convert_tokens_to_ids(token)).any()
    assert len(generator.generate(PROMPTS)) == len(PROMPTS)


def test_prompt_without_the_image_token_is_refused(family, monkeypatch):
    generator, placeholder, _ = family
    monkeypatch.setattr(generator, "_content", lambda prompt, with_image: [{"type": "text", "text": prompt}])
    assert not any(placeholder in text for text in generator.prompt_texts(PROMPTS, with_images=True))
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        generator.generate(PROMPTS, pictures())
