"""The plots the notebooks and reports share: each function draws one figure and returns it.

Functions take plain arrays / tables (not models), never call ``plt.show`` and never save, so
they run under any backend (Agg in tests and papermill) and the caller decides where a figure
goes (``save_figure``). Colours come from matplotlib's default cycle or ``tab10`` / ``tab20``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

# Stage colours of the leave-one-out diagram: the train part, the validation and the test target.
SPLIT_COLOURS = {"train": "#9ecae1", "valid": "#fdae6b", "test": "#e6550d"}


def _figure(width: float = 6.0, height: float = 4.0, columns: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure that is not registered with pyplot, so notebooks and tests leak no open figures."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, axes


def _fitted(title: str, figure_width: float, fontsize: float = 12.0) -> str:
    """``title`` wrapped onto as many lines as it needs to fit ``figure_width`` inches (no clipped titles)."""

    characters = max(20, int(figure_width * 72 / (0.6 * fontsize)))  # a character is about 0.6 em wide
    return textwrap.fill(title, characters)


def readable(metric: str) -> str:
    """A column name as an axis label: ``test_NDCG@10`` -> ``test NDCG@10``."""
    for prefix, words in (("test_", "test "), ("valid_", "validation ")):
        if metric.startswith(prefix):
            return words + metric[len(prefix):]
    return metric


def _finite(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"cannot plot {what}: no values")
    if not np.isfinite(array).all():
        raise ValueError(f"cannot plot {what}: it contains NaN or infinite values")
    return array


def save_figure(figure: Figure, folder: str | Path, name: str) -> Path:
    """Write ``figure`` as ``<folder>/<name>.png`` (folder created) and return the path."""
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")  # legends placed beside an axis stay in the picture
    return path


def sequence_length_histogram(lengths, title: str = "", bins: int = 40) -> Figure:
    """Histogram of users' history lengths on a log x axis (MovieLens lengths span 3 orders of magnitude)."""
    lengths = _finite(lengths, "sequence lengths")
    if lengths.min() < 1:
        raise ValueError(f"sequence lengths must be >= 1, got {lengths.min():g}")
    figure, (axis,) = _figure()
    edges = np.geomspace(lengths.min(), lengths.max() + 1, bins + 1)
    axis.hist(lengths, bins=edges, color="#3182bd")
    axis.set_xscale("log")
    # plain numbers at 1-2-5 steps: the log axis's own minor labels ("3x10^1 4x10^1") overlap
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.axvline(np.median(lengths), color="black", linestyle="--", label=f"median {np.median(lengths):g}")
    axis.set(xlabel="interactions per user", ylabel="users", title=title or "Sequence lengths")
    axis.legend()
    return figure


def top_k_overlap_bars(shared, k: int = 10, title: str = "") -> Figure:
    """Users by how many items two models' top-``k`` lists share (0..k), with the mean: how differently
    the two rank, which a pair of hit rates cannot show."""
    shared = _finite(shared, "shared items")
    if shared.min() < 0 or shared.max() > k or not np.array_equal(shared, np.round(shared)):
        raise ValueError(f"shared items must be whole numbers in 0..{k}")
    figure, (axis,) = _figure()
    axis.bar(np.arange(k + 1), np.bincount(shared.astype(int), minlength=k + 1), color="#3182bd")
    axis.axvline(shared.mean(), color="black", linestyle="--", label=f"mean {shared.mean():.1f}")
    axis.set(xlabel=f"items both top-{k} lists hold", ylabel="users", xticks=np.arange(k + 1),
             title=_fitted(title or f"Overlap of two models' top-{k} lists", 6.0))
    axis.legend()
    return figure


def popularity_curve(counts, head_fraction: float = 0.2, title: str = "") -> Figure:
    """Items ranked by interaction count (log y), the head (top ``head_fraction`` of items) shaded.

    The legend states the share of interactions the head holds: the long-tail picture in one number.
    """
    counts = np.sort(_finite(counts, "item popularity"))[::-1]
    if not 0.0 < head_fraction < 1.0:
        raise ValueError(f"head fraction must lie strictly between 0 and 1, got {head_fraction}")
    num_head = round(head_fraction * len(counts))
    share = counts[:num_head].sum() / max(counts.sum(), 1.0)
    figure, (axis,) = _figure()
    ranks = np.arange(1, len(counts) + 1)
    axis.plot(ranks, np.maximum(counts, 0.5), color="#3182bd")  # 0.5: zero counts stay visible on a log axis
    axis.axvspan(0.5, num_head + 0.5, color="#fdae6b", alpha=0.4,
                 label=f"head: top {head_fraction:.0%} of items, {share:.0%} of interactions")
    axis.set_yscale("log")
    axis.set(xlabel="item rank by popularity", ylabel="interactions", title=title or "Item popularity")
    axis.legend()
    return figure


