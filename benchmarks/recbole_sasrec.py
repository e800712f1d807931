"""RecBole 1.2.1's SASRec with its default settings on a split exported by dmesr: the reference of
``reports/sasrec-recbole.md``.

RecBole is not a dependency of dmesr; it runs in an environment of its own (PyPI's ``torch`` is the CUDA
build, several GB; a CPU wheel gives the same numbers on a CPU):

    python -m venv .venv-recbole && .venv-recbole/bin/pip install recbole==1.2.1 'numpy<2' 'pandas<3' torch
    .venv/bin/dmesr export ml-100k exports/ml-100k
    .venv-recbole/bin/python benchmarks/recbole_sasrec.py exports/ml-100k --seeds 1 2 3 --epochs 10 \
        --out reports/bench/recbole-sasrec-ml-100k.json

The export's three stages become RecBole "benchmark files" with each history written out, so RecBole sees
exactly dmesr's users, targets and order: every prefix of a user's training part predicts its next item
(RecBole's own augmentation), validation's history is the training part and test's adds the validation
item, each cut to its last ``MAX_ITEM_LIST_LENGTH`` (50) items. Ranking is over the whole catalogue with
nothing excluded (RecBole masks no history for sequential models); validation NDCG@10 picks the checkpoint
that is tested. One CPU thread. Prints, per seed, the best validation NDCG@10 and its epoch, the test
NDCG@10 of that checkpoint, seconds per epoch (wall and CPU: a loaded machine inflates only the first) and the
seconds to ``--threshold``, then the mean over seeds. Each seed is saved to ``--out`` as it ends, with each test
user's NDCG@10 for paired tests (``benchmarks/runs_to_threshold.py --recbole``), so a killed run resumes at the
next seed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

DATASET = "dmesr_split"
MAX_LEN = 50


def _histories(export: Path) -> dict[int, list[str]]:
    """Each user's items in time order, train + validation + test, from the export's CSV files."""
    rows = defaultdict(list)
    for stage in ("train", "valid", "test"):
        with open(export / f"{stage}.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows[int(row["user"])].append((int(row["position"]), row["item"]))
    return {user: [item for _, item in sorted(items)] for user, items in rows.items()}


def write_benchmark_files(export: Path, folder: Path) -> dict[str, int]:
    """Write ``DATASET.{train,valid,test}.inter`` (user, history, target) into ``folder``; returns row counts."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    counts = {}
    files = {stage: open(folder / f"{DATASET}.{stage}.inter", "w") for stage in ("train", "valid", "test")}
    try:
        for handle in files.values():
            handle.write(header)
        for user, items in sorted(_histories(export).items()):
            if len(items) < 3:
                raise SystemExit(f"{export}: user {user} has {len(items)} interactions; leave-one-out needs 3")
            stages = [("train", end) for end in range(1, len(items) - 2)] + [("valid", len(items) - 2),
                                                                             ("test", len(items) - 1)]
            for stage, end in stages:  # items[end] is the target, the items before it its history
                history = " ".join(items[max(0, end - MAX_LEN):end])
                files[stage].write(f"{user}\t{history}\t{items[end]}\n")
                counts[stage] = counts.get(stage, 0) + 1
    finally:
        for handle in files.values():
            handle.close()
    return counts


def run_seed(data_dir: Path, seed: int, epochs: int, workdir: Path) -> dict:
    """Train and test RecBole's default SASRec once; returns its validation curve and test NDCG@10."""
    # imported here: RecBole lives in an environment of its own, the benchmark files are written without it
    import pandas
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    if int(pandas.__version__.split(".")[0]) >= 3:  # RecBole 1.2.1's dataset code predates pandas 3
        raise SystemExit(f"RecBole 1.2.1 cannot read its files with pandas {pandas.__version__}; "
                         "install 'pandas<3' in RecBole's environment")
    config = Config(model="SASRec", dataset=DATASET, config_dict={
        "data_path": str(data_dir), "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": MAX_LEN, "train_neg_sample_args": None,
        "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10",
        "epochs": epochs, "seed": seed, "reproducibility": True, "use_gpu": False,
        "checkpoint_dir": str(workdir / f"seed{seed}"), "show_progress": False})
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(1)
    dataset = create_dataset(config)
    print(f"seed {seed}: RecBole sees {dataset.user_num - 1} users and {dataset.item_num - 1} items", flush=True)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    curve, start, cpu_start = [], time.perf_counter(), time.process_time()

    def record(epoch: int, valid_score: float) -> None:
        curve.append({"epoch": epoch + 1, "valid_ndcg10": float(valid_score),
                      "seconds": round(time.perf_counter() - start, 1),
                      "cpu_seconds": round(time.process_time() - cpu_start, 1)})
        print(f"seed {seed} epoch {epoch + 1}: valid NDCG@10 {valid_score:.4f} ({curve[-1]['seconds']} s)",
              flush=True)

    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(workdir):  # RecBole's trainer writes TensorBoard logs into the working directory
        trainer = Trainer(config, model)
        trainer.fit(train_data, valid_data, verbose=False, saved=True, callback_fn=record)
    # RecBole 1.2.1 reloads its checkpoint with torch.load's pre-2.6 default (weights_only=False) in mind
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    per_user = ndcg10_per_test_user(trainer, test_data)
    per_user_mean = sum(per_user) / len(per_user)
    if abs(per_user_mean - float(test["ndcg@10"])) > 1e-4:  # RecBole rounds to 4 places
        raise SystemExit(f"per-user test NDCG@10 averages {per_user_mean:.6f}, RecBole reports {test['ndcg@10']}")
    best = max(curve, key=lambda point: point["valid_ndcg10"])
    return {"seed": seed, "best_valid_ndcg10": best["valid_ndcg10"], "best_epoch": best["epoch"],
            "epochs": len(curve), "test_ndcg10": float(test["ndcg@10"]), "test_ndcg10_per_user": per_user,
            "seconds_per_epoch": round(curve[-1]["seconds"] / len(curve), 1),
            "cpu_seconds_per_epoch": round(curve[-1]["cpu_seconds"] / len(curve), 1), "curve": curve}


