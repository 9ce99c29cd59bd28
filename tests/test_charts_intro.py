"""Unit tests of the first pages' maths and figure builders: FLOPs, mosaics, conv = linear, similarity maps."""

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import figure_json, figure_title, picture_of
from vit_explain import ViTConfig, ViTForImageClassification, ViTModel, analysis
from vit_explain.charts import embeddings as E, overview as O, patching as PA
from vit_explain.flops import architecture, class_summary, total_flops

TINY = dict(image_size=4, patch_size=2, hidden_size=4, num_attention_heads=2, intermediate_size=8,
            num_hidden_layers=1, num_labels=3)


# ------------------------------------------------------------------------------- FLOPs and parameters
def test_flops_hand_count_tiny_config():
    # C=3, P=2 -> 12 numbers per patch; N=4 patches, T=5 tokens, D=4, H=2, d=2, M=8, K=3.
    config = ViTConfig(**TINY)
    conv = 2 * 4 * 12 * 4          # 384
    qkv = 3 * 2 * 5 * 4 * 4        # 480
    scores = 2 * 2 * 5 * 5 * 2     # 200
    weighted = 2 * 2 * 5 * 5 * 2   # 200
    out_proj = 2 * 5 * 4 * 4       # 160
    mlp = 2 * (2 * 5 * 4 * 8)      # 640
    head = 2 * 4 * 3               # 24
    assert total_flops(config) == conv + qkv + scores + weighted + out_proj + mlp + head == 2088
    blocks = {b.label: b for b in architecture(config)}
    assert blocks["PatchEmbeddings"].flops == 384
    assert blocks["scores Q·Kᵀ"].flops == 200 and blocks["weights·V"].flops == 200
    assert blocks["ViTSelfAttention"].flops == qkv + scores + weighted
    assert blocks["ViTAttention"].flops == qkv + scores + weighted + out_proj
    assert blocks["classifier"].shape == (1, 3)
    assert blocks["ViTIntermediate"].shape == (1, 5, 8)


def test_vit_b16_numbers():
    config = ViTConfig()
    # 2 FLOPs per multiply-add: ViT-B/16 is the well-known ~17.6 G multiply-adds
    assert total_flops(config, classifier=False, has_pooler=True) / 2 == pytest.approx(17.56e9, rel=2e-3)
    # the JAX original's pinned parameter counts (test_model_parity.py pins them on the model itself)
    assert architecture(ViTConfig(num_labels=1000))[0].params == 86_567_656
    assert architecture(config, classifier=False, has_pooler=True)[0].params == 86_389_248


@pytest.mark.parametrize("classifier,pooler,bias", [(True, False, True), (False, True, False), (False, False, True)])
def test_params_and_flops_match_the_real_model(classifier, pooler, bias):
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                       intermediate_size=37, qkv_bias=bias, num_labels=5)
    model = ViTForImageClassification(config) if classifier else ViTModel(config, add_pooling_layer=pooler)
    blocks = architecture(config, has_pooler=pooler, classifier=classifier)
    assert blocks[0].params == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:  # torch's own count of matmul/conv FLOPs
        model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert blocks[0].flops == counter.get_total_flops()


def test_tree_is_consistent():
    blocks = architecture(ViTConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
                                    intermediate_size=128), has_pooler=True)
    ids = [b.id for b in blocks]
    assert len(ids) == len(set(ids))
    seen = set()
    for b in blocks:  # parents come first
        assert b.parent == "" or b.parent in seen
        seen.add(b.id)
    for b in blocks:  # a box's values are the sums of what it contains
        children = [c for c in blocks if c.parent == b.id]
        if children:
            assert b.params == sum(c.params for c in children)
            assert b.flops == sum(c.flops for c in children)
    rows = {r["cls"]: r for r in class_summary(blocks)}
    assert rows["ViTLayer"]["count"] == 3 and rows["LayerNorm"]["count"] == 7
    assert rows["ViTForImageClassification"]["flop_share"] == 1.0
    assert rows["ViTEncoder"]["flops"] == rows["ViTLayer"]["flops"]
    assert 0 < rows["ViTPooler"]["param_share"] < 1