def leave_one_out_diagram(sequences: dict[str, list[str]], title: str = "") -> Figure:
    """One row per user: the chronological history as boxes, train part / validation / test target coloured.

    ``sequences`` maps a row label to item labels in time order (at least 3 per row).
    """
    if not sequences:
        raise ValueError("cannot draw the leave-one-out split of no users")

    longest = max(len(items) for items in sequences.values())
    figure, (axis,) = _figure(width=max(6.0, 1.25 * longest), height=1.2 + 0.75 * len(sequences))
    for row, (label, items) in enumerate(sequences.items()):
        if len(items) < 3:
            raise ValueError(f"row {label!r} has {len(items)} items; leave-one-out needs at least 3")
        for position, item in enumerate(items):
            stage = "test" if position == len(items) - 1 else "valid" if position == len(items) - 2 else "train"
            axis.add_patch(_box(position, row, SPLIT_COLOURS[stage]))
            label = textwrap.fill(textwrap.shorten(str(item), 40, placeholder="…"), 15, max_lines=3, placeholder="…")
            axis.text(position + 0.5, row + 0.5, label, ha="center", va="center", fontsize=6.5)
    handles = [_box(0, 0, colour) for colour in SPLIT_COLOURS.values()]
    axis.legend(handles, ["train part", "validation target", "test target"], loc="upper center",
                bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    axis.set(xlim=(0, longest), ylim=(len(sequences), 0))
    axis.set_title(_fitted(title or "Leave-one-out split (time runs right)", figure.get_figwidth()))
    axis.set_yticks(np.arange(len(sequences)) + 0.5, list(sequences))
    axis.set_xticks([])
    return figure


def _box(x: float, y: float, colour: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.05, y + 0.1), 0.9, 0.8, facecolor=colour, edgecolor="white")


