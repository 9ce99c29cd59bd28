"""Figures of the Training page: pure functions of a snapshot, labelled, bounded in size."""

from __future__ import annotations

import numpy as np
import pytest

from perf_budgets import TRAINING_FIGURES_BYTES
from vit_explain.charts import training as charts
from vit_explain.charts.common import figure_bytes


def test_bucket_mean_bounds_the_points_and_keeps_the_mean():
    steps = np.arange(1, 10_001)
    values = np.sin(steps / 300.0) + 1.0
    x, y = charts.bucket_mean(steps, values, max_points=400)
    assert len(x) == len(y) == 400 and x[-1] == 10_000 and np.all(np.diff(x) > 0)
    assert y.mean() == pytest.approx(values.mean(), rel=1e-4)
    short_x, short_y = charts.bucket_mean([1, 2, 3], [4.0, 5.0, 6.0])
    assert short_x.tolist() == [1, 2, 3] and short_y.tolist() == [4.0, 5.0, 6.0]


def test_smooth_is_a_trailing_mean():
    out = charts.smooth(np.array([0.0, 2.0, 4.0, 6.0]), 2)
    np.testing.assert_allclose(out, [0.0, 1.0, 3.0, 5.0])
    np.testing.assert_allclose(charts.smooth(np.array([1.0, 3.0]), 1), [1.0, 3.0])


@pytest.fixture
def snapshot_arrays():
    rng = np.random.default_rng(0)
    L, H, g, P = 2, 4, 8, 8
    att = rng.random((L, H, g * g)).astype(np.float32)
    att /= att.sum(-1, keepdims=True) * 1.1
    sim = np.corrcoef(rng.normal(size=(g * g, 16))).astype(np.float16)
    filters = rng.integers(0, 255, (16, 3, P, P), dtype=np.uint8)
    variance = np.sort(rng.random(16).astype(np.float32))[::-1] / 10
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return att, sim, filters, variance, image


def _colorbar_titles(fig) -> list[str]:
    return [t.colorbar.title.text for t in fig.data if t.type == "heatmap" and t.showscale is not False]


def test_every_figure_has_a_title_axis_labels_and_titled_colour_bars(snapshot_arrays):
    att, sim, filters, variance, image = snapshot_arrays
    steps = list(range(1, 501))
    loss = list(np.linspace(2.1, 0.8, 500))
    acc = list(np.linspace(0.1, 0.7, 500))
    curves = charts.curves_figure(steps, loss, acc, [0, 250, 500], [2.1, 1.2, 0.9], [0.1, 0.4, 0.65], chance=0.125,
                                  marker_step=250)
    assert curves.layout.title.text == "Training curves"
    assert curves.layout.yaxis.title.text == "loss" and curves.layout.yaxis2.title.text == "accuracy"
    assert all(len(t.x) <= charts.MAX_CURVE_POINTS for t in curves.data)

    probe = charts.probe_attention_figure(image, att, 1, 2, step=250)
    assert probe.layout.title.text == "Where the CLS token looks at step 250"
    assert _colorbar_titles(probe) == ["attention weight"]
    heat = [t for t in probe.data if t.type == "heatmap"][0]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=np.float32).ravel(), att[1, 2], rtol=1e-6)
    assert heat.zmax == pytest.approx(float(att[1, 2].max()))  # this head's own range by default

    heads = charts.heads_figure(att, step=250)
    assert len([t for t in heads.data if t.type == "heatmap"]) == 8 and _colorbar_titles(heads) == ["attention weight"]
    assert all(t.zmax == pytest.approx(float(att.max())) for t in heads.data)  # one shared scale

    distance = charts.distance_figure([np.full((2, 4), 20.0), np.full((2, 4), 12.0)], [0, 250], grid=8, patch_size=8)
    assert distance.layout.yaxis.title.text == "mean attention distance (pixels)"
    assert len(distance.data) == 8

    positions = charts.position_similarity_figure(sim, step=250)
    assert positions.layout.title.text == "Position-embedding similarity, step 250"
    assert _colorbar_titles(positions) == ["cosine similarity"]

    filt = charts.filters_figure(filters, variance, step=250)
    assert filt.layout.title.text == "Patch-embedding filters, step 250"

    top = charts.top5_figure([("ring", 0.6), ("circle", 0.2), ("star", 0.1), ("heart", 0.05), ("cross", 0.05)],
                             true_label="circle", step=250)
    colours = list(top.data[0].marker.color)
    assert colours[1] != colours[0] and "circle" in top.layout.title.subtitle.text

    total = sum(figure_bytes(f) for f in (curves, probe, heads, distance, positions, filt, top))
    assert total < TRAINING_FIGURES_BYTES, total  # sent about once a second: keep it light


def test_the_replay_has_one_frame_per_snapshot_with_that_snapshots_numbers(snapshot_arrays):
    """The replay's frames carry each snapshot's own map (the mean of the chosen layer's heads) and accuracy; one
    colour scale for the run; a play button and a slider; and nothing plays by itself (no autoplay)."""
    att, _, _, _, image = snapshot_arrays
    rng = np.random.default_rng(3)
    snapshots = [att * rng.random(att.shape).astype(np.float32) for _ in range(12)]
    steps = [0] + [25 * i for i in range(1, 12)]
    accuracy = list(np.linspace(0.12, 0.8, 12))
    fig = charts.replay_figure(image, snapshots, steps, accuracy, layer=1, chance=0.125)
    assert fig.layout.title.text.startswith("Replay of the run")
    assert len(fig.frames) == 12 and [f.name for f in fig.frames] == [f"step {s}" for s in steps]
    zmax = max(float(s[1].mean(axis=0).max()) for s in snapshots)
    for frame, snap, step, acc in zip(fig.frames, snapshots, steps, accuracy):
        heat, marker = frame.data
        np.testing.assert_allclose(np.asarray(heat.z, dtype=np.float32).ravel(), snap[1].mean(axis=0), rtol=1e-6)
        assert float(marker.x[0]) == step and float(marker.y[0]) == pytest.approx(acc, rel=1e-6)
        assert list(frame.traces) == [1, 3]
    heat = fig.data[1]
    assert heat.zmin == 0 and heat.zmax == pytest.approx(zmax, rel=1e-6)  # one scale for the whole run
    assert _colorbar_titles(fig) == [f"attention share, 0–{zmax:.3g}"]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["▶ Play"]
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == 12 and sum(1 for s in slider.steps if s.label) <= 12
    assert slider.steps[-1].label == "275"
    assert fig.layout.xaxis2.title.text == "optimiser step" and fig.layout.yaxis2.title.text == "accuracy"
    assert "autoplay" not in fig.to_json()
    assert figure_bytes(fig) < 1_000_000
    with pytest.raises(ValueError):
        charts.replay_figure(image, snapshots[:3], steps, accuracy, layer=0, chance=0.1)