# ------------------------------------------------------------------------------- overview figures
@pytest.mark.parametrize("metric", ["flops", "params"])
def test_treemap(metric):
    blocks = architecture(ViTConfig(num_hidden_layers=2))
    fig = O.architecture_treemap(blocks, metric=metric)
    trace = fig.data[0]
    assert trace.type == "treemap" and trace.branchvalues == "remainder"
    assert trace.values.dtype == np.float32
    total = blocks[0].flops if metric == "flops" else blocks[0].params
    assert float(trace.values.astype(np.float64).sum()) == pytest.approx(total, rel=1e-5)
    parents = {b.parent for b in blocks}
    assert all(v == 0 for v, b in zip(trace.values, blocks) if b.id in parents)  # only leaves carry area
    assert O.METRICS[metric] in figure_title(fig)
    assert "[1, 197, 768]" in trace.text[blocks.index(next(b for b in blocks if b.label == "ViTLayer 0"))]
    with pytest.raises(ValueError):
        O.architecture_treemap(blocks, metric="bytes")


def test_treemap_depth_follows_layer_count():
    deep = O.architecture_treemap(architecture(ViTConfig()))
    shallow = O.architecture_treemap(architecture(ViTConfig(num_hidden_layers=2)))
    assert deep.data[0].maxdepth == 5 and shallow.data[0].maxdepth == 7


def test_prediction_figure():
    fig = O.prediction_figure([("cat", 0.7), ("dog", 0.2), ("fox", 0.1)])
    bar = fig.data[0]
    assert bar.orientation == "h" and list(bar.y) == ["cat", "dog", "fox"]
    assert bar.x.dtype == np.float32 and bar.x[0] == pytest.approx(0.7)
    assert fig.layout.xaxis.range[0] == 0 and fig.layout.xaxis.range[1] > 1  # room for a label beside a 100 % bar
    assert fig.layout.xaxis.tickvals[-1] == 1.0
    assert fig.layout.xaxis.title.text.startswith("probability") and figure_title(fig)


def test_human():
    assert O.human(35.1e9) == "35.1 G" and O.human(1234) == "1.23 k" and O.human(12) == "12"


# ------------------------------------------------------------------------------- patching helpers
def test_mosaic_places_tiles_with_gaps():
    tiles = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    out = PA.mosaic(tiles, cols=3, gap=1, fill=np.nan)
    assert out.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(out[0:2, 4:7], tiles[1])
    np.testing.assert_array_equal(out[3:5, 4:7], tiles[4])
    assert np.isnan(out[2]).all() and np.isnan(out[:, 3]).all()  # gap row and column
    assert np.isnan(out[3:5, 8:11]).all()  # the unused sixth cell
    centres = PA.tile_centres(5, 3, 2, 3, gap=1)
    np.testing.assert_allclose(centres[4], [4 + 1.0, 3 + 0.5])


def test_patch_tiles_follow_the_models_patch_order():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    tiles = PA.patch_tiles(image, 4)
    assert tiles.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(tiles[1], image[0:4, 4:8])  # row 0, column 1
    np.testing.assert_array_equal(tiles[2], image[4:8, 0:4])  # row 1, column 0


def test_conv_as_linear_equals_the_strided_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, kernel_size=4, stride=4)
    pixels = torch.randn(1, 3, 8, 8)
    out = conv(pixels).detach()  # [1, 6, 2, 2]
    patch = pixels[0, :, 4:8, 0:4].reshape(-1).numpy()  # patch (1, 0) flattened (c, p1, p2)
    linear = PA.conv_as_linear(conv.weight.detach().numpy(), conv.bias.detach().numpy(), patch)
    np.testing.assert_allclose(linear, out[0, :, 1, 0].numpy(), atol=1e-5)
    wrong_order = PA.conv_as_linear(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                                    pixels[0, :, 4:8, 0:4].permute(1, 2, 0).reshape(-1).numpy())
    assert np.abs(wrong_order - out[0, :, 1, 0].numpy()).max() > 1e-2  # (p1, p2, c) order is not the same


