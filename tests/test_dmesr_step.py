"""The DMESR training step against a saved reference, and ``train.compile``.

``tests/data/dmesr-step-reference.pt`` holds the loss and every parameter's gradient of one
training step of a tiny SASRec + DMESR model in several settings, as computed by the step before
its frozen parts were computed once and its host-device waits removed; today's step must give the
same values. It was written by ``python -m tests.test_dmesr_step`` (run from the repo root).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dmesr.config import ModelConfig, TrainConfig, config_hash, load_config
from dmesr.models import IDEmbedding, build_model
from dmesr.models.losses import sequence_loss, total_loss
from dmesr.training.trainer import LossModule, Trainer
from tests.test_item_encoders import DIM, build, make_features, next_item_windows

REFERENCE = Path(__file__).parent / "data" / "dmesr-step-reference.pt"
SETTINGS = {
    "default": {},
    "packed-tokens": {"token_pca_dim": 0},
    "gate-learnable-temperature": {"integration": "gate", "learnable_temperature": True, "temperature": 0.1},
    "no-fusion": {"fusion": "none"},
    "single-view": {"features": ("text",)},
    "small-temperature": {"temperature": 0.02},
}


def step_values(name: str) -> dict[str, torch.Tensor]:
    """Loss and gradients of one step (eval mode: no dropout noise, so the values are exact)."""
    overrides = dict(SETTINGS[name])
    views = overrides.pop("features", ("image", "text"))
    items = build(features=make_features(views=views), align_weight=0.5, **overrides)
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="sasrec", hidden_size=DIM, num_heads=2), items, max_len=8).eval()
    windows = next_item_windows(num_users=12, length=9)
    windows[0, :4] = 0  # some padding
    loss = sequence_loss(model, windows, TrainConfig(loss="ce"))
    loss.backward()
    values = {"loss": loss.detach()}
    values.update({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    return values


@pytest.mark.parametrize("name", SETTINGS)
def test_step_matches_the_saved_reference(name):
    expected = torch.load(REFERENCE)[name]
    values = step_values(name)
    assert values.keys() == expected.keys()
    for key, value in values.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_compiled_step_gives_the_eager_values():
    """The compiled training loss equals the eager one, with the same gradients. Graphs are captured
    as ``train.compile`` captures them; the ``aot_eager`` backend runs them without generating C++
    (minutes on a small machine), so the test stays fast and needs no compiler."""
    windows = next_item_windows(num_users=12, length=9)
    windows[0, :4] = 0  # positions without a target: weighted out in the compiled graph, dropped eagerly
    other_windows = windows.clone()
    other_windows[1, :6] = 0  # another count of targets, the same shape
    values = {}
    for compiled in (False, True):
        items = build(features=make_features(), align_weight=0.5)
        torch.manual_seed(1)
        model = build_model(ModelConfig(name="sasrec", hidden_size=DIM, num_heads=2), items, max_len=8).eval()
        loss_module = LossModule(model, TrainConfig(loss="ce"))
        if compiled:
            assert torch._dynamo.explain(loss_module)(windows).graph_break_count == 0
            loss_module = torch.compile(loss_module, backend="aot_eager")
        loss = total_loss(model, loss_module(windows))
        loss.backward()
        values[compiled] = [loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None]
        if compiled:  # fixed shapes: a batch with other targets reuses the graph (CUDA graphs need that)
            with torch._dynamo.config.patch(error_on_recompile=True):
                loss_module(other_windows)
    for got, expected in zip(values[True], values[False], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_train_compile_compiles_the_training_loss(tiny_split, tmp_path, caplog):
    config = load_config(overrides=["train.compile=true", "train.device=cpu", "model.hidden_size=16"])
    model = build_model(config.model, IDEmbedding(tiny_split.num_items, 16), config.data.max_len)
    trainer = Trainer(model, tiny_split, config, tmp_path, torch.device("cpu"), show_progress=False)
    assert "train.compile on a CPU makes a training step slower" in caplog.text  # said once, at the start
    assert isinstance(trainer.loss_module, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.loss_module._orig_mod.model is model
    assert config_hash(config) == config_hash(load_config(overrides=["train.device=cpu", "model.hidden_size=16"]))


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    torch.save({name: step_values(name) for name in SETTINGS}, REFERENCE)
