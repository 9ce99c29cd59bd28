"""One home per formula: each is checked against a hand-built case or an independent computation.

The CLS attention map, softmax, the FLOP count and the model runs the pages use (pooler
pre-activations, occluded forward passes, occlusion sensitivity, the per-layer residual tap) each
have one definition (vit_explain.analysis, vit_explain.flops, vit_explain.pipeline); the names kept
in vit_explain.charts must give the same numbers.
"""

import numpy as np
import pytest
import torch

from vit_explain import analysis, flops, pipeline
from vit_explain.capture import trace
from vit_explain.charts import attention as charts_attention
from vit_explain.charts import layers as charts_layers
from vit_explain.charts import prediction as charts_prediction
from vit_explain.config import ViTConfig
from vit_explain.model import ViTForImageClassification, ViTModel, backbone

RNG = np.random.default_rng(0)


def tiny_config(**overrides) -> ViTConfig:
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                  patch_size=8, num_labels=5, initializer_range=0.3)
    kwargs.update(overrides)
    return ViTConfig(**kwargs)


def tiny_classifier(**overrides) -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(tiny_config(**overrides)).eval()


def picture(config: ViTConfig, seed: int = 0) -> np.ndarray:
    """A [C, H, W] float32 picture in the model's normalised units."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(config.num_channels, config.image_size, config.image_size)).astype(np.float32)


def random_attention(*shape) -> np.ndarray:
    a = RNG.random(shape)
    return a / a.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------- the public names
def test_every_public_name_of_the_old_module_is_still_importable():
    from vit_explain.analysis import (  # noqa: F401  (the import is the test)
        HEAD_FUSIONS, apply_occlusion, attention_distance_all, attention_distance_map, attention_entropy,
        attention_rollout, cls_rollout_map, cls_similarity_matrix, cosine_matrix, high_norm_mask, high_norm_outliers,
        layer_similarity, logit_lens, mean_attention_distance, normalise_map, occlusion_delta, occlusion_mask,
        occlusion_sensitivity, patch_filter_pca, position_similarity, position_similarity_maps, shared_scale,
        sincos_2d_position_embeddings, token_norms, token_pca_rgb)
    assert all(hasattr(analysis, name) for name in analysis.__all__)


# ---------------------------------------------------------------------------------------- CLS attention map
def hand_built_attention() -> np.ndarray:
    """Two heads, CLS + a 2x2 grid (T = 5); only the CLS rows matter."""
    att = np.zeros((2, 5, 5))
    att[0, 0] = [0.5, 0.5, 0.0, 0.0, 0.0]  # head 0: half on itself, half on patch (0, 0)
    att[1, 0] = [0.0, 0.0, 0.25, 0.25, 0.5]  # head 1: patches (0, 1), (1, 0), (1, 1)
    att[:, 1:] = 0.2
    return att


def test_cls_attention_map_raw_mean_over_heads():
    m = analysis.cls_attention_map(hand_built_attention(), 2)
    np.testing.assert_allclose(m, [[0.25, 0.125], [0.125, 0.25]])
    assert m.dtype == np.float64 and m.shape == (2, 2)


def test_cls_attention_map_renormalised_over_the_patches():
    m = analysis.cls_attention_map(hand_built_attention(), 2, renormalise=True)
    np.testing.assert_allclose(m, [[1 / 3, 1 / 6], [1 / 6, 1 / 3]])  # 0.75 of the mass was on patches
    assert analysis.cls_attention_map(np.zeros((1, 5, 5)), 2, renormalise=True).sum() == 0  # no NaN


def test_cls_attention_map_head_fusions_and_kept_heads():
    att = hand_built_attention()
    np.testing.assert_allclose(analysis.cls_attention_map(att, 2, head_fusion="max"), [[0.5, 0.25], [0.25, 0.5]])
    np.testing.assert_allclose(analysis.cls_attention_map(att, 2, head_fusion="min"), np.zeros((2, 2)))
    per_head = analysis.cls_attention_map(att, 2, head_fusion=None)
    np.testing.assert_allclose(per_head, [[[0.5, 0.0], [0.0, 0.0]], [[0.0, 0.25], [0.25, 0.5]]])
    with pytest.raises(ValueError):
        analysis.cls_attention_map(att, 2, head_fusion="median")


def test_cls_attention_map_skips_prefix_tokens_and_keeps_row_major_order():
    g, S = 3, 4  # CLS + distillation token + 2 registers
    T = S + g * g
    att = np.zeros((1, T, T))
    att[0, 0, :S] = 0.1  # weight on the prefix tokens is never part of the map
    att[0, 0, S:] = np.arange(1, g * g + 1)
    expected = np.arange(1, g * g + 1, dtype=float).reshape(g, g)  # patch (r, c) is token S + r*g + c
    np.testing.assert_allclose(analysis.cls_attention_map(att, g), expected)
    np.testing.assert_allclose(analysis.cls_attention_map(att, g, num_prefix=S), expected)
    assert analysis.cls_attention_map(att, g)[0, 2] == 3 and analysis.cls_attention_map(att, g)[2, 0] == 7
    with pytest.raises(ValueError):
        analysis.cls_attention_map(att, g, num_prefix=1)  # 1 + 9 != 13 tokens
    with pytest.raises(ValueError):
        analysis.cls_attention_map(np.zeros((1, 4, 4)), 2)  # no CLS token before the 4 patches
    with pytest.raises(ValueError):
        analysis.cls_attention_map(np.zeros((5, 5)), 2)  # no head axis to fuse


def test_cls_attention_map_keeps_leading_axes():
    L, B, H, g = 3, 2, 4, 2
    att = random_attention(L, B, H, g * g + 1, g * g + 1)
    got = analysis.cls_attention_map(att, g)
    assert got.shape == (L, B, g, g)
    np.testing.assert_allclose(got, att[..., 0, 1:].mean(axis=2).reshape(L, B, g, g))
    assert analysis.cls_attention_map(att, g, head_fusion=None).shape == (L, B, H, g, g)
    torch_in = analysis.cls_attention_map(torch.tensor(att, dtype=torch.float32), g)
    np.testing.assert_allclose(torch_in, got, rtol=1e-6)


def test_cls_attention_map_of_a_traced_model_is_the_cls_row_of_probs():
    model = tiny_classifier()
    g = model.config.grid_size
    t = trace(model, torch.from_numpy(picture(model.config))[None])
    probs = t.tensors["layer.1.probs"][0].numpy()  # [H, T, T]
    expected = probs[:, 0, 1:].mean(0).reshape(g, g)
    np.testing.assert_allclose(analysis.cls_attention_map(t.attentions[1][0], g), expected, rtol=1e-6)


def test_the_other_cls_maps_are_this_one():
    g = 3
    att = random_attention(2, 4, g * g + 1, g * g + 1)  # [L, H, T, T]
    np.testing.assert_allclose(charts_prediction.cls_attention_map(att[-1], g),
                               analysis.cls_attention_map(att[-1], g, renormalise=True), rtol=1e-6)
    np.testing.assert_allclose(charts_layers.cls_attention_maps(att, g), analysis.cls_attention_map(att, g), rtol=1e-6)
    maps, to_itself = charts_attention.cls_maps(att[0], g)
    np.testing.assert_allclose(maps, analysis.cls_attention_map(att[0], g, head_fusion=None), rtol=1e-6)
    np.testing.assert_allclose(to_itself, att[0, :, 0, 0])
    rollout = analysis.attention_rollout(att)
    np.testing.assert_allclose(analysis.cls_rollout_map(rollout, g),
                               analysis.cls_attention_map(rollout, g, head_fusion=None, renormalise=True))


# ---------------------------------------------------------------------------------------- softmax
def test_softmax_rows_sum_to_one_and_match_torch():
    logits = RNG.normal(size=(6, 11)) * 5
    p = analysis.softmax(logits)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p, torch.softmax(torch.tensor(logits), dim=-1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(analysis.softmax(logits, axis=0), torch.softmax(torch.tensor(logits), dim=0).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(analysis.softmax(torch.tensor(logits[0])), p[0], rtol=1e-12)  # tensors too


def test_softmax_hand_values_and_no_overflow():
    np.testing.assert_allclose(analysis.softmax([0.0, np.log(3.0)]), [0.25, 0.75])
    p = analysis.softmax(np.array([1000.0, 1001.0, 1002.0]))  # exp(1000) overflows; the shift avoids it
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, analysis.softmax(np.array([0.0, 1.0, 2.0])))


def test_logit_lens_probabilities_are_the_softmax_of_its_logits():
    model = tiny_classifier()
    t = trace(model, torch.from_numpy(picture(model.config))[None])
    norm, head = pipeline.final_norm_and_head(model)
    lens = analysis.logit_lens([h[0] for h in t.hidden_states], norm, head)
    np.testing.assert_allclose(lens["probs"], analysis.softmax(lens["logits"]))
    # the last stage is the model's own prediction
    np.testing.assert_allclose(lens["probs"][-1], torch.softmax(t.logits[0].double(), -1).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------- FLOPs
def test_chart_flops_are_the_flops_module_and_the_hand_formula():
    C, S, P, D, L, M = 3, 32, 8, 32, 2, 37
    N, T = (S // P) ** 2, (S // P) ** 2 + 1
    hand = 2 * N * C * P * P * D + L * (2 * T * (4 * D * D + 2 * D * M) + 4 * T * T * D)
    assert charts_prediction.forward_flops(S, P, D, L, M, C) == hand
    config = tiny_config()
    assert flops.total_flops(config, classifier=False) == hand
    assert flops.total_flops(config) == hand + 2 * D * config.num_labels  # + the linear head on CLS


# ---------------------------------------------------------------------------------------- the model runs of the prediction page
def test_pooler_pre_activation_is_what_the_tanh_reads():
    torch.manual_seed(1)
    model = ViTModel(tiny_config(), add_pooling_layer=True).eval()
    t = trace(model, torch.from_numpy(picture(model.config))[None])
    cls = t.last_hidden_state[0, 0].numpy()
    pre = pipeline.pooler_pre_activation(model, cls)
    dense = model.pooler.dense
    np.testing.assert_allclose(pre, cls @ dense.weight.detach().numpy().T + dense.bias.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(np.tanh(pre), t.pooler_output[0].numpy(), atol=1e-6)
    assert pre.dtype == np.float32


def hide(pixels: np.ndarray, patches, patch_size: int, grid: int, value) -> np.ndarray:
    """Independent occlusion: fill each listed row-major patch's square with ``value`` (per channel)."""
    out = pixels.copy()
    value = np.broadcast_to(np.asarray(value, dtype=np.float32).reshape(-1, 1, 1), (out.shape[0], 1, 1))
    for index in patches:
        r, c = divmod(index, grid)
        out[:, r * patch_size:(r + 1) * patch_size, c * patch_size:(c + 1) * patch_size] = value
    return out