def test_patch_figures():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    fig = PA.patch_tiles_figure(image, 8, selected=5)
    clicks = fig.data[1]
    assert clicks.customdata.ndim == 1 and clicks.customdata.dtype == np.int32  # browsers echo 1-D data back as numbers
    np.testing.assert_array_equal(clicks.customdata, np.arange(16))
    assert clicks.hoverinfo != "skip" and fig.data[0].source.startswith("data:image/jpeg;base64,")
    assert len(fig.layout.shapes) == 1 and "16 patches" in figure_title(fig)

    vector = rng.normal(size=3 * 8 * 8).astype(np.float32)
    fig = PA.pixel_vector_figure(vector, 3, 8, "pixels")
    assert [t.name for t in fig.data] == ["red", "green", "blue"]
    assert all(t.y.dtype == np.float32 and t.y.size == 64 for t in fig.data)
    np.testing.assert_array_equal(fig.data[1].y, vector[64:128])
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text

    fig = PA.embedding_vector_figure(vector[:10], vector[:10] + 1e-7, "embedding")
    assert len(fig.data) == 2 and fig.data[0].y.dtype == np.float32 and fig.data[1].y.dtype == np.float32
    zoom = PA.patch_zoom_figure(image[:8, :8], "zoom")
    assert zoom.data[0].z.shape == (8, 8, 3)


def test_compact_images_keeps_the_picture_and_shrinks_the_payload():
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)
    fig = go.Figure(go.Image(z=image))  # a raw-pixel picture, as a figure built elsewhere may have
    before = len(pio.to_json(fig, validate=False))
    PA.compact_images(fig)
    assert fig.data[0].z is None and fig.data[0].source.startswith("data:image/jpeg;base64,")
    decoded = picture_of(fig.data[0].source)
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 3
    assert len(pio.to_json(fig, validate=False)) < before / 2
    png = PA.image_source(image, "png")
    exact = picture_of(png)
    np.testing.assert_array_equal(exact, image)  # PNG is lossless


def common_image_figure(image):
    from vit_explain.charts.common import image_with_grid

    return image_with_grid(image, 16, "picture")


def test_filter_pca_figures():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(40, 3, 4, 4)).astype(np.float32)
    components, ratios = analysis.patch_filter_pca(weight, k=10)
    fig = PA.filter_pca_figure(components, ratios, cols=5)
    assert len(fig.layout.annotations) == 10
    assert fig.data[0].source.startswith("data:image/png;base64,")
    assert fig.data[1].customdata.dtype == np.float32
    assert "4 x 4" in figure_title(fig)
    tiles = PA.filter_tiles(components)
    assert tiles.shape == (10, 4, 4, 3) and tiles.dtype == np.uint8 and tiles.max() == 255
    var = PA.variance_figure(ratios)
    assert var.data[0].y.dtype == np.float32
    assert var.data[1].y[-1] == pytest.approx(float(ratios.sum()), rel=1e-6)
    assert var.layout.yaxis.title.text and var.layout.xaxis.title.text
    grey = PA.filter_tiles(components[:, :1])
    assert grey.shape[-1] == 3 and (grey[..., 0] == grey[..., 2]).all()


# ------------------------------------------------------------------------------- embeddings helpers
def test_cosine_matrix_matches_analysis():
    rng = np.random.default_rng(3)
    pos = rng.normal(size=(17, 24))  # CLS + 4 x 4
    pos[5] = 0.0  # a zero vector: similarity 0, no NaN
    ours = E.cosine_matrix(pos[1:])
    np.testing.assert_allclose(ours, analysis.position_similarity(pos), atol=1e-6)
    assert ours.dtype == np.float32 and not np.isnan(ours).any()


def test_sincos_similarity_peaks_at_the_patch_and_falls_with_distance():
    g = 8
    sim = E.cosine_matrix(analysis.sincos_2d_position_embeddings(g, 64))
    maps = sim.reshape(g, g, g, g)
    for i, j in ((0, 0), (3, 5), (7, 2)):
        assert np.unravel_index(np.argmax(maps[i, j]), (g, g)) == (i, j)
    distances, means, stds = E.similarity_by_distance(sim, g)
    assert distances[0] == 0 and means[0] == pytest.approx(1.0)
    assert np.all(np.diff(means[:6]) < 0)  # nearer pairs are more alike
    assert means.dtype == np.float32 and stds.min() >= 0


def test_similarity_by_distance_hand_case():
    sim = np.arange(16, dtype=np.float64).reshape(4, 4)  # 2 x 2 grid, made-up numbers
    d, m, _ = E.similarity_by_distance(sim, 2)
    np.testing.assert_allclose(d, [0, 1, 1.5])  # sqrt(2) rounds to 1.5
    np.testing.assert_allclose(m, [np.mean([0, 5, 10, 15]), np.mean([1, 2, 4, 7, 8, 11, 13, 14]), np.mean([3, 6, 9, 12])])


