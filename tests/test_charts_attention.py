"""Unit tests of the self-attention page's figure builders (vit_explain.charts.attention)."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from helpers import figure_title, picture_of
from perf_budgets import FIGURE_PAYLOAD_GUARD
from vit_explain import analysis
from vit_explain.charts import attention as A
from vit_explain.charts.common import figure_bytes


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _random_probs(h, t, seed=0):
    rng = np.random.default_rng(seed)
    return _softmax(rng.normal(size=(h, t, t)) * 2).astype(np.float32)


# ---------------------------------------------------------------------------------- colours and tiles
def test_colormap_ends_are_viridis_ends():
    lut = A.colormap_lut("Viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0x44, 0x01, 0x54)
    assert tuple(lut[-1]) == (0xFD, 0xE7, 0x25)


def test_colorize_uses_the_fixed_range_and_clips():
    lut = A.colormap_lut()
    out = A.colorize(np.array([-1.0, 0.0, 0.5, 1.0, 7.0, np.nan]), 0.0, 1.0)
    assert (out[0] == lut[0]).all() and (out[1] == lut[0]).all()
    assert (out[3] == lut[-1]).all() and (out[4] == lut[-1]).all()
    assert (out[2] == lut[128]).all()  # 0.5 * 255 rounds to 128
    assert (out[5] == lut[0]).all()  # NaN drawn as the bottom colour, not an error
    # the same value on a stretched range is brighter
    assert (A.colorize(np.array([0.1]), 0.0, 0.1)[0] == lut[-1]).all()


def test_tile_size_is_a_multiple_of_the_grid():
    for g in (1, 2, 7, 14, 16, 32):
        size = A.tile_size_for(g)
        assert size % g == 0 and size >= g


def test_blend_map_blocks_and_alpha_extremes():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    values = np.array([[0.0, 1.0], [0.25, 0.75]])
    full = A.blend_map(image, values, alpha=1.0, size=32)
    lut = A.colormap_lut()
    assert full.shape == (32, 32, 3)
    # alpha 1: every 16x16 block is exactly its value's colour
    assert (full[:16, :16] == lut[0]).all() and (full[:16, 16:] == lut[-1]).all()
    assert (full[16:, :16] == lut[64]).all()
    # alpha 0: the grey picture, the same in all three channels
    grey = A.blend_map(image, values, alpha=0.0, size=32)
    expected = np.rint(image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(grey[..., 0].astype(int) - expected).max() <= 1
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    with pytest.raises(ValueError, match="multiple"):
        A.blend_map(image, np.zeros((3, 3)), size=32)


def test_image_uri_round_trip():
    flat = np.zeros((20, 20, 3), dtype=np.uint8)
    flat[5:10, 5:10] = (200, 10, 30)
    uri = A.image_source(flat)
    assert uri.startswith("data:image/png")  # flat colours compress best as PNG: lossless
    assert (picture_of(uri) == flat).all()


def test_overlay_tiles_one_per_map():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    maps = rng.random((3, 7, 7))
    tiles = A.overlay_tiles(image, maps, tile=56)
    assert len(tiles) == 3 and tiles[0].startswith("data:image/jpeg")
    assert picture_of(tiles[0]).shape == (56, 56, 3)
    lossless = A.overlay_tiles(image, maps, tile=56, fmt="png")
    for uri, m in zip(lossless, maps):
        assert (picture_of(uri) == A.blend_map(image, m, size=56)).all()


# ---------------------------------------------------------------------------------- maps from attention
def test_query_maps_take_the_query_row_over_the_patches():
    g, h = 3, 2
    t = g * g + 1
    probs = _random_probs(h, t)
    maps, to_cls = A.query_maps(probs, query_patch=4, grid=g)  # patch 4 = token 5, the centre
    assert maps.shape == (h, g, g)
    np.testing.assert_array_equal(maps[1].ravel(), probs[1, 5, 1:])
    np.testing.assert_array_equal(to_cls, probs[:, 5, 0])
    np.testing.assert_allclose(maps.sum((1, 2)) + to_cls, 1.0, rtol=1e-6)


def test_query_map_of_a_head_that_looks_at_itself():
    g = 4
    t = g * g + 1
    probs = np.eye(t, dtype=np.float32)[None]  # every token attends only to itself
    maps, to_cls = A.query_maps(probs, query_patch=6, grid=g)
    assert maps[0, 1, 2] == 1.0 and maps.sum() == 1.0 and to_cls[0] == 0.0


def test_cls_maps_take_row_zero():
    probs = _random_probs(3, 5)
    maps, to_self = A.cls_maps(probs, 2)
    np.testing.assert_array_equal(maps.reshape(3, 4), probs[:, 0, 1:])
    np.testing.assert_array_equal(to_self, probs[:, 0, 0])


def test_patch_grid_rejects_wrong_token_counts():
    with pytest.raises(ValueError, match="grid"):
        A.patch_grid(np.zeros(8), 3)  # fewer tokens than patches


def test_patch_grid_takes_the_last_g2_tokens_after_any_prefix():
    row = np.arange(12.0)  # CLS, a distillation token and a register, then a 3x3 grid
    np.testing.assert_array_equal(A.patch_grid(row, 3), np.arange(3.0, 12.0).reshape(3, 3))


def test_uniform_distance_by_hand_and_matches_analysis():
    # 2x2 grid, patch size 1: 4 self-pairs (0), 8 neighbours (1), 4 diagonals (sqrt 2)
    assert A.uniform_attention_distance(2, 1) == pytest.approx((8 + 4 * math.sqrt(2)) / 16)
    g, p = 5, 16
    uniform = np.full((1, g * g + 1, g * g + 1), 1.0 / (g * g + 1))
    expected = float(analysis.mean_attention_distance(uniform, g, p)[0])
    assert A.uniform_attention_distance(g, p) == pytest.approx(expected)


def test_head_contributions_rebuild_the_projection():
    rng = np.random.default_rng(2)
    t, dim, heads = 7, 12, 3
    context = rng.normal(size=(t, dim))
    weight = rng.normal(size=(dim, dim))
    bias = rng.normal(size=dim)
    parts = A.head_contributions(context, weight, heads)
    assert parts.shape == (heads, t, dim)
    np.testing.assert_allclose(parts.sum(0) + bias, context @ weight.T + bias, atol=1e-12)
    # head 1 owns columns 4..7 of context: zero them and only its term vanishes
    silenced = context.copy()
    silenced[:, 4:8] = 0
    again = A.head_contributions(silenced, weight, heads)
    assert np.abs(again[1]).max() == 0
    np.testing.assert_allclose(again[[0, 2]], parts[[0, 2]])
    with pytest.raises(ValueError, match="divisible"):
        A.head_contributions(context, weight, 5)


def test_block_mean_keeps_cls_and_averages_the_rest():
    m = np.arange(11 * 11, dtype=np.float32).reshape(11, 11)
    same, rb, cb = A.block_mean(m, 20, 20)
    assert (rb, cb) == (1, 1) and (same == m).all()
    small, rb, cb = A.block_mean(m, 6, 6, keep_first=True)
    assert (rb, cb) == (2, 2) and small.shape == (6, 6)
    assert small[0, 0] == m[0, 0]
    np.testing.assert_allclose(small[0, 1], m[0, 1:3].mean())
    np.testing.assert_allclose(small[1, 1], m[1:3, 1:3].mean())
    np.testing.assert_allclose(small[1, 0], m[1:3, 0].mean())


# ---------------------------------------------------------------------------------- figures
def test_token_matrix_scales_and_cls_marks():
    probs = _random_probs(1, 10)[0]
    fig = A.token_matrix(probs, "attention", kind="probs")
    hm = fig.data[0]
    assert (hm.zmin, hm.zmax) == (0.0, 1.0) and hm.z.dtype == np.float32
    assert len(fig.layout.shapes) == 2  # CLS row and CLS column
    scores = np.random.default_rng(3).normal(size=(10, 10))
    sfig = A.token_matrix(scores, "scores", kind="scores")
    s = sfig.data[0]
    assert s.zmid == 0.0 and s.zmin == -s.zmax and s.zmax == pytest.approx(np.abs(scores).max(), rel=1e-6)
    assert A.token_matrix(probs, "t", kind="probs", zmax=0.2).data[0].zmax == 0.2
    with pytest.raises(ValueError):
        A.token_matrix(probs, "x", kind="other")


def test_token_matrix_shrinks_huge_maps():
    t = 1025
    fig = A.token_matrix(np.full((t, t), 1.0 / t, dtype=np.float32), "big", kind="probs")
    z = fig.data[0].z
    assert z.shape[0] <= A.MAX_DISPLAY_TOKENS and z.shape == (z.shape[0], z.shape[0])
    np.testing.assert_allclose(z, 1.0 / t, rtol=1e-5)
    assert "blocks of" in fig.layout.xaxis.title.text


def test_qkv_heatmaps_share_one_signed_scale():
    rng = np.random.default_rng(4)
    q, k, v = (rng.normal(size=(17, 8)) * s for s in (1, 2, 3))
    fig = A.qkv_heatmaps(q, k, v, "QKV")
    assert len(fig.data) == 3
    bound = max(np.abs(q).max(), np.abs(k).max(), np.abs(v).max())
    for trace in fig.data:
        assert trace.zmin == pytest.approx(-bound, rel=1e-6) and trace.zmax == pytest.approx(bound, rel=1e-6)
        assert trace.z.shape == (17, 8)
    assert [t.showscale for t in fig.data] == [True, False, False]


def test_qkv_heatmaps_shrink_wide_heads():
    wide = np.ones((5, 768), dtype=np.float32)
    fig = A.qkv_heatmaps(wide, wide, wide, "QKV")
    assert fig.data[0].z.shape[1] <= A.MAX_DISPLAY_DIMS and "averaged" in figure_title(fig)


def test_head_split_reads_the_vector_as_heads_by_dims():
    v = np.arange(12, dtype=np.float32)
    fig = A.head_split(v, 3, 1, "split")
    np.testing.assert_array_equal(fig.data[0].z, v.reshape(3, 4))
    (rect,) = fig.layout.shapes
    assert (rect.y0, rect.y1) == (0.5, 1.5)


def test_overlay_facets_one_panel_per_head_with_query_marks():
    g, h = 4, 6
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    maps = _random_probs(h, g * g + 1)[:, 3, 1:].reshape(h, g, g)
    tiles = A.overlay_tiles(image, maps)
    fig = A.overlay_facets(tiles, maps, [f"head {i}" for i in range(h)], "where heads look from query patch 2",
                           mark_patch=2)
    images = [t for t in fig.data if isinstance(t, go.Image)]
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(images) == h and len(heat) == h
    assert all(t.z.dtype == np.float32 for t in heat)
    np.testing.assert_array_equal(heat[5].z, maps[5].astype(np.float32))
    assert len(fig.layout.shapes) == h
    assert {(s.x0, s.y0) for s in fig.layout.shapes} == {(1.5, -0.5)}  # patch 2 = row 0, col 2
    bar = [t for t in fig.data if isinstance(t, go.Scatter)][0]
    assert (bar.marker.cmin, bar.marker.cmax, bar.marker.showscale) == (0.0, 1.0, True)
    assert [a.text for a in fig.layout.annotations] == [f"head {i}" for i in range(h)]
    for i in range(h):
        suffix = "" if i == 0 else str(i + 1)
        for axis in (f"xaxis{suffix}", f"yaxis{suffix}"):
            lo, hi = fig.layout[axis].domain
            assert 0.0 <= lo < hi <= 1.0


def test_panel_layout_panels_do_not_overlap():
    layout, notes = A.panel_layout(12, 4, titles=[str(i) for i in range(12)])
    boxes = []
    for i in range(12):
        s = "" if i == 0 else str(i + 1)
        boxes.append((*layout[f"xaxis{s}"]["domain"], *layout[f"yaxis{s}"]["domain"]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_x = min(a[1], b[1]) - max(a[0], b[0])
            overlap_y = min(a[3], b[3]) - max(a[2], b[2])
            assert overlap_x <= 1e-9 or overlap_y <= 1e-9
    assert len(notes) == 12 and A.facet_columns(12) == 4 and A.facet_columns(1) == 1


def test_query_picker_is_clickable_and_marks_the_query():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    fig = A.query_picker(image, 16, 6, "pick")
    clicks = [t for t in fig.data if isinstance(t, go.Scatter) and t.customdata is not None]
    assert len(clicks) == 1
    np.testing.assert_array_equal(np.asarray(clicks[0].customdata), np.arange(16))
    assert clicks[0].hoverinfo == "none"  # "skip" would make the markers unclickable
    (rect,) = fig.layout.shapes  # patch 6 = row 1, col 2
    assert (rect.x0, rect.y0) == (2 * 16 - 0.5, 16 - 0.5)


def test_entropy_and_distance_bars_have_their_references():
    fig = A.entropy_bars(np.array([1.0, 2.0]), 197, "entropy", chosen=1)
    assert fig.layout.shapes[0].y0 == pytest.approx(math.log(197))
    assert fig.data[0].marker.color[1] == A.QUERY_COLOR
    dfig = A.distance_bars(np.array([10.0, np.nan]), 50.0, "distance")
    assert dfig.layout.shapes[0].y0 == 50.0
    # the reference is named in the legend, not written over the bars
    assert not fig.layout.annotations and not dfig.layout.annotations
    assert [t.name for t in dfig.data if t.showlegend] == ["uniform attention: 50.0 px"]
    assert np.isfinite(dfig.data[0].y).all()


def test_vit_b_sized_figures_stay_small():
    """All of the page's figures at ViT-B/16 sizes (T=197, H=12, d=64) stay well under the page budget."""
    rng = np.random.default_rng(5)
    g, h, t, d = 14, 12, 197, 64
    image = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    probs = _random_probs(h, t)
    qmaps, _ = A.query_maps(probs, 37, g)
    cmaps, _ = A.cls_maps(probs, g)
    titles = [f"head {i}" for i in range(h)]
    q = rng.normal(size=(h, t, d)).astype(np.float32)
    figs = [
        A.query_picker(image, 16, 37, "pick"),
        A.overlay_facets(A.overlay_tiles(image, qmaps), qmaps, titles, "query", mark_patch=37),
        A.overlay_facets(A.overlay_tiles(image, cmaps), cmaps, titles, "cls"),
        A.head_split(q[:, 0].reshape(-1), h, 0, "split"),
        A.qkv_heatmaps(q[0], q[1], q[2], "qkv"),
        A.token_matrix(probs[0], "s", kind="scores"),
        A.token_matrix(probs[0], "p", kind="probs"),
        A.entropy_bars(np.ones(h), t, "e"),
        A.distance_bars(np.ones(h), 1.0, "d"),
        A.contribution_heatmap(rng.random((h, t)), "c"),
        A.token_norm_lines({"a": np.ones(t), "b": np.ones(t)}, "n"),
    ]
    total = sum(figure_bytes(f) for f in figs)
    assert total < FIGURE_PAYLOAD_GUARD["attention"], total


