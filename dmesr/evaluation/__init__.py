"""Evaluation: vectorised ranking metrics, the full / sampled protocols, breakdowns, significance."""

from dmesr.evaluation.breakdowns import breakdown, head_items, item_popularity, training_lengths
from dmesr.evaluation.metrics import METRIC_NAMES, metrics_from_ranks, ranks_from_scores, summarize
from dmesr.evaluation.protocols import PROTOCOLS, EvalResult, evaluate
from dmesr.evaluation.significance import METHODS, paired_test

__all__ = [
    "METHODS",
    "METRIC_NAMES",
    "PROTOCOLS",
    "EvalResult",
    "breakdown",
    "evaluate",
    "head_items",
    "item_popularity",
    "metrics_from_ranks",
    "paired_test",
    "ranks_from_scores",
    "summarize",
    "training_lengths",
]
