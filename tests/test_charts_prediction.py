"""Figures and small maths of the prediction page (vit_explain.charts.prediction): pure, no Streamlit."""

from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from PIL import Image

from helpers import figure_json, picture_of, plotly_array
from perf_budgets import FIGURE_PAYLOAD_GUARD, PHOTO_SOURCE_BYTES
from vit_explain.charts import prediction as charts
from vit_explain.charts.common import figure_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_cls_attention_map_averages_heads_and_renormalises():
    # grid 2 -> T = 5; two heads with known CLS rows
    att = np.zeros((2, 5, 5))
    att[0, 0] = [0.5, 0.5, 0.0, 0.0, 0.0]  # head 0: half on CLS, half on patch 0
    att[1, 0] = [0.0, 0.0, 0.25, 0.25, 0.5]
    m = charts.cls_attention_map(att, 2)
    # mean over heads of the patch part: [0.25, 0.125, 0.125, 0.25], sum 0.75 -> divide by 0.75
    np.testing.assert_allclose(m, np.array([[1 / 3, 1 / 6], [1 / 6, 1 / 3]]), rtol=1e-6)
    assert m.dtype == np.float32 and m.shape == (2, 2)
    assert charts.cls_attention_map(np.zeros((1, 5, 5)), 2).sum() == 0  # no mass stays zero, no NaN
    with pytest.raises(ValueError):
        charts.cls_attention_map(np.zeros((1, 4, 4)), 2)


def test_token_mean_std_matches_numpy():
    x = np.random.default_rng(0).normal(size=(7, 12)) * 3 + 1
    mean, std = charts.token_mean_std(x)
    np.testing.assert_allclose(mean, x.mean(1), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(1), rtol=1e-6)


def test_forward_flops_of_vit_b16_is_the_published_figure():
    # ViT-B/16 at 224 is quoted at 17.6 G multiply-adds, i.e. about 35.2 GFLOPs
    flops = charts.forward_flops(224, 16, 768, 12, 3072)
    assert 34.5e9 < flops < 35.6e9
    assert charts.forward_flops(64, 8, 128, 6, 512) < flops / 100


def test_image_source_is_lossless_for_flat_pictures_and_small_for_photos():
    flat = np.zeros((32, 32, 3), dtype=np.uint8)
    flat[8:24, 8:24] = (250, 20, 30)
    src = charts.image_source(flat)
    assert src.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(picture_of(src), flat)
    photo = np.asarray(Image.open(ROOT / "assets" / "samples" / "astronaut.jpg").convert("RGB").resize((224, 224)))
    src = charts.image_source(photo)
    assert src.startswith("data:image/jpeg;base64,")
    assert len(src) < PHOTO_SOURCE_BYTES
    assert np.abs(picture_of(src).astype(float) - photo).mean() < 4  # close to the original


def test_image_source_remembers_recent_pictures_by_their_pixels():
    from vit_explain.charts import common

    rng = np.random.default_rng(3)
    first = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    uri = common.image_source(first)
    assert common.image_source(first.copy()) is uri  # same pixels, another array: the remembered string
    changed = first.copy()
    changed[0, 0, 0] ^= 1
    assert common.image_source(changed) != uri  # one pixel differs: encoded afresh
    assert common.image_source(first, "png") != uri and picture_of(common.image_source(first, "png")).shape == (40, 40, 3)
    for i in range(common._SOURCES_MAX + 5):  # the memory stays bounded
        common.image_source(np.full((4, 4, 3), i, dtype=np.uint8))
    assert len(common._SOURCES) == common._SOURCES_MAX