def test_cls_destinations_split_the_cls_row_by_token_group():
    rng = np.random.default_rng(0)
    names = ["CLS", "REG0", "REG1", "REG2"]
    T = len(names) + 9
    probs = rng.random((2, T, T))
    probs /= probs.sum(-1, keepdims=True)
    artefacts = np.zeros(9, dtype=bool)
    artefacts[4] = True
    groups = A.cls_destinations(probs, names, 3, artefacts)
    assert list(groups) == ["CLS itself", "register tokens", "high-norm patches", "other patches"]
    np.testing.assert_allclose(sum(groups.values()), 1.0, atol=1e-6)
    np.testing.assert_allclose(groups["register tokens"], probs[:, 0, 1:4].sum(-1), atol=1e-6)
    np.testing.assert_allclose(groups["high-norm patches"], probs[:, 0, 4 + 4], atol=1e-6)
    # a classic ViT: CLS and patches only; the figure stacks one bar per head
    plain = A.cls_destinations(probs[:, 3:, 3:] / probs[:, 3:, 3:].sum(-1, keepdims=True), ["CLS"], 3)
    assert list(plain) == ["CLS itself", "other patches"]
    fig = A.cls_destination_bars(groups, "where CLS looks")
    assert fig.layout.barmode == "stack" and len(fig.data) == 4
    with pytest.raises(ValueError):
        A.cls_destinations(probs, ["CLS"], 3)  # 13 tokens are not CLS + 9 patches


