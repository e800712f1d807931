"""Small parts every semantic item encoder shares: the adapter MLP, the padding row, freezing."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Sequential):
    """Linear-GELU-Dropout-Linear from the frozen encoder space to the model width."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """``GELU(linear(x))``: everything before the dropout; fixed when the weights and ``x`` are."""
        return self[1](self[0](x))

    def second_stage(self, hidden: torch.Tensor) -> torch.Tensor:
        """The rest of ``forward``: dropout, then the second linear map."""
        return self[3](self[2](hidden))


def with_padding_row(table: torch.Tensor) -> torch.Tensor:
    """``table`` [N, d] with a zero row 0 on top: the vector of the padding id."""
    return torch.cat([table.new_zeros(1, table.shape[1]), table], dim=0)


def freeze(modules: list[nn.Module]) -> None:
    """Keep ``modules`` at their initial weights (no gradients)."""
    for module in modules:
        module.requires_grad_(False)
