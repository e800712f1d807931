"""Each notebook's "What to notice", computed from the results shown above it.

One function per notebook returns its sentences; the notebook shows them with ``show_notes``. Every
number a sentence quotes is one the notebook's outputs show (``dmesr.notebooks.unsupported_claims``
checks it), and every claim is conditioned on the numbers, so the same code is true in either profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRIC = "NDCG@10"


def capped_runs(curves: dict[str, np.ndarray], max_epochs: int) -> list[str]:
    """Runs that trained to the epoch cap with their best validation score in the last epoch: they stopped
    because of the cap while still improving, so they are not converged."""
    return [name for name, values in curves.items()
            if len(values) >= max_epochs and int(np.argmax(values)) == len(values) - 1]


def _seeds_sentence(count: int) -> str:
    if count < 3:
        return (f"With {count} seed(s) there is no spread to compare a gap with: treat any difference here as "
                "unmeasured noise.")
    return f"{count} seeds per row: compare each gap with the standard deviations in the table."


def quickstart(runs: pd.DataFrame, curves: dict[str, np.ndarray], max_epochs: int) -> list[str]:
    """00: DMESR against the backbone, whether the runs converged, what one seed can say."""
    means = runs.groupby("method")[f"test_{METRIC}"].mean()
    backbone, dmesr = means["backbone"], means["dmesr"]
    notes = [f"DMESR's test {METRIC} is {dmesr:.4f} against the backbone's {backbone:.4f}: "
             f"{'above' if dmesr > backbone else 'not above'} it, mean over the seeds in the table."]
    capped = capped_runs(curves, max_epochs)
    if capped:
        notes.append(f"{len(capped)} of {len(curves)} runs stopped at the epoch cap with validation {METRIC} still "
                     f"rising ({', '.join(capped)}): not converged, so this comparison is not a result.")
    else:
        notes.append("Every run stopped by early stopping, after its validation score had stopped rising.")
    notes.append(_seeds_sentence(runs["seed"].nunique()))
    notes.append("The descriptions in the example table were written by a small stand-in describer that saw only "
                 "the title: read each beside the item's own text (title, year, genres), which DMESR also reads.")
    return notes


def datasets(head_share: dict[str, float], medians: dict[str, float], longest: dict[str, int]) -> list[str]:
    """01: how skewed the datasets are (the shares and lengths are printed above)."""
    return [f"{name}: the head holds {share:.0%} of the training interactions; the median user has "
            f"{medians[name]:g} interactions, the longest {longest[name]}." for name, share in head_share.items()]


def enrichment(first: dict, again: dict, median_words: float, dataset: str, quality: list[dict]) -> list[str]:
    """02: what the describe calls did, what the cache saved, and how the shipped descriptions score
    (``quality``: ``dmesr.analysis.semantics_report.read_quality`` rows of ``dataset``)."""
    skipped = sum(first["skipped"].values())
    notes = [f"{first['done']} descriptions written in {first['seconds']:.1f} s; the second call wrote "
             f"{again['done']} and found {again['cached']} in the cache, in {again['seconds']:.2f} s.",
             f"{skipped} picture(s) skipped as unreadable: that item keeps its text view only.",
             f"The shipped {dataset} descriptions have a median of {median_words:g} words."]
    text = next((row for row in quality if row["source"] == "original text"), None)
    for row in quality:
        if row is text or text is None:
            continue
        notes.append(f"{row['source']}: genre probe {row['probe']['micro_f1']:.3f} against the original text's "
                     f"{text['probe']['micro_f1']:.3f} and the no-information prior's {row['probe']['prior']['micro_f1']:.3f}; "
                     f"{row['contradictions']['far_year_rate']:.0%} state a year more than one year off. "
                     + ("They carry genre information, but less than the item's own text."
                        if row["probe"]["micro_f1"] - row["probe"]["prior"]["micro_f1"] > 0.1
                        else "They carry little more genre information than no information at all."))
    return notes


def alignment(means: pd.DataFrame, chance: float) -> list[str]:
    """03: the alignment's effect on the adapted pair (``means``: rows frozen MiniLM, without/with alignment)."""
    with_, without, frozen = (means.loc[name] for name in ("with alignment", "without alignment", "frozen MiniLM"))
    accuracy = "matched-pair accuracy"
    notes = [f"Matched-pair accuracy: {with_[accuracy]:.3f} with alignment, {without[accuracy]:.3f} without, "
             f"{frozen[accuracy]:.3f} for frozen MiniLM (chance {chance:.4f}).",
             "The alignment term " + ("did" if with_["alignment"] < without["alignment"] else "did not")
             + f" bring the pairs closer than training without it (alignment {with_['alignment']:.3f} against "
               f"{without['alignment']:.3f}, lower is closer)."]
    if with_[accuracy] < frozen[accuracy]:
        notes.append("The aligned adapters find fewer matching pairs than the frozen vectors: the adapters start "
                     "random and have not yet learned the mapping in this many epochs.")
    else:
        notes.append("The aligned adapters find at least as many matching pairs as the frozen vectors.")
    return notes


