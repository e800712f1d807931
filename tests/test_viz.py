"""Every shared plot: draws the data it is given (checked on the artists) and refuses bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dmesr import viz


def test_sequence_length_histogram_counts_every_user():
    lengths = np.array([3, 4, 4, 10, 50, 200])
    figure = viz.sequence_length_histogram(lengths, title="t")
    axis = figure.axes[0]
    assert isinstance(figure, Figure)
    assert sum(patch.get_height() for patch in axis.patches) == len(lengths)
    assert axis.get_xscale() == "log" and axis.get_title() == "t"
    assert axis.lines[0].get_xdata()[0] == pytest.approx(np.median(lengths))


def test_top_k_overlap_bars_count_users_per_number_of_shared_items():
    shared = np.array([0, 3, 3, 10, 7])
    figure = viz.top_k_overlap_bars(shared, k=10, title="t")
    axis = figure.axes[0]
    assert [patch.get_height() for patch in axis.patches] == [1, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1]
    assert axis.lines[0].get_xdata()[0] == pytest.approx(4.6) and axis.get_title() == "t"
    for bad in ([11], [-1], [2.5]):
        with pytest.raises(ValueError, match="whole numbers in 0..10"):
            viz.top_k_overlap_bars(bad)


def test_sequence_length_histogram_rejects_bad_lengths():
    with pytest.raises(ValueError, match="no values"):
        viz.sequence_length_histogram([])
    with pytest.raises(ValueError, match=">= 1"):
        viz.sequence_length_histogram([0, 3])
    with pytest.raises(ValueError, match="NaN"):
        viz.sequence_length_histogram([3, np.nan])


def test_popularity_curve_sorts_counts_and_states_head_share():
    counts = np.array([1, 50, 3, 0, 10, 2, 7, 1, 1, 25])
    figure = viz.popularity_curve(counts, head_fraction=0.2)
    axis = figure.axes[0]
    curve = axis.lines[0].get_ydata()
    assert np.all(np.diff(curve) <= 0) and curve[0] == 50 and curve[-1] == 0.5  # zero drawn at 0.5 on the log axis
    label = axis.get_legend().get_texts()[0].get_text()
    assert "75% of interactions" in label  # top 2 of 10 items: (50 + 25) / 100
    with pytest.raises(ValueError, match="head fraction"):
        viz.popularity_curve(counts, head_fraction=1.0)


def test_leave_one_out_diagram_colours_the_last_two_items():
    figure = viz.leave_one_out_diagram({"u1": ["a", "b", "c", "d"], "u2": ["x", "y", "z"]})
    colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in figure.axes[0].patches]
    expected = ["train", "train", "valid", "test", "train", "valid", "test"]
    assert colours == [viz.SPLIT_COLOURS[stage] for stage in expected]
    with pytest.raises(ValueError, match="at least 3"):
        viz.leave_one_out_diagram({"u": ["a", "b"]})


def test_tsne_is_seeded_and_shaped():
    vectors = np.random.default_rng(0).normal(size=(40, 8))
    first, second = viz.tsne_2d(vectors, seed=3), viz.tsne_2d(vectors, seed=3)
    assert first.shape == (40, 2)
    np.testing.assert_allclose(first, second)
    with pytest.raises(ValueError, match="N >= 3"):
        viz.tsne_2d(vectors[:2])


def test_embedding_scatter_one_panel_per_space_and_one_series_per_label_and_marker():
    points = np.arange(12, dtype=float).reshape(6, 2)
    figure = viz.embedding_scatter({"before": points, "after": -points}, colours=list("aabbcc"),
                                   markers=["d", "t"] * 3)
    assert [axis.get_title() for axis in figure.axes] == ["before", "after"]
    assert len(figure.axes[0].collections) == 6  # 3 labels x 2 markers, 1 point each
    colour_legend = next(artist for artist in figure.axes[1].artists if isinstance(artist, matplotlib.legend.Legend))
    assert sorted(text.get_text() for text in colour_legend.get_texts()) == ["a", "b", "c"]  # a legend each
    assert [text.get_text() for text in figure.axes[1].get_legend().get_texts()] == ["d", "t"]
    offsets = np.concatenate([c.get_offsets() for c in figure.axes[1].collections])
    assert sorted(map(tuple, offsets)) == sorted(map(tuple, -points))
    with pytest.raises(ValueError, match="expected \\(6, 2\\)"):
        viz.embedding_scatter({"bad": points[:3]}, colours=list("aabbcc"))
    many = list("abcdefghij") + ["a"] * 5  # ten genres: the seven most frequent keep a colour, the rest are "other"
    figure = viz.embedding_scatter({"all": np.zeros((len(many), 2))}, colours=many)
    shown = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert len(shown) == viz.MAX_SERIES and shown[0] == "a" and shown[-1] == "other"


def test_attention_heatmap_shows_the_weights_with_token_labels():
    weights = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    figure = viz.attention_heatmap(weights, ["[CLS]", "toy", "story"], ["head 1", "head 2"])
    axis = figure.axes[0]
    np.testing.assert_allclose(axis.images[0].get_array(), weights)
    assert [t.get_text() for t in axis.get_xticklabels()] == ["[CLS]", "toy", "story"]
    with pytest.raises(ValueError, match="does not match"):
        viz.attention_heatmap(weights, ["a", "b"], ["head 1", "head 2"])


def test_metric_bars_heights_error_bars_and_marks():
    summary = pd.DataFrame({"model": ["sasrec", "sasrec", "gru4rec", "gru4rec"],
                            "method": ["backbone", "dmesr", "backbone", "dmesr"],
                            "NDCG@10_mean": [0.1, 0.2, 0.05, 0.08], "NDCG@10_std": [0.01, 0.02, np.nan, 0.01]})
    figure = viz.metric_bars(summary, "NDCG@10", marks={("sasrec", "dmesr"): "†"})
    axis = figure.axes[0]
    heights = [patch.get_height() for patch in axis.patches]
    assert heights == pytest.approx([0.1, 0.05, 0.2, 0.08])  # per method, groups in first-seen order
    assert [t.get_text() for t in axis.texts] == ["†"]
    assert axis.texts[0].get_position()[1] == pytest.approx(0.22)  # above the error bar
    with pytest.raises(ValueError, match="lacks column"):
        viz.metric_bars(summary, "HR@10")
    with pytest.raises(ValueError, match="empty"):
        viz.metric_bars(summary.iloc[:0], "NDCG@10")


def test_training_curves_one_line_per_run():
    epochs = pd.DataFrame({"epoch": [1, 2, 3], "valid_NDCG@10": [0.01, 0.03, 0.04]})
    figure = viz.training_curves({"a": epochs, "b": epochs.rename(columns={"valid_NDCG@10": "NDCG@10"})})
    lines = figure.axes[0].lines
    assert len(lines) == 2 and list(lines[0].get_ydata()) == [0.01, 0.03, 0.04]
    with pytest.raises(ValueError, match="lacks"):
        viz.training_curves({"c": epochs.drop(columns="epoch")})


def test_save_figure_writes_a_png(tmp_path):
    path = viz.save_figure(viz.sequence_length_histogram([3, 5, 8]), tmp_path / "figs", "lengths")
    assert path == tmp_path / "figs" / "lengths.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_described_pictures_draws_one_panel_per_item_and_refuses_mismatches():
    from PIL import Image

    pictures = [Image.new("RGB", (8, 8), "red"), None]
    figure = viz.described_pictures(pictures, ["Title: A", "Title: B"], ["a red square", "no picture"])
    assert len(figure.axes) == 2 and len(figure.axes[0].images) == 1 and len(figure.axes[1].images) == 0
    assert "red square" in figure.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="as many pictures"):
        viz.described_pictures(pictures, ["Title: A"], ["a", "b"])


def test_metric_bars_label_the_axis_for_people_explain_the_bars_and_refuse_too_many_colours():
    summary = pd.DataFrame({"model": ["sasrec"] * 9, "method": [f"m{i}" for i in range(9)],
                            "test_NDCG@10_mean": np.linspace(0.1, 0.2, 9), "test_NDCG@10_std": 0.01})
    with pytest.raises(ValueError, match="9 method values in one chart"):
        viz.metric_bars(summary, "test_NDCG@10")
    long_title = "ml-100k: test NDCG@10, at most 200 epochs, early stopping on validation (full profile)"
    figure = viz.metric_bars(summary, "test_NDCG@10", group="method", hue="model", title=long_title)
    axis = figure.axes[0]
    assert axis.get_ylabel() == "test NDCG@10" and "\n" in axis.get_title()
    assert axis.get_title().replace("\n", " ") == long_title
    assert "standard deviation over seeds" in figure._supxlabel.get_text().replace("\n", " ")


def test_described_pictures_wraps_many_items_into_rows():
    from PIL import Image

    pictures = [Image.new("RGB", (8, 8), "red")] * 9
    figure = viz.described_pictures(pictures, ["Title: A"] * 9, ["red"] * 9)
    visible = [axis for axis in figure.axes if axis.axison]
    assert len(visible) == 9 and len(figure.axes) == 12  # 3 rows of 4, three blanks
    assert figure.get_figwidth() == pytest.approx(4 * 3.2)


def test_item_encoder_diagram_draws_every_part_the_module_holds_under_its_real_name():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_item_encoders import build, make_features

    from dmesr.models.anatomy import encoder_parts

    for overrides in ({"views": ["text"], "token_pca_dim": 4}, {"views": ["image", "text"], "integration": "gate"},
                      {"views": ["text"], "fusion": "none", "align_weight": 0.0}):
        features = make_features(views=tuple(overrides["views"]))
        encoder = build(features=features, **overrides)
        parts = encoder_parts(encoder)
        for part in parts.values():  # a reader finds each box's part where the box says
            if part["path"]:
                head, _, last = part["path"].rpartition(".")
                owner = encoder.get_submodule(head) if head else encoder
                assert hasattr(owner, last), part["path"]
        assert ("fusion" in parts) == (overrides.get("fusion") != "none")
        assert ("alignment" in parts) == (overrides.get("align_weight", 0.1) > 0)
        assert set(parts.get("alignment", {}).get("aligns", [])) <= set(parts)
        assert overrides.get("integration", "sum") in parts["integration"]["title"]
        assert parts["input_ids"]["shape"] == f"[{encoder.num_items + 1}, {encoder.dim}]"
        assert {f"view_adapter_{view}" for view in overrides["views"]} <= set(parts)
        figure = viz.item_encoder_diagram(parts, "SASRec", encoder.auxiliary_weight)
        drawn = " ".join(text.get_text() for text in figure.axes[0].texts)
        assert all(part["title"] in drawn and part["shape"].split(": ")[-1] in drawn for part in parts.values())


def test_controls_chart_draws_a_bar_per_method_and_a_dot_per_backbone():
    from dmesr.analysis.semantics_report import controls_frame, holds

    def row(dataset, model, method, control, gain):
        vs = None if gain is None else {"rel_pct": gain, "p_seeds": 0.5, "p_users": 0.5}
        return {"dataset": dataset, "model": model, "method": method, "seeds": 3, "describer": "cascade",
                "control": control, "holds": holds(method, "cascade", control), "mean": 0.1, "std": 0.01,
                "vs_backbone": vs, "vs_dmesr": vs if method not in ("backbone", "dmesr") else None}

    rows = [row(d, m, method, control, gain) for d in ("a", "b") for m in ("sasrec", "gru4rec")
            for method, control, gain in [("backbone", "none", None), ("dmesr", "none", 10.0),
                                          ("dmesr-shuffled", "shuffled", 8.0), ("dmesr-random", "random", -1.0)]]
    figure = viz.controls_chart(rows)
    assert [axis.get_title() for axis in figure.axes] == ["a", "b"]
    assert [bar.get_height() for bar in figure.axes[0].patches] == [10.0, 8.0, -1.0]  # mean gains, largest first
    assert len(figure.axes[0].collections) == 6  # 3 methods x 2 backbones
    table = controls_frame(rows)
    assert list(table.loc[table["method"] == "dmesr-shuffled", "vs backbone"]) == ["+8.0%"] * 4
    assert set(table["MLLM view holds"]) == {"nothing (ID embeddings only)", "descriptions by cascade",
                                             "shuffled descriptions", "random features"}