def test_occluded_output_matches_a_hand_masked_forward_pass():
    model = tiny_classifier()
    c = model.config
    x = picture(c)
    with torch.no_grad():
        plain = model(torch.from_numpy(x)[None]).logits[0].numpy()
        grey = model(torch.from_numpy(hide(x, [0, 5], c.patch_size, c.grid_size, 0.0))[None]).logits[0].numpy()
        black = model(torch.from_numpy(hide(x, [3], c.patch_size, c.grid_size, -1.0))[None]).logits[0].numpy()
    np.testing.assert_allclose(pipeline.occluded_output(model, x, ()), plain, atol=1e-6)
    np.testing.assert_allclose(pipeline.occluded_output(model, x, [5, 0], "grey"), grey, atol=1e-6)
    # black = pixel 0 = (0 - 0.5) / 0.5 = -1 with the default ViT normalisation
    assert pipeline.occlusion_fill(model, "black") == (-1.0, -1.0, -1.0)
    np.testing.assert_allclose(pipeline.occluded_output(model, x, [3], "black"), black, atol=1e-6)
    assert not np.allclose(grey, plain)


def test_occluded_output_of_a_model_without_classifier_is_its_feature():
    torch.manual_seed(2)
    for pooled in (True, False):
        model = ViTModel(tiny_config(), add_pooling_layer=pooled).eval()
        x = picture(model.config)
        with torch.no_grad():
            out = model(torch.from_numpy(x)[None])
        expected = (out.pooler_output if pooled else out.last_hidden_state[:, 0])[0].numpy()
        np.testing.assert_allclose(pipeline.occluded_output(model, x, ()), expected, atol=1e-6)