DEFAULT_VARIANT = "DMESR sum"  # ItemEncoderConfig's defaults: cross-attention fusion, integration by sum


def ablation(summary: pd.DataFrame, seeds: int, peaks: pd.DataFrame) -> list[str]:
    """04: the default against each variant, which simpler variants score higher, where attention peaks.

    ``summary``: one row per variant (``test_NDCG@10_mean``); ``peaks``: per item the top token, its
    weight and the uniform weight."""
    scores = summary.set_index("variant")[f"test_{METRIC}_mean"]
    default, backbone = scores[DEFAULT_VARIANT], scores["backbone (ID)"]
    above = scores[scores > default].sort_values(ascending=False)
    notes = [f"The default ({DEFAULT_VARIANT}: cross-attention fusion, integration by sum) scores {default:.4f} test "
             f"{METRIC}, the backbone {backbone:.4f}."]
    if len(above):
        notes.append("Scoring higher than the default: " + ", ".join(f"{name} {value:.4f}" for name, value in above.items())
                     + (". The simpler variants among them (no cross-attention) show that the fusion is not what "
                        "helps here." if {"concat-MLP fusion", "DMESR, no fusion"} & set(above.index) else "."))
    else:
        notes.append("No variant scores higher than the default.")
    notes.append(_seeds_sentence(seeds) + " Whether the differences are real: the study's tables and "
                 "`05_results`, where the controls show what the gain comes from.")
    on_template = int(peaks["template token"].sum())
    notes.append(f"{on_template} of {len(peaks)} items attend most to a template token (the field names and "
                 "punctuation every original text shares) rather than a word of their own; compare each peak with "
                 "the uniform weight in the table above.")
    return notes


def results(compared: int, better: int, marked: int, expected: float, seeds: list[int]) -> list[str]:
    """05: how many rows beat their backbone, how many marks, and how many chance alone would give."""
    if max(seeds) < 2:
        return [f"{better} of {compared} method rows score above their backbone, each from one run: with one seed "
                "the table carries no marks (above), and the sizes of these changes are untested."]
    return [f"{better} of {compared} method rows score above their backbone; {marked} carry a mark, where "
            f"chance alone would give about {expected:.1f}."]


def explorer(jaccard: float, hits: dict[str, float], shared: float) -> list[str]:
    """06: how different the two models' lists are, beside how often each hits."""
    (first, first_rate), (second, second_rate) = hits.items()
    if first_rate == second_rate:
        comparison = f"{first} and {second} hit the held-out item equally often (HR@10 {first_rate:.4f})"
    else:
        higher, lower = (first, second) if first_rate > second_rate else (second, first)
        comparison = (f"{higher} hits the held-out item more often than {lower} (HR@10 "
                      f"{max(first_rate, second_rate):.4f} against {min(first_rate, second_rate):.4f})")
    comparison = comparison[0].upper() + comparison[1:]
    return [f"{comparison}; their top-10 lists share {shared:.1f} of 10 items per user on average (mean Jaccard "
            f"{jaccard:.3f}): the item features change which items are recommended, not only how many hits.",
            "The descriptions in a user's history come from the stand-in describer; the neighbour lists in the "
            "description space inherit its mistakes."]
