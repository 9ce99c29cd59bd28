"""Comparing two models: linear CKA and its batch-by-batch form, the pairing of layers, patches and heads between
models of other depths and grids, the numbers the Compare page draws, and its figures (no Streamlit here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import our_model
from vit_explain import compare
from vit_explain.analysis import MinibatchCKA, hsic, linear_cka
from vit_explain.config import ViTConfig


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))  # a proper random orthogonal matrix


def _direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA written straight from its definition: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC = tr(KHLH)/(n-1)²."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic0(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic0(k, l) / math.sqrt(hsic0(k, k) * hsic0(l, l))


def _direct_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, term by term with explicit loops over the sums (no shared code with the module)."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    ones = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (ones @ kt @ lt @ ones)
    return (term1 + term2 - term3) / (n * (n - 3))


# ---------------------------------------------------------------------------------- linear CKA
@pytest.mark.parametrize("n, d", [(40, 7), (12, 60)])  # the feature form and the Gram form
def test_linear_cka_is_one_for_a_matrix_against_itself(n, d):
    x = _random(n, d, 0)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n, d1, d2", [(50, 6, 9), (15, 40, 30)])
def test_linear_cka_ignores_rotations_and_isotropic_scaling_of_either_side(n, d1, d2):
    x = _random(n, d1, 1)
    y = x[:, :min(d1, d2)] @ _random(min(d1, d2), d2, 2) + 0.7 * _random(n, d2, 3)  # related, not identical
    reference = linear_cka(x, y)
    assert 0.05 < reference < 0.999
    assert linear_cka(x @ _rotation(d1, 4), y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x, y @ _rotation(d2, 5)) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x, 0.02 * y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(y, x) == pytest.approx(reference, rel=1e-10)  # symmetric


@pytest.mark.parametrize("n, d1, d2", [(30, 5, 8), (10, 25, 40), (64, 64, 3)])
def test_linear_cka_equals_the_hsic_form_on_random_data(n, d1, d2):
    x, y = _random(n, d1, 6) + 2.0, _random(n, d2, 7) - 1.0  # offsets: the centring must happen
    assert linear_cka(x, y) == pytest.approx(_direct_cka(x, y), rel=1e-9)
    k, l = x @ x.T, y @ y.T
    assert hsic(k, l) == pytest.approx(_direct_cka(x, y) * math.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-9)
    assert hsic(k, l, unbiased=True) == pytest.approx(_direct_unbiased_hsic(k, l), rel=1e-9)


def test_linear_cka_takes_torch_tensors_and_refuses_mismatched_examples():
    x = _random(20, 4, 8)
    assert linear_cka(torch.from_numpy(x).float(), x) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same example"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="feature matrix"):
        linear_cka(x[None], x)
    assert math.isnan(linear_cka(np.ones((5, 3)), x[:5]))  # a constant side has no structure to compare


# ---------------------------------------------------------------------------------- batch by batch
def test_one_biased_batch_gives_linear_cka_of_every_pair_of_layers():
    a = [_random(30, 8, s) for s in range(3)]
    b = [a[0] @ _random(8, 5, 10) + 0.3 * _random(30, 5, 11), _random(30, 5, 12)]
    cka = MinibatchCKA(3, 2, unbiased=False)
    cka.update(a, b)
    expected = np.array([[linear_cka(x, y) for y in b] for x in a])
    np.testing.assert_allclose(cka.cross(), expected, rtol=1e-10)
    np.testing.assert_allclose(cka.within_a(), [[linear_cka(x, y) for y in a] for x in a], rtol=1e-10)
    np.testing.assert_allclose(np.diag(cka.within_b()), 1.0)


def test_batches_add_up_their_hsic_and_the_unbiased_form_removes_the_width_bias():
    rng = np.random.default_rng(13)
    batches = [([rng.normal(size=(16, 200))], [rng.normal(size=(16, 300))]) for _ in range(3)]
    biased, unbiased = MinibatchCKA(1, 1, unbiased=False), MinibatchCKA(1, 1)
    for a, b in batches:
        biased.update(a, b)
        unbiased.update(a, b)
    # independent features, many more of them than examples: plain CKA is far from 0, the unbiased one is not
    assert biased.cross()[0, 0] > 0.6
    assert abs(unbiased.cross()[0, 0]) < 0.15
    # the accumulated value is the ratio of the summed per-batch HSICs
    grams = [(a[0] @ a[0].T, b[0] @ b[0].T) for a, b in batches]
    kl = sum(_direct_unbiased_hsic(k, l) for k, l in grams)
    kk = sum(_direct_unbiased_hsic(k, k) for k, _ in grams)
    ll = sum(_direct_unbiased_hsic(l, l) for _, l in grams)
    assert unbiased.cross()[0, 0] == pytest.approx(kl / math.sqrt(kk * ll), rel=1e-9)
    assert unbiased.batches == 3 and unbiased.examples == 48
    np.testing.assert_allclose(np.diag(unbiased.within_a()), 1.0)


def test_minibatch_cka_is_invariant_too_and_checks_its_input():
    x, y = _random(24, 6, 20), _random(24, 9, 21)
    y = y + x @ _random(6, 9, 22)
    plain, turned = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    plain.update([x], [y])
    turned.update([2.5 * x @ _rotation(6, 23)], [y @ _rotation(9, 24)])
    assert turned.cross()[0, 0] == pytest.approx(plain.cross()[0, 0], rel=1e-9)
    with pytest.raises(ValueError, match="layers"):
        plain.update([x, x], [y])
    with pytest.raises(ValueError, match="too small"):
        plain.update([x[:3]], [y[:3]])


# ---------------------------------------------------------------------------------- pairing
def test_layers_pair_by_relative_depth_first_with_first_and_last_with_last():
    assert compare.layer_pairs(6, 6) == list(range(6))
    assert compare.layer_pairs(6, 4) == [0, 1, 1, 2, 2, 3]
    assert compare.layer_pairs(4, 6) == [0, 2, 3, 5]
    twelve = compare.layer_pairs(12, 6)
    assert twelve[0] == 0 and twelve[-1] == 5 and twelve == sorted(twelve) and set(twelve) == set(range(6))
    assert compare.layer_pairs(2, 12) == [0, 11]
    assert compare.layer_pairs(1, 5) == [4] and compare.layer_pairs(5, 1) == [0] * 5  # a lone layer is the last
    assert compare.relative_depth(0, 6) == 0.0 and compare.relative_depth(5, 6) == 1.0
    for la, lb in ((7, 3), (3, 7), (12, 4), (24, 6)):  # the facing layer is the nearest in depth
        for i, j in enumerate(compare.layer_pairs(la, lb)):
            depth = compare.relative_depth(i, la)
            best = min(abs(depth - compare.relative_depth(k, lb)) for k in range(lb))
            assert abs(depth - compare.relative_depth(j, lb)) == pytest.approx(best)
    with pytest.raises(ValueError):
        compare.relative_depth(6, 6)


@pytest.mark.parametrize("ga, gb", [(8, 8), (8, 16), (16, 8), (14, 8), (4, 7), (7, 4), (2, 14)])
def test_a_patch_faces_the_patch_covering_its_centre(ga, gb):
    for p in range(ga * ga):
        q = compare.facing_patch(p, ga, gb)
        r, c = divmod(p, ga)
        rb, cb = divmod(q, gb)
        centre = ((r + 0.5) / ga, (c + 0.5) / ga)  # as a share of the picture's side
        assert rb / gb <= centre[0] < (rb + 1) / gb and cb / gb <= centre[1] < (cb + 1) / gb, (p, q)
    if ga == gb:
        assert [compare.facing_patch(p, ga, gb) for p in range(ga * ga)] == list(range(ga * ga))


def test_patch_mapping_examples():
    assert compare.facing_patch(9, 8, 16) == 3 * 16 + 3  # (row 1, col 1) of 8 x 8: its centre is in (3, 3) of 16 x 16
    assert compare.facing_patch(51, 16, 8) == 9  # and back
    assert compare.facing_patch(0, 4, 7) == 0 and compare.facing_patch(15, 4, 7) == 48
    with pytest.raises(ValueError):
        compare.facing_patch(16, 4, 7)


def test_heads_face_the_same_number_where_both_have_it():
    assert compare.facing_head(2, 4) == 2
    assert compare.facing_head(5, 4) is None and compare.facing_head(None, 4) is None
    a = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=6, intermediate_size=37, image_size=32,
                  patch_size=4)
    b = ViTConfig(hidden_size=36, num_attention_heads=3, num_hidden_layers=2, intermediate_size=37, image_size=64,
                  patch_size=16)
    pairing = compare.Pairing.of(a, b)
    assert (pairing.grid_a, pairing.grid_b, pairing.shared_heads, pairing.common_grid) == (8, 4, 3, 4)
    assert [pairing.layer(i) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert pairing.patch(9) == compare.facing_patch(9, 8, 4) == 0 and pairing.patch(63) == 15
    assert pairing.head(3) is None and pairing.head(1) == 1


# ---------------------------------------------------------------------------------- tokens on a common grid
def test_pool_matrix_averages_the_patches_each_coarse_patch_overlaps():
    np.testing.assert_allclose(compare.pool_matrix(5, 5), np.eye(25))
    w = compare.pool_matrix(4, 2)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[0].reshape(4, 4), np.pad(np.full((2, 2), 0.25), ((0, 2), (0, 2))))
    w = compare.pool_matrix(3, 2)  # the middle row and column are split half and half
    np.testing.assert_allclose(w[0].reshape(3, 3), [[4 / 9, 2 / 9, 0], [2 / 9, 1 / 9, 0], [0, 0, 0]])
    np.testing.assert_allclose(compare.pool_matrix(14, 8).sum(axis=1), 1.0)


def test_paired_tokens_keep_cls_drop_other_prefix_tokens_and_pool_the_patches():
    rng = np.random.default_rng(30)
    hidden = rng.normal(size=(3, 1 + 4 + 16, 5))  # [L+1, CLS + 4 registers + a 4x4 grid, D]
    out = compare.paired_tokens(hidden, 4, 2)
    assert out.shape == (3, 5, 5)
    np.testing.assert_allclose(out[:, 0], hidden[:, 0])
    patches = hidden[:, 5:].reshape(3, 4, 4, 5)
    np.testing.assert_allclose(out[:, 1], patches[:, :2, :2].mean(axis=(1, 2)))
    np.testing.assert_allclose(out[:, 4], patches[:, 2:, 2:].mean(axis=(1, 2)))
    same = compare.paired_tokens(hidden, 4, 4)
    np.testing.assert_allclose(same, np.concatenate([hidden[:, :1], hidden[:, 5:]], axis=1))


# ---------------------------------------------------------------------------------- maps and per-model numbers
def _uniform_attention(layers: int, heads: int, tokens: int) -> np.ndarray:
    return np.full((layers, heads, tokens, tokens), 1.0 / tokens)


def test_maps_relative_to_uniform_share_one_scale_across_grids():
    for g in (2, 4, 7):
        attn = _uniform_attention(3, 2, 1 + g * g)
        np.testing.assert_allclose(compare.cls_maps(attn, g), 1.0)
        np.testing.assert_allclose(compare.query_map(attn[0], g * g - 1, g), 1.0)
        np.testing.assert_allclose(compare.rollout_map(attn, g, through=1), 1.0)
    peaked = np.zeros((2, 2))
    peaked[1, 0] = 0.3  # all the patches' share on one of four patches (the rest went to CLS)
    np.testing.assert_allclose(compare.relative_to_uniform(peaked), [[0, 0], [4.0, 0]])
    np.testing.assert_allclose(compare.relative_to_uniform(np.zeros((3, 3))), 0.0)
    attn = np.random.default_rng(31).dirichlet(np.ones(17), size=(2, 4, 17))  # [L, H, T, T], rows sum to 1
    one = compare.query_map(attn[1], 5, 4, head=2)
    np.testing.assert_allclose(one, attn[1, 2, 1 + 5, 1:].reshape(4, 4) / attn[1, 2, 6, 1:].sum() * 16)
    np.testing.assert_allclose(compare.cls_maps(attn, 4, head=3)[0],
                               attn[0, 3, 0, 1:].reshape(4, 4) / attn[0, 3, 0, 1:].sum() * 16)


def test_distance_by_depth_is_a_share_of_the_side_and_uniform_attention_sits_on_its_line():
    config = ViTConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=37, image_size=64,
                       patch_size=16)
    d = compare.distance_by_depth(_uniform_attention(3, 2, 17), config)
    np.testing.assert_allclose(d["depth"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(d["share"], d["pixels"] / 64)
    np.testing.assert_allclose(d["share"], d["uniform_share"])


def test_lens_by_depth_ends_on_the_models_own_answer():
    model = our_model(seed=3)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    states = compare.hidden_states(model, pixels)
    lens = compare.lens_by_depth(model, states)
    with torch.no_grad():
        probs = torch.softmax(model(pixels).logits[0], -1).numpy()
    assert lens["final_class"] == int(probs.argmax())
    assert lens["final_prob"][-1] == pytest.approx(float(probs.max()), abs=1e-5)
    np.testing.assert_allclose(lens["depth"], [0.0, 1.0])
    assert len(lens["top1"]) == model.config.num_hidden_layers


# ---------------------------------------------------------------------------------- the layer similarity of two models
def _png(seed: int, size: int = 40) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_layer_cka_of_two_models_with_other_depths_and_grids():
    a = our_model(seed=1, num_hidden_layers=3)  # 32 px, patches of 8: a 4 x 4 grid
    b = our_model(seed=2, image_size=48, patch_size=6, num_hidden_layers=2)  # an 8 x 8 grid
    seen = []
    result = compare.layer_cka(a, b, [_png(i) for i in range(3)], progress=lambda f, text: seen.append(f))
    assert result["cross"].shape == (4, 3) and result["within_a"].shape == (4, 4)
    assert result["within_b"].shape == (3, 3)
    assert (result["pictures"], result["tokens"], result["grid"]) == (3, 17, 4)
    np.testing.assert_allclose(np.diag(result["within_a"]), 1.0)
    assert np.isfinite(result["cross"]).all()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    same = compare.layer_cka(a, a, [_png(i) for i in range(2)])  # a model against itself: A against B is the reference
    np.testing.assert_allclose(same["cross"], same["within_a"], atol=1e-9)
    summary = compare.cka_summary(same["cross"], same["within_b"])
    assert summary["diagonal"] == pytest.approx(1.0) and summary["overall"] <= 1.0 + 1e-9
    assert summary["within_b"] == pytest.approx(np.mean(same["within_b"][~np.eye(4, dtype=bool)]))


def test_random_weights_of_a_models_architecture_are_where_a_training_run_starts():
    """The "before" of the Compare page's before/after shortcut: random weights (seed 0) for the trained model's
    config are exactly the weights the Training page starts a run from."""
    from vit_explain import trainer
    from vit_explain.ui import get_model

    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    start = trainer.build_model(config, trainer.CLASS_NAMES)
    before = get_model("random", start.config)
    for (name, p), (_, q) in zip(start.state_dict().items(), before.state_dict().items()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------------------------- figures
def test_figures_name_their_models_and_fit_their_scales():
    from vit_explain.charts import compare as charts
    from vit_explain.charts.common import figure_bytes

    rng = np.random.default_rng(40)
    maps_a, maps_b = rng.random((12, 14, 14)) * 3, rng.random((6, 8, 8))
    fig = charts.cls_depth_facets(maps_a, maps_b, "ViT-B/16", "CIFAR-10", layer_a=4, layer_b=2, zmax=3.0)
    bars = [t.colorbar.title.text for t in fig.data if t.showscale]
    assert bars == ["× uniform<br>fitted 0–3"]
    texts = [a.text for a in fig.layout.annotations]
    assert "<b>A</b> · ViT-B/16" in texts and "<b>B</b> · CIFAR-10" in texts
    assert texts.count("<b>layer 4 ◂</b>") == 1 and texts.count("<b>layer 2 ◂</b>") == 1
    assert len(fig.data) == 18 and len(fig.layout.shapes) == 2

    photo = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    small = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    pair = charts.map_pair(photo, rng.random((14, 14)), small, rng.random((8, 8)), ["A: x", "B: y"], "t", zmax=2.5,
                           colorbar_title="× uniform<br>fitted 0–2.5", marks=(3, 1),
                           clicks=(np.arange(196), np.zeros(64, dtype=int)))
    clicks = [t for t in pair.data if t.type == "scatter"]
    assert [len(t.customdata) for t in clicks] == [196, 64]
    images = [t for t in pair.data if t.type == "image"]
    assert images[1].dx == pytest.approx(32 / 224)  # the small picture is sent pixel-repeated, in its own pixels

    d = compare.distance_by_depth(rng.dirichlet(np.ones(197), size=(12, 12, 197)), ViTConfig())
    dist = charts.distance_figure(d["depth"], d["share"], d["depth"][:6], d["share"][:6, :3], "A", "B",
                                  uniform_a=d["uniform_share"], uniform_b=0.3, pixels_a=d["pixels"],
                                  pixels_b=d["pixels"][:6, :3], marked_depth=0.5)
    assert dist.layout.xaxis.title.text == "relative depth" and "share of the side" in dist.layout.yaxis.title.text
    assert dist.layout.yaxis.range[1] >= max(float(d["share"].max()), 0.3)
    cka = charts.cka_figure(rng.random((13, 7)), rng.random((13, 13)), "A", "B", pairs=compare.layer_pairs(12, 6))
    assert cka.layout.xaxis.title.text == "B: after layer" and cka.layout.xaxis2.title.text == "A: after layer"
    assert list(cka.data[0].y)[:2] == ["emb.", "0"] and cka.data[0].zmax == 1.0
    total = sum(figure_bytes(f) for f in (fig, pair, pair, dist, cka))
    assert total < 600_000, total  # at ViT-B/16 sizes: well within the page's 2 MB