def ndcg10_per_test_user(trainer, test_data) -> list[float]:
    """Each user's test NDCG@10 from RecBole's own full-sort scores, in the export's user order (for paired
    tests against dmesr's ``test_per_user.npz``); their mean is RecBole's test NDCG@10. Computed here rather than
    by dmesr's metrics, which are not installed in RecBole's environment."""
    import math

    import torch

    by_user = {}
    trainer.model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction, scores, rows, targets = trainer._full_sort_batch_eval(batch)
            ranks = (scores > scores[rows, targets][:, None]).sum(dim=1)  # items scored above the target
            users = test_data.dataset.id2token("user_id", interaction["user_id"].cpu())
            for user, rank in zip(users, ranks.tolist()):
                by_user[int(user)] = round(1 / math.log2(rank + 2), 6) if rank < 10 else 0.0
    if sorted(by_user) != list(range(len(by_user))):
        raise SystemExit(f"RecBole's test covers {len(by_user)} users, not the export's 0..n-1")
    return [by_user[user] for user in range(len(by_user))]


def seconds_to(curve: list[dict], threshold: float) -> float | None:
    """Seconds until validation NDCG@10 first reaches ``threshold`` (None if it never does)."""
    return next((point["seconds"] for point in curve if point["valid_ndcg10"] >= threshold), None)


def _table(runs: list[dict], threshold: float) -> None:
    print(f"\n| seed | best valid NDCG@10 (epoch / epochs) | test NDCG@10 | s / epoch (CPU s / epoch) | "
          f"time to valid {threshold} |")
    print("|---|---|---|---|---|")
    for run in runs:
        reached = seconds_to(run["curve"], threshold)
        print(f"| {run['seed']} | {run['best_valid_ndcg10']:.4f} ({run['best_epoch']} / {run['epochs']}) | "
              f"{run['test_ndcg10']:.4f} | {run['seconds_per_epoch']} ({run['cpu_seconds_per_epoch']}) | "
              f"{'not reached' if reached is None else f'{reached:.0f} s'} |")
    for key in ("best_valid_ndcg10", "test_ndcg10"):
        values = [run[key] for run in runs]
        spread = f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"mean {key} over {len(values)} seeds: {statistics.mean(values):.4f}{spread}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a folder written by `dmesr export`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10, help="RecBole's own default is 300 (with patience 10)")
    parser.add_argument("--threshold", type=float, default=0.0629, help="report the seconds to this valid NDCG@10")
    parser.add_argument("--out", type=Path, required=True,
                        help="JSON results, written after every seed; seeds already in it are not run again")
    args = parser.parse_args(argv)
    sums = args.export / "SHA256SUMS"
    if not sums.is_file():
        parser.error(f"{args.export} is not a dmesr export (no SHA256SUMS); write one with `dmesr export`")
    for line in sums.read_text().splitlines():  # the checksums identify the data only if the files still match
        digest, name = line.split("  ", 1)
        if not (args.export / name).is_file() or hashlib.sha256((args.export / name).read_bytes()).hexdigest() != digest:
            parser.error(f"{args.export / name} is missing or changed since the export (SHA256SUMS); export again")
    identity = {"export_sha256sums": hashlib.sha256(sums.read_bytes()).hexdigest(), "epochs": args.epochs}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {**identity, "runs": []}
    if {key: results.get(key) for key in identity} != identity:
        parser.error(f"{args.out} holds runs of another export or epoch budget "
                     f"({ {key: results.get(key) for key in identity} }); choose another --out")
    done = {run["seed"] for run in results["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        counts = write_benchmark_files(args.export, Path(tmp) / DATASET)
        print(f"benchmark files: {counts}; seeds already in {args.out}: {sorted(done) or 'none'}", flush=True)
        for seed in (seed for seed in args.seeds if seed not in done):
            results["runs"].append(run_seed(Path(tmp), seed, args.epochs, Path(tmp) / "saved"))
            results["command"] = " ".join(sys.argv)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    _table([run for run in results["runs"] if run["seed"] in args.seeds], args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