def test_similarity_mosaic_and_its_click_layer():
    g = 5
    maps = np.random.default_rng(4).normal(size=(g, g, g, g)).astype(np.float32)
    mosaic, shown = E.similarity_mosaic(maps)
    assert mosaic.shape == (g * (g + 1) - 1,) * 2
    np.testing.assert_array_equal(mosaic[2 * 6:2 * 6 + 5, 3 * 6:3 * 6 + 5], maps[2, 3])
    assert np.isnan(mosaic[5]).all() and np.isnan(mosaic[:, 11]).all()
    np.testing.assert_array_equal(shown, np.arange(g * g))
    fig = E.similarity_grid_figure(maps, selected=13)
    heat, clicks = fig.data
    assert heat.z.dtype == np.float32 and (heat.zmin, heat.zmax) == (-1, 1)
    assert clicks.customdata.ndim == 1 and list(clicks.customdata) == list(range(g * g))
    x0 = fig.layout.shapes[0].x0
    assert x0 == pytest.approx(3 * 6 - 0.5)  # patch 13 = row 2, column 3
    stretched = E.similarity_grid_figure(maps, zrange=(0.2, 0.9))
    assert (stretched.data[0].zmin, stretched.data[0].zmax) == (0.2, 0.9)


def test_big_grids_show_every_kth_map():
    assert E.mosaic_step(14) == 1
    step = E.mosaic_step(32)
    assert step > 1 and -(-32 // step) * 33 - 1 <= E.MAX_MOSAIC_SIDE
    maps = np.zeros((32, 32, 32, 32), dtype=np.float32)
    mosaic, shown = E.similarity_mosaic(maps, step)
    assert mosaic.shape[0] <= E.MAX_MOSAIC_SIDE and shown[1] == step


def test_stretched_range_ignores_the_diagonal():
    sim = np.array([[1.0, 0.2, -0.1], [0.2, 1.0, 0.5], [-0.1, 0.5, 1.0]])
    assert E.stretched_range(sim) == pytest.approx((-0.1, 0.5))


def test_token_heatmaps_window_and_scales():
    rng = np.random.default_rng(5)
    T, D = 10, 200
    tokens = rng.normal(size=(T, D)).astype(np.float32)
    position = 0.01 * rng.normal(size=(T, D)).astype(np.float32)
    fig = E.token_heatmaps(tokens, position, tokens + position, start=150, width=64)
    assert len(fig.data) == 3 and all(t.z.shape == (T, 64) and t.z.dtype == np.float32 for t in fig.data)
    assert fig.data[0].x[0] == 136  # the window is moved back inside D
    own = [t.zmax for t in fig.data]
    assert own[1] < own[0] / 10  # each panel on its own scale: the small position part stays visible
    shared = E.token_heatmaps(tokens, position, tokens + position, shared_scale=True)
    assert len({t.zmax for t in shared.data}) == 1 and sum(t.showscale for t in shared.data) == 1
    assert "CLS" in [a.text for a in fig.layout.annotations]
    # title, subtitle and the three panel titles each get their own line (they overlapped at 70 px)
    assert fig.layout.title.subtitle.text and fig.layout.margin.t >= 100
    assert E.dimension_window(197, 768) == 96 and E.dimension_window(1025, 768) == 23


def test_norms_overlay_and_distance_figures():
    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(5, 8)).astype(np.float32)
    fig = E.token_norms_figure(tokens, tokens * 0, tokens)
    assert len(fig.data) == 3 and fig.data[0].y.dtype == np.float32
    np.testing.assert_allclose(fig.data[0].y, np.linalg.norm(tokens, axis=1), rtol=1e-6)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    overlay = E.similarity_overlay_figure(image, rng.uniform(-1, 1, size=(2, 2)), 16, 3)
    heat = [t for t in overlay.data if t.type == "heatmap"][0]
    assert (heat.zmin, heat.zmax, heat.zmid) == (-1, 1, 0) and heat.z.dtype == np.float32
    assert [t for t in overlay.data if t.type == "scatter"][0].customdata.size == 4
    dist = E.distance_figure(*E.similarity_by_distance(np.eye(4), 2))
    assert dist.layout.xaxis.title.text and dist.layout.yaxis.title.text and figure_title(dist)
    for f in (fig, overlay, dist):
        assert figure_json(f)["layout"]["title"]["text"]