def test_cls_before_after_strips_carry_the_values_on_symmetric_scales():
    before = np.linspace(-6, 3, 20)
    after = np.linspace(-1, 2, 20)
    spec = figure_json(charts.cls_before_after(before, after))
    heatmaps = [t for t in spec["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 2
    np.testing.assert_allclose(plotly_array(heatmaps[0]["z"]).ravel(), before, rtol=1e-6)
    np.testing.assert_allclose(plotly_array(heatmaps[1]["z"]).ravel(), after, rtol=1e-6)
    assert heatmaps[0]["zmin"] == pytest.approx(-6) and heatmaps[0]["zmax"] == pytest.approx(6)
    assert heatmaps[1]["zmin"] == pytest.approx(-2) and heatmaps[1]["zmax"] == pytest.approx(2)
    assert "final layer norm" in spec["layout"]["title"]["text"]


def test_token_stats_has_before_and_after_for_mean_and_std():
    rng = np.random.default_rng(2)
    before = charts.token_mean_std(rng.normal(size=(5, 8)) * 4)
    after = charts.token_mean_std(rng.normal(size=(5, 8)))
    spec = figure_json(charts.token_stats(before, after))
    assert len(spec["data"]) == 4
    np.testing.assert_allclose(plotly_array(spec["data"][0]["y"]), before[0], rtol=1e-6)
    np.testing.assert_allclose(plotly_array(spec["data"][3]["y"]), after[1], rtol=1e-6)


def test_tanh_figure_puts_the_points_on_the_curve():
    pre = np.random.default_rng(3).normal(size=64) * 2
    spec = figure_json(charts.tanh_figure(pre, np.tanh(pre)))
    curve, points, hist = spec["data"]
    np.testing.assert_allclose(plotly_array(curve["y"]), np.tanh(plotly_array(curve["x"])), atol=1e-6)
    np.testing.assert_allclose(plotly_array(points["y"]), np.tanh(plotly_array(points["x"])), atol=1e-6)
    assert plotly_array(curve["x"]).max() >= np.abs(pre).max()  # the curve covers every point
    assert hist["type"] == "histogram"


def test_head_bars():
    spec = figure_json(charts.logits_bar(["automobile", "truck"], np.array([2.0, -1.0])))
    assert spec["layout"]["title"]["text"].startswith("Top 2 logits")
    assert spec["data"][0]["orientation"] == "h" and spec["data"][0]["y"] == ["automobile", "truck"]  # one name a row
    spec = figure_json(charts.probability_bar(["a", "b"], np.array([0.7, 0.2])))
    assert spec["layout"]["xaxis"]["range"][0] == 0 and spec["data"][0]["text"] == ["70.0%", "20.0%"]


def test_logit_lens_heatmap_fixed_scale_and_rows():
    probs = np.array([[0.1, 0.2], [0.3, 0.1], [0.9, 0.05]])
    spec = figure_json(charts.logit_lens_heatmap(probs, ["embeddings", "layer 1", "layer 2"], ["cat", "dog"],
                                             ["x", "dog", "cat"]))
    trace = spec["data"][0]
    assert trace["zmin"] == 0 and trace["zmax"] == 1
    np.testing.assert_allclose(plotly_array(trace["z"]), probs, rtol=1e-6)
    assert trace["y"] == ["embeddings", "layer 1", "layer 2"] and trace["x"] == ["cat", "dog"]


def test_occlusion_view_draws_masked_patches_where_they_are():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    attention = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    spec = figure_json(charts.occlusion_view(image, attention, 16, [1, 2]))
    shapes = spec["layout"]["shapes"]
    assert len(shapes) == 2
    # patch 1 is row 0, col 1; patch 2 is row 1, col 0
    assert (shapes[0]["x0"], shapes[0]["y0"]) == (15.5, -0.5)
    assert (shapes[1]["x0"], shapes[1]["y0"]) == (-0.5, 15.5)
    heat = next(t for t in spec["data"] if t["type"] == "heatmap")
    np.testing.assert_allclose(plotly_array(heat["z"]), attention / 0.4, rtol=1e-6)  # relative to the max
    assert heat["zmin"] == 0 and heat["zmax"] == 1
    clicks = next(t for t in spec["data"] if t["type"] == "scatter")
    assert list(plotly_array(clicks["customdata"])) == [0, 1, 2, 3] and clicks["hoverinfo"] == "none"
    assert "(2 hidden)" in spec["layout"]["title"]["text"]


def test_before_after_bars_show_the_change():
    spec = figure_json(charts.before_after_bars(["a", "b"], np.array([0.6, 0.3]), np.array([0.2, 0.5])))
    assert [t["name"] for t in spec["data"]] == ["original image", "with patches hidden"]
    assert spec["data"][1]["text"] == ["-40.0%", "+20.0%"]
    # nothing hidden: no "-0.0%" / "+0.0%" from rounding noise
    same = figure_json(charts.before_after_bars(["a", "b"], np.array([0.6, 0.3]), np.array([0.6 - 1e-7, 0.3 + 1e-7])))
    assert same["data"][1]["text"] == ["no change", "no change"]


@pytest.mark.parametrize("signed", [False, True])
def test_side_by_side_shares_one_colour_scale(signed):
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    maps = [np.eye(2), np.ones((2, 2)) * 0.5, np.array([[1.0, -0.5], [0.0, 0.2]])]
    spec = figure_json(charts.side_by_side(image, maps, ["a", "b", "c"], zmin=-1 if signed else 0, zmax=1, signed=signed))
    heat = [t for t in spec["data"] if t["type"] == "heatmap"]
    pictures = [t for t in spec["data"] if t["type"] == "image"]
    assert len(heat) == 3 and len(pictures) == 3
    assert {(t["zmin"], t["zmax"]) for t in heat} == {(-1 if signed else 0, 1)}
    assert sum(bool(t.get("showscale")) for t in heat) == 1
    assert all(t["colorscale"] == heat[0]["colorscale"] for t in heat)
    if signed:
        assert all(t["zmid"] == 0 for t in heat)
    for i, t in enumerate(heat):
        np.testing.assert_allclose(plotly_array(t["z"]), maps[i], rtol=1e-6)


def test_page_payload_at_vit_b16_is_well_under_two_megabytes():
    rng = np.random.default_rng(4)
    T, D, g, L = 197, 768, 14, 12
    image = np.asarray(Image.open(ROOT / "assets" / "samples" / "astronaut.jpg").convert("RGB").resize((224, 224)))
    hidden = rng.normal(size=(T, D)).astype(np.float32)
    att = rng.dirichlet(np.ones(T), size=(12, T)).astype(np.float32)
    amap = charts.cls_attention_map(att, g)
    src = charts.image_source(image)
    labels = [f"class {i}" for i in range(20)]
    figs = [
        charts.cls_before_after(hidden[0], hidden[0]),
        charts.token_stats(charts.token_mean_std(hidden), charts.token_mean_std(hidden)),
        charts.tanh_figure(hidden[0], np.tanh(hidden[0])),
        charts.logits_bar(labels, rng.normal(size=20)),
        charts.probability_bar(labels, rng.random(20) / 20),
        charts.logit_lens_heatmap(rng.random((L + 1, 20)), [str(i) for i in range(L + 1)], labels),
        charts.occlusion_view(image, amap, 16, list(range(0, 196, 7)), source=src),
        charts.before_after_bars(labels, rng.random(20), rng.random(20)),
        charts.side_by_side(image, [amap, amap, -amap], ["a", "b", "c"], zmin=-1, zmax=1, signed=True, source=src),
    ]
    sizes = [figure_bytes(f) for f in figs]
    assert sum(sizes) < FIGURE_PAYLOAD_GUARD["prediction"], sizes
    # arrays travel as base64 typed arrays, not as lists of numbers
    assert '"bdata"' in pio.to_json(figs[0], validate=False)