def tsne_2d(vectors, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of ``vectors [N, D]`` to ``[N, 2]``: PCA init and a fixed seed, so the picture is reproducible."""
    from sklearn.manifold import TSNE

    vectors = _finite(vectors, "t-SNE input")
    if vectors.ndim != 2 or len(vectors) < 3:
        raise ValueError(f"t-SNE needs a [N >= 3, D] array, got shape {vectors.shape}")
    perplexity = min(perplexity, (len(vectors) - 1) / 3)  # sklearn requires perplexity < N
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)


def embedding_scatter(panels: dict[str, np.ndarray], colours, markers=None, title: str = "",
                      colour_title: str = "", marker_title: str = "") -> Figure:
    """One scatter per panel (``name -> [N, 2]`` points), coloured by ``colours`` labels, shaped by ``markers``.

    Every panel holds the same N rows, so colours and markers are shared (e.g. genre and view). Beyond
    ``MAX_SERIES`` colours the rarest labels are drawn grey as "other"; colours and markers get a legend each.
    """
    if not panels:
        raise ValueError("cannot draw an embedding scatter without panels")
    colours = np.asarray(colours).astype(str)
    markers = np.full(len(colours), "", dtype=object) if markers is None else np.asarray(markers).astype(str)
    for name, points in panels.items():
        if np.shape(points) != (len(colours), 2):
            raise ValueError(f"panel {name!r} has shape {np.shape(points)}, expected ({len(colours)}, 2)")
    counts = pd.Series(colours).value_counts()
    if len(counts) > MAX_SERIES:  # colours a reader can tell apart; the rest grey
        colours = np.where(np.isin(colours, counts.index[:MAX_SERIES - 1]), colours, "other")
    labels = [label for label in pd.Series(colours).value_counts().index if label != "other"]
    palette = dict(zip(labels, _palette(len(labels))), other="#bbbbbb")
    labels += ["other"] if "other" in colours else []
    shapes = dict(zip(sorted(set(markers)), "o^sDvP*X"))
    figure, axes = _figure(width=5.0 * len(panels), height=4.5, columns=len(panels))
    for axis, (name, points) in zip(axes, panels.items()):
        points = _finite(points, f"panel {name!r}")
        for marker, shape in shapes.items():
            for label in labels:
                rows = (colours == label) & (markers == marker)
                if rows.any():
                    axis.scatter(points[rows, 0], points[rows, 1], s=12, color=palette[label], marker=shape, alpha=0.75)
        axis.set(title=name, xticks=[], yticks=[])
    # one legend for the colours and one for the markers, not one entry per combination
    handles = [Line2D([], [], linestyle="", marker="o", color=palette[label], label=label) for label in labels]
    legend = axes[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                             title=colour_title or None, title_fontsize=8)
    if len(shapes) > 1:
        axes[-1].add_artist(legend)
        axes[-1].legend(handles=[Line2D([], [], linestyle="", marker=shape, color="black", label=marker)
                                 for marker, shape in shapes.items()], fontsize=7, loc="lower left",
                        bbox_to_anchor=(1.0, 0.0), frameon=False, title=marker_title or None, title_fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def _palette(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(index % cmap.N) for index in range(count)]


def attention_heatmap(weights, tokens: list[str], rows: list[str], title: str = "") -> Figure:
    """Attention ``[len(rows), len(tokens)]`` (e.g. one row per head or view) over the text's tokens.

    The colour scale spans the weights' own range (the bar shows it): near-uniform attention stays readable.
    """
    weights = _finite(weights, "attention weights")
    if weights.shape != (len(rows), len(tokens)):
        raise ValueError(f"attention of shape {weights.shape} does not match {len(rows)} rows x {len(tokens)} tokens")
    figure, (axis,) = _figure(width=max(4.0, 0.35 * len(tokens) + 1.5), height=0.9 + 0.45 * len(rows))
    image = axis.imshow(weights, aspect="auto", cmap="viridis")
    axis.set_xticks(np.arange(len(tokens)), tokens, rotation=90, fontsize=7)
    axis.set_yticks(np.arange(len(rows)), rows, fontsize=8)
    axis.set_title(_fitted(title or "Cross-attention over original-text tokens", figure.get_figwidth() - 1.0, 9), fontsize=9)
    axis.set_xlabel(f"original-text tokens (uniform attention: {1 / len(tokens):.3f} each)", fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.03, label="attention weight")
    return figure


# Said under every bar chart, so a reader of the picture alone knows what the whiskers are.
ERROR_BAR_NOTE = "Bars: mean over seeds; error bars: ± one standard deviation over seeds (none with a single seed)."
MAX_SERIES = 8  # colours a reader can tell apart in one chart; more: swap group and hue, or split the table


def metric_bars(summary: pd.DataFrame, metric: str, group: str = "model", hue: str = "method",
                marks: dict | None = None, title: str = "", note: str = ERROR_BAR_NOTE) -> Figure:
    """Bars of ``<metric>_mean`` with ``<metric>_std`` error bars, grouped by ``group``, one colour per ``hue``.

    ``summary`` is a :func:`dmesr.analysis.summarize` table (or any with those columns);
    ``marks`` maps ``(group value, hue value)`` to a text drawn above the bar (significance marks).
    A missing std (a single seed) draws no error bar. ``note`` is printed under the chart (what the bars,
    error bars and marks mean). At most ``MAX_SERIES`` hues: more colours cannot be told apart.
    """
    needed = [group, hue, f"{metric}_mean", f"{metric}_std"]
    missing = [column for column in needed if column not in summary.columns]
    if missing:
        raise ValueError(f"summary table lacks column(s) {missing}")
    if summary.empty:
        raise ValueError("cannot draw a bar plot of an empty summary table")
    groups = list(dict.fromkeys(summary[group]))
    hues = list(dict.fromkeys(summary[hue]))
    if len(hues) > MAX_SERIES:
        raise ValueError(f"{len(hues)} {hue} values in one chart (at most {MAX_SERIES}); put {hue} on the x axis instead")
    width = 0.8 / len(hues)
    figure, (axis,) = _figure(width=min(16.0, max(6.0, 3.5 + 0.3 * len(groups) * len(hues))), height=4.5)
    for index, (name, colour) in enumerate(zip(hues, _palette(len(hues)))):
        rows = summary[summary[hue] == name].set_index(group).reindex(groups)
        positions = np.arange(len(groups)) + (index - (len(hues) - 1) / 2) * width
        means, stds = rows[f"{metric}_mean"].to_numpy(float), rows[f"{metric}_std"].to_numpy(float)
        spread = np.isfinite(stds).any()  # a single seed has no std: no whisker rather than a zero-length one
        axis.bar(positions, means, width, yerr=np.nan_to_num(stds) if spread else None, capsize=3 if spread else 0,
                 color=colour, label=str(name))
        for position, mean, std, key in zip(positions, means, stds, groups):
            mark = (marks or {}).get((key, name))
            if mark and np.isfinite(mean):
                axis.text(position, mean + np.nan_to_num(std), mark, ha="center", va="bottom", fontsize=9)
    long_labels = len(groups) > 4 or max(len(str(g)) for g in groups) > 12
    axis.set_xticks(np.arange(len(groups)), [str(g) for g in groups], rotation=30 if long_labels else 0,
                    ha="right" if long_labels else "center", fontsize=8)
    axis.set_ylabel(readable(metric))
    axis.set_title(_fitted(title or f"{readable(metric)} (mean ± std over seeds)", figure.get_figwidth() - 1.5))
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title=hue)  # beside: bars stay visible
    if note:
        figure.supxlabel(_fitted(note, figure.get_figwidth(), 8), fontsize=8, color="#444444")
    return figure


def training_curves(curves: dict[str, pd.DataFrame], metric: str = "NDCG@10", title: str = "") -> Figure:
    """Validation ``metric`` per epoch, one line per run (``name -> epochs table`` with ``epoch`` and ``valid_<metric>``
    or ``<metric>`` columns, as in a run's ``epochs.jsonl``)."""
    if not curves:
        raise ValueError("cannot draw training curves of no runs")
    figure, (axis,) = _figure()
    for name, epochs in curves.items():
        column = next((c for c in (f"valid_{metric}", metric) if c in epochs.columns), None)
        if column is None or "epoch" not in epochs.columns:
            raise ValueError(f"run {name!r}: epochs table lacks 'epoch' and {metric!r} columns")
        axis.plot(epochs["epoch"], epochs[column], marker="o", label=name)
    axis.set(xlabel="epoch", ylabel=f"validation {metric}")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    axis.set_title(_fitted(title or f"Validation {metric} per epoch", figure.get_figwidth()))
    axis.legend(fontsize=8)
    return figure


def described_pictures(pictures: list, titles: list[str], captions: list[str], wrap: int = 38,
                       columns: int = 4) -> Figure:
    """Each picture above its title and the describer's caption, in a grid of ``columns`` panels a row
    (small multiples: many items stay readable). ``None`` draws an empty panel, for an item without a
    usable picture."""

    if not pictures or not len(pictures) == len(titles) == len(captions):
        raise ValueError(f"need as many pictures, titles and captions, got {len(pictures)}, {len(titles)}, {len(captions)}")
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    figure = Figure(figsize=(3.2 * columns, 4.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[len(pictures):]:
        axis.set_axis_off()
    for axis, picture, title, caption in zip(axes, pictures, titles, captions):
        if picture is not None:
            axis.imshow(np.asarray(picture.convert("RGB")))
        axis.set_box_aspect(1)  # empty panels as tall as the pictures
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(textwrap.shorten(title, wrap), fontsize=9)
        axis.set_xlabel(textwrap.fill(caption, wrap), fontsize=8, loc="left")
    return figure


def gain_against_quality(points: pd.DataFrame, title: str = "") -> Figure:
    """DMESR's gain over the backbone (%) against the genre-probe micro-F1 of its MLLM view, one panel per
    dataset: small markers per backbone, a large one per method (mean over backbones), and for methods
    without a score (shuffled or random inputs) their mean gain as a horizontal line."""
    if points.empty:
        raise ValueError("cannot plot gain against quality: no method has a gain over its backbone yet")
    datasets = sorted(points["dataset"].unique())
    figure, axes = _figure(width=5.0 * len(datasets), height=4.5, columns=len(datasets))
    methods = sorted(points["method"].unique())
    colours = dict(zip(methods, _palette(len(methods))))
    markers = dict(zip(sorted(points["model"].unique()), "os^Dv"))
    for axis, dataset in zip(axes, datasets):
        group = points[points["dataset"] == dataset]
        for method, runs in group.groupby("method"):
            if runs["probe"].notna().all():
                for _, row in runs.iterrows():
                    axis.scatter(row["probe"], row["gain"], color=colours[method], marker=markers[row["model"]],
                                 s=25, alpha=0.6)
                axis.scatter(runs["probe"].mean(), runs["gain"].mean(), color=colours[method], s=140,
                             edgecolor="black", label=method, zorder=3)
            else:
                axis.axhline(runs["gain"].mean(), color=colours[method], linestyle="--", label=f"{method} (mean)")
        prior = group["prior"].dropna()
        if len(prior):
            axis.axvline(prior.iloc[0], color="#888888", linestyle=":", label="prior (no information)")
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xlabel("genre-probe micro-F1 of the MLLM view")
        axis.set_ylabel("test NDCG@10 gain over the backbone (%)")
        axis.set_title(dataset)
    labelled = {}  # one legend for all panels: each method once, then the backbones' markers
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    labelled.update({model: Line2D([], [], color="#444444", marker=marker, linestyle="")
                     for model, marker in markers.items()})
    axes[-1].legend(list(labelled.values()), list(labelled), fontsize=8, frameon=False, loc="upper left",
                    bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(_fitted(title or "DMESR's gain against what its MLLM view knows about the item",
                            figure.get_figwidth()))
    return figure


def controls_chart(rows: list[dict], title: str = "") -> Figure:
    """Gain over the backbone (%) of DMESR and of each control, one panel per dataset: a bar per method (the
    mean over backbones), a dot per backbone (``rows``: ``dmesr.analysis.semantics_report.comparison_rows``)."""
    gains = pd.DataFrame([{"dataset": row["dataset"], "model": row["model"], "holds": row["holds"],
                           "gain": row["vs_backbone"]["rel_pct"]} for row in rows if row["vs_backbone"]])
    if gains.empty:
        raise ValueError("no method has a gain over its backbone to draw")
    datasets = sorted(gains["dataset"].unique())
    order = list(gains.groupby("holds")["gain"].mean().sort_values(ascending=False).index)
    markers = dict(zip(sorted(gains["model"].unique()), "os^Dv"))
    colours = dict(zip(order, _palette(len(order))))  # one colour per method in every panel
    figure, axes = _figure(width=5.8 * len(datasets), height=4.8, columns=len(datasets))
    for axis, dataset in zip(axes, datasets):
        group = gains[gains["dataset"] == dataset]
        shown = [name for name in order if name in set(group["holds"])]
        means = group.groupby("holds")["gain"].mean()
        axis.bar(np.arange(len(shown)), [means[name] for name in shown], color=[colours[n] for n in shown], alpha=0.8)
        for x, name in enumerate(shown):
            for _, row in group[group["holds"] == name].iterrows():
                axis.scatter(x, row["gain"], color="black", marker=markers[row["model"]], s=18, zorder=3)
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(np.arange(len(shown)), [textwrap.fill(name, 13) for name in shown], fontsize=8)
        axis.set_ylabel("test NDCG@10 gain over the backbone (%)")
        axis.set_title(dataset)
    axes[-1].legend([Line2D([], [], color="black", marker=m, linestyle="") for m in markers.values()], list(markers),
                    fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="backbone")
    figure.suptitle(_fitted(title or "DMESR's gain, and the same encoder given something else to read: bars are "
                            "means over backbones", figure.get_figwidth()))
    return figure


# Where each stage of the item encoder sits in its diagram (x of the box's left edge, as a share of the width).
_STAGE_X = {"input": 0.0, "adapter": 0.27, "fusion": 0.54, "alignment": 0.54, "output": 0.8}
_STAGE_COLOURS = {"input": "#eeeeee", "adapter": "#c6dbef", "fusion": "#fdd0a2", "alignment": "#d9f0d3",
                  "output": "#fcbba1"}


def item_encoder_diagram(parts: dict[str, dict], backbone: str = "backbone", align_weight: float | None = None,
                         title: str = "") -> Figure:
    """The DMESR item encoder as boxes and arrows: one box per part of ``parts``
    (``dmesr.models.anatomy.encoder_parts``: title, class, attribute path, shape), frozen inputs on the
    left, trained parts in colour, the item table the ``backbone`` scores with on the right."""
    rows = {"view": 0.8, "tokens": 0.58, "text": 0.3, "ids": 0.08, "fusion": 0.69, "alignment": 0.46, "output": 0.3}
    spots, taken, layer = {}, {}, {}  # lower-left corners; a second view's boxes lie on top of the first's
    for key, part in parts.items():
        spot = (_STAGE_X[part["stage"]], rows[part["stream"]])
        layer[key] = taken[spot] = taken.get(spot, -1) + 1
        spots[key] = (spot[0] + 0.012 * layer[key], spot[1] - 0.04 * layer[key])
    width, height = 0.2, 0.16
    figure = Figure(figsize=(14.0, 6.8))
    axis = figure.add_axes((0.0, 0.0, 1.0, 0.93))
    axis.set_xlim(-0.01, 1.01)
    axis.set_ylim(-0.08, 1.0)
    axis.axis("off")
    for key, part in parts.items():
        if key not in spots:
            continue
        x, y = spots[key]
        axis.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.005", zorder=3 + 2 * layer[key],
                                      facecolor=_STAGE_COLOURS[part["stage"]], edgecolor="#444444"))
        where = f"{part['cls']}" + (f"  ·  .{part['path']}" if part["path"] else "")
        above = {"zorder": 4 + 2 * layer[key], "ha": "center"}
        axis.text(x + width / 2, y + height - 0.025, part["title"], va="top", fontsize=9.5, fontweight="bold", **above)
        axis.text(x + width / 2, y + height / 2 - 0.01, textwrap.fill(where, 40), va="center", fontsize=7.5,
                  family="monospace", **above)
        axis.text(x + width / 2, y + 0.02, textwrap.fill(part["shape"], 44), va="bottom", fontsize=7.5, **above)

    def arrow(start: str, end: str, label: str = "", dashed: bool = False, start_side: str = "right"):
        if start not in spots or end not in spots:
            return
        (x0, y0), (x1, y1) = spots[start], spots[end]
        begin = (x0 + width, y0 + height / 2) if start_side == "right" else (x0 + width / 2, y0)
        finish = (x1, y1 + height / 2)
        axis.annotate("", xy=finish, xytext=begin, arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2,
                                                                  linestyle="--" if dashed else "-"))
        if label:
            axis.text((begin[0] + finish[0]) / 2, (begin[1] + finish[1]) / 2 + 0.015, label, fontsize=8,
                      ha="center", color="#333333", style="italic")

    for key, part in parts.items():  # each input into its adapter
        if part["stage"] == "input":
            arrow(key, next(k for k, p in parts.items() if p["stage"] == "adapter" and p["stream"] == part["stream"]))
    for view in [key for key, part in parts.items() if part["stage"] == "adapter" and part["stream"] == "view"]:
        arrow(view, "fusion", "query")
    for aligned in parts.get("alignment", {}).get("aligns", []):
        arrow(aligned, "alignment", dashed=True)
    arrow("adapter_tokens", "fusion", "keys, values")
    arrow("fusion", "integration", "z (fused view)")
    arrow("adapter_text", "integration", "items without a view" if "fusion" in parts else "")
    arrow("input_ids", "integration", "ID embedding")
    x, y = spots["integration"]
    axis.annotate("", xy=(x + width / 2, y - 0.12), xytext=(x + width / 2, y),
                  arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2))
    axis.text(x + width / 2, y - 0.14, textwrap.fill(f"item table: what {backbone} embeds the history with and scores "
                                                 "every item against (the item / scoring space)", 34),
              ha="center", va="top", fontsize=8.5)
    loss = "L = L_rec + \u03bb \u00b7 L_align" + (f",  \u03bb = {align_weight:g}" if align_weight is not None else "")
    axis.text(0.5, -0.05, loss + "   (L_rec: the backbone's next-item loss; dashed: what L_align pulls together)",
              ha="center", fontsize=10)
    for stage, x in [("frozen inputs (computed once, offline)", 0.0), ("trained: adapters, ID table", 0.27),
                     ("trained: fusion and alignment", 0.54), ("integration", 0.8)]:
        axis.text(x + width / 2, 0.985, stage, ha="center", fontsize=9, color="#555555")
    figure.suptitle(_fitted(title or "The DMESR item encoder", 14.0), fontsize=12)
    return figure
