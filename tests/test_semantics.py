"""The semantics report's comparisons, verdict and figure, on synthetic runs with known answers."""

import numpy as np
import pandas as pd

from dmesr.analysis.semantics_report import comparison_rows, gain_points, verdict
from dmesr.experiments.run_store import PER_USER_PREFIX
from dmesr.viz import gain_against_quality

USERS = 400


def _runs(levels: dict[str, float]) -> pd.DataFrame:
    """Three seeds per method on two cells; each user's NDCG@10 is the method's level plus noise shared
    by every method (the user's difficulty), so the per-user test sees small differences."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(-0.05, 0.05, USERS)
    controls = {"backbone": ("", "none"), "dmesr": ("cascade", "none"), "dmesr-shuffled": ("cascade", "shuffled"),
                "dmesr-random": ("cascade", "random"), "dmesr-text-only": ("cascade", "text-only")}
    rows = []
    for model in ("sasrec", "gru4rec"):
        for method, level in levels.items():
            for seed in (1, 2, 3):
                per_user = np.clip(level + difficulty + rng.normal(0, 0.002, USERS), 0, 1)
                describer, control = controls[method]
                rows.append({"dataset": "toy", "model": model, "method": method, "seed": seed,
                             "run": f"{model}/{method}/{seed}", "test_NDCG@10": per_user.mean(),
                             f"{PER_USER_PREFIX}NDCG@10": per_user, "describer": describer, "control": control})
    return pd.DataFrame(rows)


QUALITY = [{"dataset": "toy", "source": "original text", "probe": {"micro_f1": 0.9, "prior": {"micro_f1": 0.4}}},
           {"dataset": "toy", "source": "toy.cascade.text.jsonl", "probe": {"micro_f1": 0.6, "prior": {"micro_f1": 0.4}}}]


def test_controls_far_below_dmesr_credit_the_semantics():
    rows = comparison_rows(_runs({"backbone": 0.10, "dmesr": 0.13, "dmesr-shuffled": 0.10, "dmesr-random": 0.10,
                                  "dmesr-text-only": 0.125}))
    shuffled = next(r for r in rows if r["method"] == "dmesr-shuffled" and r["model"] == "sasrec")
    assert abs(shuffled["vs_backbone"]["rel_pct"]) < 1 and shuffled["vs_dmesr"]["rel_pct"] < -20
    assert shuffled["vs_dmesr"]["p_users"] < 0.05
    lines = verdict(rows)
    assert 28 < float(lines[0].split("gains ")[1].split("%")[0]) < 31  # 0.03 over about 0.10
    assert any("shuffled descriptions" in line and "in 0 of 2 cells" in line for line in lines)
    assert "contributes to its gain" in lines[-1]


def test_controls_as_good_as_dmesr_are_said_first():
    rows = comparison_rows(_runs({"backbone": 0.10, "dmesr": 0.13, "dmesr-shuffled": 0.13, "dmesr-random": 0.131,
                                  "dmesr-text-only": 0.13}))
    lines = verdict(rows)
    assert any("random features" in line and "in 2 of 2 cells" in line for line in lines)
    assert "cannot be credited to the semantics at all" in lines[-1]


def test_shuffled_and_text_alone_matching_while_random_falls_points_to_the_original_text():
    lines = verdict(comparison_rows(_runs({"backbone": 0.10, "dmesr": 0.13, "dmesr-shuffled": 0.13,
                                           "dmesr-random": 0.10, "dmesr-text-only": 0.13})))
    assert "cannot be credited to what the descriptions say" in lines[-1]
    assert "comes from the item's own text" in lines[-1]


def test_gain_points_score_what_the_view_held_and_the_figure_draws_them():
    rows = comparison_rows(_runs({"backbone": 0.10, "dmesr": 0.13, "dmesr-shuffled": 0.10, "dmesr-random": 0.10,
                                  "dmesr-text-only": 0.125}))
    points = gain_points(rows, QUALITY).set_index(["model", "method"])
    assert points.loc[("sasrec", "dmesr"), "probe"] == 0.6  # its describer's file
    assert points.loc[("sasrec", "dmesr-text-only"), "probe"] == 0.9  # the original text
    assert np.isnan(points.loc[("sasrec", "dmesr-shuffled"), "probe"])  # says nothing about its item
    figure = gain_against_quality(points.reset_index())
    (axis,) = figure.axes
    assert len(axis.collections) == 2 * (2 + 1)  # dmesr, text-only: one marker per backbone and their mean
    assert len(axis.lines) == 4  # shuffled and random (their mean gains), zero gain, the prior
    labels = axis.get_legend().get_texts()
    assert {"dmesr", "dmesr-text-only", "dmesr-shuffled (mean)", "sasrec"} <= {t.get_text() for t in labels}
