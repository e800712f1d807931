"""Markdown for the written reports: tables and ``mean ± std`` cells, one format for every report."""

from __future__ import annotations

import math


def mean_std(mean: float, std: float, digits: int = 4) -> str:
    std_text = "n/a" if std is None or math.isnan(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {std_text}"


def short_value(value) -> str:
    """A setting's value in a sentence: floats to 3 significant digits, anything else as written."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