def test_occlusion_sensitivity_map_matches_a_loop_over_the_patches():
    model = tiny_classifier()
    c = model.config
    x = picture(c, seed=3)
    target = 2

    def prob(pixels):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(pixels)[None]).logits[0].double(), -1)[target].item()

    expected = np.array([prob(x) - prob(hide(x, [i], c.patch_size, c.grid_size, 0.0)) for i in range(c.num_patches)])
    seen = []
    got = pipeline.occlusion_sensitivity_map(model, x, target, batch=3, progress=lambda d, n: seen.append((d, n)))
    assert got.shape == (c.grid_size, c.grid_size) and got.dtype == np.float32
    np.testing.assert_allclose(got.ravel(), expected, atol=1e-6)
    assert seen[-1] == (c.num_patches, c.num_patches)


def test_occlusion_sensitivity_without_classifier_is_the_drop_of_feature_similarity():
    torch.manual_seed(3)
    model = ViTModel(tiny_config(), add_pooling_layer=True).eval()
    c = model.config
    x = picture(c, seed=4)

    def feature(pixels):
        with torch.no_grad():
            return model(torch.from_numpy(pixels)[None]).pooler_output[0].double().numpy()

    ref = feature(x)
    expected = []
    for i in range(c.num_patches):
        f = feature(hide(x, [i], c.patch_size, c.grid_size, 0.0))
        expected.append(1.0 - f @ ref / (np.linalg.norm(f) * np.linalg.norm(ref)))
    got = pipeline.occlusion_sensitivity_map(model, x, None)
    np.testing.assert_allclose(got.ravel(), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------- the residual stream
def test_layer_tap_residual_is_input_plus_the_scaled_attention_branch():
    model = tiny_classifier(layerscale_value=0.3)  # layer scale: the branch is multiplied before it is added
    c = model.config
    t = trace(model, torch.from_numpy(picture(c))[None])
    hidden = torch.cat(t.hidden_states).numpy()  # [L+1, T, D]
    residuals = pipeline.layer_tap(model, hidden, "residual")
    assert residuals.shape == (c.num_hidden_layers, c.num_tokens, c.hidden_size)
    for i, layer in enumerate(backbone(model).encoder.layer):
        x = torch.from_numpy(hidden[i])[None]
        with torch.no_grad():
            attended, _ = layer.attention(layer.layernorm_before(x))
            expected = (x + layer.layer_scale1(attended))[0].numpy()
            unscaled = (x + attended)[0].numpy()
        np.testing.assert_allclose(residuals[i], expected, atol=1e-5)
        assert not np.allclose(residuals[i], unscaled, atol=1e-3)  # forgetting layer scale would be wrong
    # and it is the same tensor the full trace taps
    full = trace(model, torch.from_numpy(picture(c))[None], taps=("residual",))
    np.testing.assert_allclose(residuals[1], full.tensors["layer.1.residual"][0].numpy(), atol=1e-5)


def test_stream_norms_split_each_layer_into_its_two_branches():
    L, T, D = 3, 5, 4
    hidden = RNG.normal(size=(L + 1, T, D))
    residuals = RNG.normal(size=(L, T, D))
    out = analysis.stream_norms(hidden, residuals)
    l, t = 1, 2
    assert out["attention"][l, t] == pytest.approx(np.sqrt(((residuals[l, t] - hidden[l, t]) ** 2).sum()))
    assert out["mlp"][l, t] == pytest.approx(np.sqrt(((hidden[l + 1, t] - residuals[l, t]) ** 2).sum()))
    assert out["stream"][l + 1, t] == pytest.approx(np.sqrt((hidden[l + 1, t] ** 2).sum()))
    np.testing.assert_allclose(charts_layers.stream_norms(hidden, residuals)["mlp"], out["mlp"], rtol=1e-6)


# ---------------------------------------------------------------------------------------- small formulas the pages use
def test_cosine_similarity_top_indices_and_map_correlation():
    a, b = np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0])
    assert float(analysis.cosine_similarity(a, b)) == pytest.approx(0.5)
    assert float(analysis.cosine_similarity(a, np.zeros(3))) == 0.0
    np.testing.assert_allclose(analysis.cosine_similarity(np.stack([a, b]), a), [1.0, 0.5])
    assert analysis.top_indices(np.array([[0.1, 0.5], [0.5, 0.2]]), 3).tolist() == [1, 2, 3]  # ties: lower index
    assert analysis.top_indices([3.0, 1.0], 5).tolist() == [0, 1]
    x, y = RNG.normal(size=(4, 4)), RNG.normal(size=(4, 4))
    assert analysis.map_correlation(x, y) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    assert np.isnan(analysis.map_correlation(x, np.ones((4, 4))))