def test_attention_range_fits_what_is_shown_or_is_fixed():
    from vit_explain.charts.common import attention_range, scale_label

    a, b = np.full((4, 4), 0.01, np.float32), np.full((4, 4), 0.02, np.float32)
    b[1, 1] = 0.08
    assert attention_range(a, b) == (0.0, pytest.approx(0.08))  # one range for every panel of a figure
    assert attention_range(a, b, fixed=True) == (0.0, 1.0)
    assert attention_range(np.zeros((2, 2))) == (0.0, 1.0)  # nothing to fit: fall back to 0..1
    assert scale_label("weight", 0.0, 0.0834, False) == "weight<br>fitted 0–0.0834"
    assert scale_label("weight", 0.0, 1.0, True) == "weight<br>fixed 0–1"


def test_token_matrix_says_its_scale_on_the_colour_bar():
    probs = np.full((5, 5), 0.2, np.float32)
    fitted = A.token_matrix(probs, "p", kind="probs", zmax=0.2, fixed=False)
    assert fitted.data[0].zmax == 0.2 and "fitted 0–0.2" in fitted.data[0].colorbar.title.text
    assert "fixed 0–1" in A.token_matrix(probs, "p", kind="probs").data[0].colorbar.title.text


def test_head_panels_wrap_onto_rows():
    assert [A.facet_columns(n) for n in (1, 2, 3, 4, 6, 9, 12, 16, 24)] == [1, 2, 2, 2, 3, 3, 4, 4, 6]
