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

from dmesr.config import ModelConfig, TrainConfig
from dmesr.models import build_model
from dmesr.models.losses import sequence_loss
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


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    torch.save({name: step_values(name) for name in SETTINGS}, REFERENCE)
