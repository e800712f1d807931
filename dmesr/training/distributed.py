"""Multi-process training under ``torchrun``: PyTorch's DistributedDataParallel does the work.

Every rank walks the same seeded permutation of training windows; each global batch is split
round-robin across ranks (``rows[rank::world_size]``), so one step of ``W`` processes sees the
same examples as one step of a single process with the same ``batch_size``, and DDP averages
the gradients. Evaluation is cheap and deterministic: every rank runs it, so early-stopping
decisions agree without communication; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.rank :: self.world_size]


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistContext(rank=dist.get_rank(), world_size=world_size, local_rank=local_rank)


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
