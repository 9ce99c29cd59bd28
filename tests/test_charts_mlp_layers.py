"""Figure builders of the MLP and layer-stack pages: the numbers they draw, and the payload they ship."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from perf_budgets import FIGURE_PAYLOAD_GUARD
from vit_explain import analysis
from vit_explain.charts import layers as cl
from vit_explain.charts import mlp as cm
from vit_explain.charts.common import figure_bytes

RNG = np.random.default_rng(0)


def gelu(x):
    from math import erf

    return np.array([0.5 * v * (1 + erf(v / math.sqrt(2))) for v in np.ravel(x)]).reshape(np.shape(x))


def heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


# ------------------------------------------------------------------------------------------- MLP
def test_token_subset_keeps_cls_and_spreads_patches():
    assert list(cm.token_subset(10, 40)) == list(range(10))
    rows = cm.token_subset(197, 40)
    assert rows[0] == 0 and rows[-1] == 196 and len(rows) <= 40
    assert np.all(np.diff(rows) > 0)
    assert cm.token_name(0, 14) == "CLS"
    assert cm.token_name(16, 14) == "patch 15 (1,1)"  # token 16 = patch 15 = row 1, column 1


def test_feature_windows_keep_the_widening_ratio():
    assert cm.feature_windows(768, 3072) == (96, 384)
    assert cm.feature_windows(32, 128) == (32, 128)
    assert cm.feature_windows(32, 37) == (32, 37)


def test_activation_stats_and_active_map_count_correctly():
    pre = np.array([[-2.0, -0.5, 0.5, 3.0], [1.0, 1.0, -1.0, 2.0]], dtype=np.float32)
    post = gelu(pre).astype(np.float32)
    stats = cm.activation_stats(pre, post)
    assert stats["negative"] == pytest.approx(3 / 8)
    # |gelu(x)| < 0.05 only for x = -2 (gelu(-2) = -0.045); gelu(-0.5) = -0.154, gelu(-1) = -0.159
    assert stats["near_zero"] == pytest.approx(1 / 8)
    assert stats["active"] == pytest.approx(5 / 8)
    # CLS + a 2x2 grid: the map skips CLS and counts units > 0.05 per patch
    post5 = np.array([[9, 9], [1, 1], [1, -0.1], [0, 0], [0.01, 2]], dtype=np.float32)
    np.testing.assert_allclose(cm.active_share_map(post5, 2), [[1.0, 0.5], [0.0, 0.5]])


def test_curve_range_covers_the_data_and_the_bend():
    lo, hi = cm.curve_range(np.array([0.1, 0.2]))
    assert (lo, hi) == (-4.0, 4.0)
    data = np.linspace(-10, 12, 10001)
    lo, hi = cm.curve_range(data)
    assert -10 <= lo < -9.9 and 11.9 < hi <= 12


def test_activation_figure_histogram_is_a_distribution_and_curve_is_untouched():
    xs = np.linspace(-4, 4, 101, dtype=np.float32)
    ys = gelu(xs).astype(np.float32)
    pre = np.concatenate([RNG.normal(size=5000), [50.0, -50.0]]).astype(np.float32)  # two far outliers
    fig = cm.activation_figure(xs, ys, pre, "GELU")
    bars = [t for t in fig.data if isinstance(t, go.Bar)][0]
    assert float(np.sum(bars.y)) == pytest.approx(1.0, abs=1e-5)  # outliers land in the edge bins
    assert bars.y[0] > 0 and bars.y[-1] > 0
    curve = [t for t in fig.data if t.name == "GELU(x)"][0]
    np.testing.assert_array_equal(curve.y, ys)
    assert curve.y.dtype == np.float32


def test_mapping_figure_windows_and_shared_symmetric_scale():
    left = RNG.normal(size=(197, 768)).astype(np.float32)
    right = 3 * RNG.normal(size=(197, 3072)).astype(np.float32)
    fig = cm.mapping_figure(left, right, grid=14, title="t", left_title="a", right_title="b", left_axis="x",
                            right_axis="y")
    a, b = heatmaps(fig)
    assert a.z.shape == (24, 96) and b.z.shape == (24, 384)  # 24 rows: labels stay 12 px and apart
    assert a.z.dtype == np.float32
    np.testing.assert_array_equal(a.z[0], left[0, :96])  # first row is CLS, untouched values
    assert a.zmin == b.zmin == -a.zmax and a.zmax == b.zmax
    assert list(a.y)[0] == "CLS"
    with pytest.raises(ValueError):
        cm.mapping_figure(left, right[:10], grid=14, title="t", left_title="a", right_title="b", left_axis="x",
                          right_axis="y")


def test_update_ratio_and_residual_figure():
    residual = np.array([[3.0, 4.0], [0.0, 0.0]])
    mlp = np.array([[0.0, 5.0], [1.0, 0.0]])
    np.testing.assert_allclose(cm.update_ratio(residual, mlp), [1.0, 0.0])
    r, m = RNG.normal(size=64).astype(np.float32), RNG.normal(size=64).astype(np.float32)
    fig = cm.residual_figure(r, m, r + m, "CLS")
    z = heatmaps(fig)[0].z
    np.testing.assert_allclose(z[0] + z[1], z[2], rtol=1e-6)
    assert f"{np.linalg.norm(r):.2f}" in heatmaps(fig)[0].y[0]


# ------------------------------------------------------------------------------------------- layer stack
def test_stream_norms_split_the_two_branches():
    T, D = 3, 4
    x = RNG.normal(size=(T, D))
    a = RNG.normal(size=(T, D))  # what attention adds
    m = RNG.normal(size=(T, D))  # what the MLP adds
    hidden = np.stack([x, x + a + m])
    residual = (x + a)[None]
    out = cl.stream_norms(hidden, residual)
    np.testing.assert_allclose(out["attention"][0], np.linalg.norm(a, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(out["mlp"][0], np.linalg.norm(m, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(out["stream"][1], np.linalg.norm(x + a + m, axis=-1), rtol=1e-5)
    with pytest.raises(ValueError):
        cl.stream_norms(hidden, hidden)
    fig = cl.stream_figure(out, None, "average patch")
    np.testing.assert_allclose(fig.data[1].y, out["attention"][:, 1:].mean(axis=1), rtol=1e-6)


def test_cls_attention_maps_and_facets():
    g, H, L = 2, 2, 3
    T = g * g + 1
    att = np.full((L, H, T, T), 1.0 / T, dtype=np.float32)
    att[1, :, 0] = [0.2, 0.4, 0.1, 0.2, 0.1]  # layer 2: CLS looks mostly at patch (0, 0)
    maps = cl.cls_attention_maps(att, g)
    np.testing.assert_allclose(maps[1], [[0.4, 0.1], [0.2, 0.1]], rtol=1e-6)
    rel = cl.cls_attention_facets(maps, relative=True)
    assert len(rel.data) == L
    for trace, raw in zip(rel.data, maps):
        assert float(np.max(trace.z)) == pytest.approx(1.0)
        np.testing.assert_allclose(trace.customdata, raw)  # hover shows raw weights
        assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    raw_fig = cl.cls_attention_facets(maps, relative=False)
    np.testing.assert_allclose(raw_fig.data[1].z, maps[1])
    # the default scale: 0 to the largest weight of any layer, the same for every panel, said on the bar
    top = float(maps.max())
    assert all((t.zmin, t.zmax) == (0.0, pytest.approx(top)) for t in raw_fig.data)
    assert "fitted 0–0.4" in raw_fig.data[0].colorbar.title.text and top == pytest.approx(0.4)
    assert [a.text for a in raw_fig.layout.annotations][:2] == ["layer 0", "layer 1"]
    fixed = cl.cls_attention_facets(maps, fixed=True)
    assert all((t.zmin, t.zmax) == (0.0, 1.0) for t in fixed.data) and "fixed 0–1" in fixed.data[0].colorbar.title.text
    with pytest.raises(ValueError):
        cl.cls_attention_maps(att, 3)


def test_token_norms_figure_relative_and_outlier_rings():
    norms = np.array([[1.0, 2.0, 2.0, 2.0, 20.0], [5.0, 4.0, 4.0, 4.0, 4.0]])
    mask = analysis.high_norm_mask(norms, k=3.0)
    assert mask[0, 4] and not mask[1].any()
    fig = cl.token_norms_figure(norms, mask, 2, relative=True)
    z = heatmaps(fig)[0].z
    np.testing.assert_allclose(z[0], [0.5, 1.0, 1.0, 1.0, 10.0])
    rings = [t for t in fig.data if isinstance(t, go.Scatter)][0]
    assert list(rings.x) == [4] and list(rings.y) == [0]
    assert len([t for t in cl.token_norms_figure(norms, np.zeros_like(mask), 2).data]) == 1


def test_attention_distance_figure_one_dot_per_head():
    dist = np.array([[10.0, 80.0, 30.0], [90.0, 95.0, 100.0]])
    fig = cl.attention_distance_figure(dist, uniform_px=110.0)
    assert len(fig.data) == 4 and not fig.layout.annotations  # 3 heads + the dashed line's legend entry
    assert fig.data[3].name.startswith("uniform attention") and fig.data[3].showlegend is not False
    assert all(t.showlegend is False for t in fig.data[:3])
    np.testing.assert_allclose(fig.data[1].y, [80.0, 95.0])
    np.testing.assert_array_equal(fig.data[1].customdata, [0, 1])  # layer i is encoder.layer[i], from 0
    assert fig.layout.yaxis.range[1] >= 110.0


def test_entropy_figure_tops_out_at_uniform():
    ent = analysis.attention_entropy(np.full((2, 3, 5, 5), 0.2))
    np.testing.assert_allclose(ent, np.log(5))
    fig = cl.entropy_figure(ent, 5)
    assert heatmaps(fig)[0].zmax == pytest.approx(np.log(5))


def test_overlay_panels_share_one_scale_and_a_light_picture():
    image = RNG.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    a, b = RNG.random((4, 4)), RNG.random((4, 4))
    lo, hi = analysis.shared_scale(a, b)
    fig = cl.overlay_panels(image, [a, b], ["a", "b"], "t", colorbar_title="c", zmin=lo, zmax=hi, patch_size=16)
    hm = heatmaps(fig)
    assert [h.zmin for h in hm] == [lo, lo] and [h.zmax for h in hm] == [hi, hi]
    assert sum(bool(h.showscale) for h in hm) == 1
    pictures = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(pictures) == 2 and pictures[0].source.startswith("data:image/jpeg;base64,")


def test_token_pca_figure_and_block_diagram():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb = analysis.token_pca_rgb(RNG.normal(size=(17, 8)), 4)
    fig = cl.token_pca_figure(image, rgb, 3, 8)
    z = [t for t in fig.data if isinstance(t, go.Image) and t.z is not None][0].z
    assert z.shape == (4, 4, 3) and z.dtype == np.uint8 and z.max() == 255 and z.min() == 0
    svg = cl.layer_block_svg()
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "layernorm_before" in svg and "layernorm_after" in svg and svg.count(">residual<") == 2
    from xml.dom import minidom
    minidom.parseString(svg)  # well-formed


def test_page_payloads_stay_well_under_budget_at_vit_b16():
    """Every figure of both pages built from ViT-B/16-sized arrays: each page well under the page budget."""
    T, D, M, L, H, g = 197, 768, 3072, 12, 12, 14
    image = RNG.integers(0, 255, size=(224, 224, 3), dtype=np.uint8)
    h = RNG.normal(size=(T, D)).astype(np.float32)
    pre = RNG.normal(size=(T, M)).astype(np.float32)
    post = gelu(pre[:, :64]).astype(np.float32)
    post = np.tile(post, (1, M // 64))
    xs = np.linspace(-4, 4, 401, dtype=np.float32)
    mlp_figs = [
        cm.mapping_figure(h, pre, grid=g, title="t", left_title="a", right_title="b", left_axis="x", right_axis="y"),
        cm.activation_figure(xs, gelu(xs).astype(np.float32), pre, "GELU"),
        cm.active_share_figure(image, cm.active_share_map(post, g)),
        cm.mapping_figure(post, h, grid=g, title="t", left_title="a", right_title="b", left_axis="x", right_axis="y"),
        cm.update_ratio_figure(image, cm.update_ratio(h, h), g),
        cm.residual_figure(h[0], h[1], h[0] + h[1], "CLS"),
    ]
    hidden = RNG.normal(size=(L + 1, T, D)).astype(np.float32)
    att = RNG.random((L, H, T, T)).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    norms = analysis.token_norms(hidden)
    layer_figs = [
        cl.stream_figure(cl.stream_norms(hidden, hidden[1:]), 0, "CLS"),
        cl.layer_similarity_figure(analysis.layer_similarity(hidden)),
        cl.token_norms_figure(norms, analysis.high_norm_mask(norms), g),
        cl.cls_attention_facets(cl.cls_attention_maps(att, g), relative=True),
        cl.attention_distance_figure(RNG.random((L, H)) * 100, uniform_px=100.0),
        cl.entropy_figure(RNG.random((L, H)) * 5, T),
        cl.overlay_panels(image, [RNG.random((g, g)), RNG.random((g, g))], ["a", "b"], "t", colorbar_title="c"),
        cl.token_pca_figure(image, analysis.token_pca_rgb(hidden[-1], g), L, 16),
    ]
    mlp_bytes = sum(figure_bytes(f) for f in mlp_figs)
    layer_bytes = sum(figure_bytes(f) for f in layer_figs)
    assert mlp_bytes < FIGURE_PAYLOAD_GUARD["mlp"], mlp_bytes
    assert layer_bytes < FIGURE_PAYLOAD_GUARD["layers"], layer_bytes
