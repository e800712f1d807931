"""A markdown table of finished runs: what each changed from the defaults, its best validation NDCG@10,
the test NDCG@10 of that checkpoint, seconds per epoch, and the training time until validation NDCG@10
first reached a threshold (a peer's best score, say), read from each run's per-epoch log.

    .venv/bin/python benchmarks/runs_to_threshold.py runs/sasrec-defaults --threshold 0.0688

Every folder given is searched for run directories (``epochs.jsonl``); a run stopped before its end (no
``final.json``) shows its best logged validation epoch and no test score. Time to the threshold is the sum of
the logged ``epoch_seconds`` (training and validation) up to the first epoch at or above it.

``--recbole JSON`` (written by ``benchmarks/recbole_sasrec.py``) adds paired t-tests over test users of the runs'
test NDCG@10 against RecBole's: each run against RecBole's run with the same seed, and each user's mean over
the seeds both sides ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from dmesr.config import RunConfig, saved_run_config
from dmesr.evaluation.significance import paired_test
from dmesr.training.trainer import read_epoch_log

SHOWN_ANYWAY = ("train.seed",)  # not a change from the defaults, but what tells repeated runs apart
NOT_SHOWN = ("output_dir", "data.dataset", "model.name", "train.num_threads", "eval.exclude_history")


def changes_from_defaults(config: RunConfig) -> str:
    def flat(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    ours, defaults = flat(config.to_dict()), flat(RunConfig().to_dict())
    changed = [key for key in ours if key not in NOT_SHOWN and (ours[key] != defaults.get(key) or key in SHOWN_ANYWAY)]
    return " ".join(f"{key}={ours[key]}" for key in changed)


def run_row(run_dir: Path, threshold: float) -> dict:
    epochs = read_epoch_log(run_dir / "epochs.jsonl")
    best = max(epochs, key=lambda row: row["valid_NDCG@10"])
    final = json.loads((run_dir / "final.json").read_text()) if (run_dir / "final.json").exists() else \
        {"valid": best, "best_epoch": best["epoch"], "epochs": len(epochs), "test": {"NDCG@10": None}}
    elapsed, reached = 0.0, None
    for row in epochs:
        elapsed += row["epoch_seconds"]
        if row["valid_NDCG@10"] >= threshold:
            reached = {"epoch": row["epoch"], "seconds": round(elapsed, 1)}
            break
    config = saved_run_config(run_dir)
    return {"run": str(run_dir), "seed": config.train.seed, "settings": changes_from_defaults(config),
            "best_valid": final["valid"]["valid_NDCG@10"], "best_epoch": final["best_epoch"], "epochs": final["epochs"],
            "test": final["test"]["NDCG@10"], "seconds_per_epoch": statistics.median(r["epoch_seconds"] for r in epochs),
            "reached": reached, "exclude_history": final.get("exclude_history")}


def against_recbole(rows: list[dict], recbole_json: Path) -> None:
    """Paired t-tests over test users of each tested run's NDCG@10 against RecBole's run with its seed."""
    try:
        recbole = {run["seed"]: np.asarray(run["test_ndcg10_per_user"])
                   for run in json.loads(recbole_json.read_text())["runs"] if "test_ndcg10_per_user" in run}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{recbole_json}: not a results file of benchmarks/recbole_sasrec.py ({error!r})") from None
    tested = [row for row in rows if row["test"] is not None and row["seed"] in recbole]
    seeds = [row["seed"] for row in tested]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"two runs with the same seed ({sorted(seeds)}): pair one group of runs at a time")
    ours = {row["seed"]: np.load(Path(row["run"]) / "test_per_user.npz")["NDCG@10"] for row in tested}
    if not ours:
        raise SystemExit(f"{recbole_json}: no RecBole run with per-user test scores shares a seed with these runs")
    for seed, values in ours.items():  # checked before anything is printed
        if values.shape != recbole[seed].shape:
            raise SystemExit(f"{recbole_json}: {len(recbole[seed])} test users, the runs have {len(values)}: "
                             "not the same split")
    users = len(next(iter(ours.values())))
    print(f"\n| seeds | test NDCG@10, these runs | RecBole's | difference | p (paired t-test over {users} test users) |")
    print("|---|---|---|---|---|")
    pairs = [([seed], ours[seed], recbole[seed]) for seed in sorted(ours)]
    if len(ours) > 1:  # each user's mean over the seeds: the seeds' noise averaged out on both sides
        pairs.append((sorted(ours), np.mean([ours[s] for s in sorted(ours)], axis=0),
                      np.mean([recbole[s] for s in sorted(ours)], axis=0)))
    for seeds, a, b in pairs:
        test = paired_test(a, b)
        print(f"| {' '.join(map(str, seeds))} | {a.mean():.4f} | {b.mean():.4f} | {test['mean_diff']:+.4f} | "
              f"{test['p_value']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--threshold", type=float, required=True, help="validation NDCG@10 to time")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--recbole", type=Path, help="a benchmarks/recbole_sasrec.py JSON: paired tests against it")
    args = parser.parse_args()
    runs = sorted({log.parent for folder in args.folders for log in Path(folder).rglob("epochs.jsonl")},
                  key=lambda path: (path / "config.yaml").stat().st_mtime)
    rows = [run_row(run, args.threshold) for run in runs]
    print(f"| settings (besides the defaults) | best valid NDCG@10 (epoch / epochs) | test NDCG@10 | s / epoch | "
          f"time to valid {args.threshold} |")
    print("|---|---|---|---|---|")
    for row in rows:
        reached = f"{row['reached']['seconds']:.0f} s (epoch {row['reached']['epoch']})" if row["reached"] else "not reached"
        test = "stopped early, not tested" if row["test"] is None else f"{row['test']:.4f}"
        print(f"| {row['settings'] or '(defaults)'} | {row['best_valid']:.4f} ({row['best_epoch']} / {row['epochs']}) | "
              f"{test} | {row['seconds_per_epoch']:.2f} | {reached} |")
    tested = [row for row in rows if row["test"] is not None]
    if len(tested) > 1:
        spread = {name: (statistics.mean(row[name] for row in tested), statistics.stdev(row[name] for row in tested))
                  for name in ("best_valid", "test")}
        print(f"\nmean ± std over the {len(tested)} tested runs: best valid NDCG@10 {spread['best_valid'][0]:.4f} ± "
              f"{spread['best_valid'][1]:.4f}, test NDCG@10 {spread['test'][0]:.4f} ± {spread['test'][1]:.4f}")
    if args.recbole:
        against_recbole(rows, args.recbole)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
