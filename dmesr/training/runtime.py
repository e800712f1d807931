"""Process-level set-up shared by training, evaluation and benchmarks: device, seeds, threads,
and atomic, pickle-free checkpoint files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from dmesr.paths import save_failed


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also forces deterministic kernels (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def atomic_save(obj: dict, path: Path) -> None:
    """Write with ``torch.save`` to a temp file then rename: a crash never leaves a torn checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # a full disk: OSError, or torch's "unexpected pos" RuntimeError
        tmp.unlink(missing_ok=True)
        raise save_failed(path, error) from None


def load_checkpoint(path: Path) -> dict:
    """Load tensors and plain containers only: no pickled code is ever executed.

    A file that cannot be read so (truncated, overwritten, not a dmesr checkpoint) is a one-line
    error naming it and what to do, never advice to unpickle it unsafely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise RuntimeError(f"checkpoint {path} is unreadable ({type(error).__name__}: {reason}); it is damaged or "
                           "not a dmesr checkpoint: delete it (its run then trains from the start) or restore a "
                           "copy") from None