def test_uniform_attention_distance_is_the_mean_distance_of_uniform_attention():
    g, P = 4, 16
    n = g * g
    uniform = np.full((1, n + 1, n + 1), 1.0 / (n + 1))
    assert analysis.uniform_attention_distance(g, P) == pytest.approx(
        float(analysis.mean_attention_distance(uniform, g, P)[0]))
    assert analysis.uniform_attention_distance(2, 10) == pytest.approx(10 * (8 * 1 + 4 * np.sqrt(2)) / 16)
    assert analysis.uniform_attention_distance(1, 16) == 0.0


def test_head_contributions_add_up_to_the_output_projection():
    T, D, H = 5, 8, 2
    context = RNG.normal(size=(T, D)).astype(np.float32)
    dense = torch.nn.Linear(D, D)
    parts = analysis.head_contributions(context, dense.weight.detach().numpy(), H)
    with torch.no_grad():
        expected = dense(torch.from_numpy(context)).double().numpy()
    np.testing.assert_allclose(parts.sum(0) + dense.bias.detach().double().numpy(), expected, atol=1e-5)


def test_token_mean_std_and_update_ratio():
    x = RNG.normal(size=(3, 7)) * 2 + 1
    mean, std = analysis.token_mean_std(x)
    np.testing.assert_allclose(mean, x.mean(1))
    np.testing.assert_allclose(std, np.sqrt(((x - x.mean(1, keepdims=True)) ** 2).mean(1)))
    ratio = analysis.update_ratio(np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(ratio, [0.2, 0.0])  # |(0, 1)| / |(3, 4)|; a zero stream gives 0
