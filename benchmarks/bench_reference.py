"""What the fast paths buy: each part of a DMESR training step, fast against its plain reference form.

``dmesr/models/reference.py`` holds the method in plain PyTorch; the modules that train compute the same
values (``tests/test_reference.py``). This times forward and backward of each part both ways on a dataset's
real features (``dmesr embed`` first), the two forms interleaved call by call so both see the same machine
load, and prints the median seconds of each and their ratio:

* ``fusion``: every item's fused views (token PCA, the default: attention folded around the frozen states);
* ``fusion-full-width``: the same with ``items.token_pca_dim=0`` (the MLP token adapter, real tokens packed);
* ``alignment``: the symmetric InfoNCE over the distinct items of a training batch;
* ``next-item-loss``: the full-softmax cross-entropy of a batch's positions over the catalogue;
* ``step``: the whole training loss of one batch through the backbone, ``L_rec + lambda * L_align``.

    .venv/bin/python benchmarks/bench_reference.py --dataset ml-100k --threads 1 --repeats 20 \
        --out reports/bench/reference-ml-100k.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from dmesr.config import TrainConfig, load_config
from dmesr.data import prepare_split
from dmesr.data.batches import TrainWindows
from dmesr.models import reference
from dmesr.models.alignment import batch_rows
from dmesr.models.losses import full_cross_entropy, sequence_loss
from dmesr.training.run import build_run_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each form per part")
    parser.add_argument("--out", help="also write the result to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"data.dataset={args.dataset}", f"model.name={args.model}", "items.kind=dmesr"]
    config = load_config(overrides=base)
    split = prepare_split(config.data)
    windows = TrainWindows(split, config.data.max_len).windows
    batch = windows[torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))[:config.train.batch_size]]
    parts = {}
    for name, overrides in (("fusion", []), ("fusion-full-width", ["items.token_pca_dim=0"])):
        fast_model, reference_model = paired_models(load_config(overrides=base + overrides), split)
        parts[name] = (lambda items=fast_model.items: backward(items.fused_views()),
                       lambda items=reference_model.items: backward(items.fused_views()[0]))
    fast_model, reference_model = paired_models(config, split)
    items = fast_model.items
    rows, present = batch_rows(batch, items.aligned_present, gather=True)
    views = [items.adapt(source, rows).detach().requires_grad_() for source in items.alignment_pair]
    parts["alignment"] = (lambda: backward(items.alignment(*views, present)),
                          lambda: backward(reference_model.items.alignment(*(view[present] for view in views))))
    inputs, targets = fast_model.training_inputs(batch)
    with torch.no_grad():
        hidden, table = fast_model.hidden_and_table(inputs)
    hidden, table = hidden[targets > 0].requires_grad_(), table.requires_grad_()
    parts["next-item-loss"] = (lambda: backward(full_cross_entropy(hidden, table, targets[targets > 0])),
                               lambda: backward(reference.next_item_loss(hidden, table, targets[targets > 0])))
    train_config = TrainConfig(loss="ce")
    parts["step"] = (lambda: backward(sequence_loss(fast_model, batch, train_config)),
                     lambda: backward(reference.training_loss(reference_model, batch)))
    timed = {name: interleaved_medians(*forms, args.repeats) for name, forms in parts.items()}
    result = {"dataset": args.dataset, "model": args.model, "threads": args.threads, "repeats": args.repeats,
              "batch_size": config.train.batch_size, "max_len": config.data.max_len, "items": split.num_items,
              "alignment_rows": int(present.sum()), "next_item_positions": len(hidden),
              "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
              "seconds": {name: {"fast": fast, "reference": plain, "speed-up": plain / fast}
                          for name, (fast, plain) in timed.items()},
              "command": shlex.join(["python", *sys.argv])}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def paired_models(config, split):
    """The run's model (dropout off, so both forms compute the same) and a copy whose item side is the
    reference form with the same weights."""
    torch.manual_seed(0)
    model = build_run_model(config, split)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    items = model.items
    plain = copy.deepcopy(model)
    plain.items = reference.ReferenceDMESRItems(items.num_items, items.dim, config.items,
                                                reference.frozen_inputs(items.semantics), items.views)
    plain.items.load_state_dict(items.state_dict())
    return model.train(), plain.train()


def backward(output: torch.Tensor) -> None:
    output.sum().backward()


def interleaved_medians(fast, plain, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of ``fast()`` and ``plain()``, called alternately ``repeats`` times after ``warmup``."""
    seconds = {fast: [], plain: []}
    for call in range(repeats + warmup):
        for form in (fast, plain):
            started = time.perf_counter()
            form()
            if call >= warmup:
                seconds[form].append(time.perf_counter() - started)
    return statistics.median(seconds[fast]), statistics.median(seconds[plain])


if __name__ == "__main__":
    main()
