"""resample(): trained weights on another patch size, image size, head count or depth."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from helpers import our_model, pixels
from vit_explain import ViTConfig, ViTForImageClassification, ViTModel
from vit_explain.capture import trace
from vit_explain.preprocess import PreprocessSpec
from vit_explain.weights import interpolate_position_embeddings, resample, resize_patch_kernel


def make_model(seed=0, **changes):
    """helpers.our_model with 3 layers (one to drop, one to keep) and 6 classes, named as a loaded model is."""
    model = our_model(seed, labels=6, **{"num_hidden_layers": 3, "intermediate_size": 48, **changes})
    model.source = "test model"
    return model


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    assert set(a) == set(b)
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def test_no_op_resample_changes_nothing():
    model = make_model()
    before = snapshot(model)
    same = resample(model)
    assert same is not model and type(same) is ViTForImageClassification and not same.training
    assert_same_state(same.state_dict(), before)
    assert same.config == model.config
    x = pixels()
    with torch.no_grad():
        assert torch.equal(same(x).logits, model(x).logits)
    # naming the current values explicitly is a no-op too
    explicit = resample(model, patch_size=8, image_size=32, num_heads=4, num_layers=3)
    assert_same_state(explicit.state_dict(), before)
    assert same.source == "test model"


def test_input_model_is_left_untouched():
    model = make_model()
    before, config = snapshot(model), model.config
    resample(model, patch_size=4, image_size=48, num_heads=2, num_layers=1)
    assert_same_state(model.state_dict(), before)
    assert model.config == config


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keeping_the_first_layers_reproduces_those_hidden_states(keep):
    model = make_model()
    x = pixels()
    full = trace(model, x)
    short = resample(model, num_layers=keep)
    assert short.config.num_hidden_layers == keep and len(short.vit.encoder.layer) == keep
    cut = trace(short, x)
    assert len(cut.hidden_states) == keep + 1
    for i in range(keep + 1):
        torch.testing.assert_close(cut.hidden_states[i], full.hidden_states[i], atol=1e-6, rtol=0)
    # and the head reads the final norm of layer `keep`'s output
    with torch.no_grad():
        expected = model.classifier(model.vit.layernorm(full.hidden_states[keep])[:, 0])
    torch.testing.assert_close(cut.logits, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [0, 4, -1])
def test_layer_count_out_of_range(bad):
    with pytest.raises(ValueError, match="between 1 and 3"):
        resample(make_model(), num_layers=bad)


# --------------------------------------------------------------------------- heads


def test_regrouped_heads_reuse_the_same_projections():
    model = make_model()
    x = pixels()
    old = trace(model, x)
    for heads in (1, 2, 8, 16, 32):
        new_model = resample(model, num_heads=heads)
        assert new_model.config.num_attention_heads == heads
        assert {k: v.shape for k, v in new_model.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
        assert_same_state(new_model.state_dict(), snapshot(model))
        new = trace(new_model, x)
        torch.testing.assert_close(new.hidden_states[0], old.hidden_states[0], atol=0, rtol=0)
        for layer in range(3):
            assert new.attentions[layer].shape == (2, heads, 17, 17)
            torch.testing.assert_close(new.attentions[layer].sum(-1), torch.ones(2, heads, 17), atol=1e-5, rtol=0)
        # layer 0 sees the same input, so its queries are the same numbers, split differently...
        q_old = rearrange(old.tensors["layer.0.q"], "b h t d -> b t (h d)")
        q_new = rearrange(new.tensors["layer.0.q"], "b h t d -> b t (h d)")
        torch.testing.assert_close(q_new, q_old, atol=1e-6, rtol=0)
        # ...and its attention is softmax(q_h k_h^T / sqrt(D / heads)) over the new split
        k_new = new.tensors["layer.0.k"]
        expected = torch.softmax(new.tensors["layer.0.q"] @ k_new.transpose(-1, -2) / (32 / heads) ** 0.5, dim=-1)
        torch.testing.assert_close(new.attentions[0], expected, atol=1e-5, rtol=0)
        # the maps themselves do change
        assert not torch.allclose(new.logits, old.logits, atol=1e-4)


def test_head_count_must_divide_the_hidden_size():
    with pytest.raises(ValueError) as info:
        resample(make_model(), num_heads=3)
    assert "allowed head counts: 1, 2, 4, 8, 16, 32" in str(info.value)


# --------------------------------------------------------------------------- image size


def test_new_image_size_interpolates_position_embeddings_only():
    model = make_model()
    bigger = resample(model, image_size=48)
    assert bigger.config.image_size == 48 and bigger.config.grid_size == 6 and bigger.config.patch_size == 8
    old_state, new_state = model.state_dict(), bigger.state_dict()
    pos_old = old_state["vit.embeddings.position_embeddings"]
    pos_new = new_state["vit.embeddings.position_embeddings"]
    assert pos_new.shape == (1, 37, 32)
    assert torch.equal(pos_new[:, 0], pos_old[:, 0])  # CLS kept
    for key in old_state:
        if key != "vit.embeddings.position_embeddings":
            assert torch.equal(old_state[key], new_state[key]), key
    with torch.no_grad():
        assert bigger(pixels(48)).logits.shape == (2, 6)
    with pytest.raises(ValueError, match="pixel_values"):
        bigger(pixels(32))
    assert bigger.preprocess_spec.size == (48, 48)
    assert "image_size 48" in bigger.source


def test_position_interpolation_properties():
    # a constant grid stays constant (up and down), and the same grid is returned unchanged
    pos = torch.cat([torch.full((1, 1, 4), -2.0), torch.full((1, 16, 4), 3.0)], dim=1)
    for grid in (2, 3, 7):
        out = interpolate_position_embeddings(pos, grid)
        assert out.shape == (1, 1 + grid * grid, 4)
        torch.testing.assert_close(out[:, 1:], torch.full((1, grid * grid, 4), 3.0), atol=1e-6, rtol=0)
        assert torch.equal(out[:, 0], pos[:, 0])
    assert torch.equal(interpolate_position_embeddings(pos, 4), pos)
    # upsampling 4 -> 8 then averaging 2x2 blocks comes back close to the original grid
    smooth = torch.linspace(0, 1, 16).reshape(1, 16, 1).repeat(1, 1, 3)
    pos = torch.cat([torch.zeros(1, 1, 3), smooth], dim=1)
    up = interpolate_position_embeddings(pos, 8)[:, 1:]
    pooled = F.avg_pool2d(rearrange(up, "1 (h w) d -> 1 d h w", h=8), 2)
    torch.testing.assert_close(rearrange(pooled, "1 d h w -> 1 (h w) d"), smooth, atol=0.03, rtol=0)


def test_preprocess_spec_follows_the_image_size():
    model = make_model()
    model.preprocess_spec = PreprocessSpec(size=(37, 37), do_center_crop=True, crop_size=(32, 32), resample=3,
                                           image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
    spec = resample(model, image_size=64).preprocess_spec
    assert spec.size == (74, 74) and spec.crop_size == (64, 64) and spec.do_center_crop
    assert spec.resample == 3 and spec.image_mean == (0.485, 0.456, 0.406)
    assert resample(model, num_layers=1).preprocess_spec == model.preprocess_spec
    model.preprocess_spec = PreprocessSpec(size=(32, 32))
    assert resample(model, image_size=16).preprocess_spec == dataclasses.replace(model.preprocess_spec, size=(16, 16))


# --------------------------------------------------------------------------- patch size


def upsample_each_patch(x, p, new_p):
    """Resize every p x p patch to new_p x new_p on its own (bilinear), keeping the grid."""
    patches = rearrange(x, "b c (gh p1) (gw p2) -> (b gh gw) c p1 p2", p1=p, p2=p)
    resized = F.interpolate(patches, size=(new_p, new_p), mode="bilinear", align_corners=False, antialias=False)
    return rearrange(resized, "(b gh gw) c p1 p2 -> b c (gh p1) (gw p2)", b=x.shape[0], gh=x.shape[2] // p)


def smooth_image(size, seed=0):
    coarse = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def test_pi_resize_to_a_larger_patch_keeps_the_patch_embeddings():
    model = make_model(image_size=64, patch_size=8)
    big = resample(model, patch_size=16, image_size=128)
    naive = resample(model, patch_size=16, image_size=128, kernel_resize="bilinear")
    assert big.config.grid_size == model.config.grid_size == 8
    key = "vit.embeddings.position_embeddings"
    assert torch.equal(big.state_dict()[key], model.state_dict()[key])  # same grid: untouched
    assert big.state_dict()["vit.embeddings.patch_embeddings.projection.weight"].shape == (32, 3, 16, 16)

    x = smooth_image(64)
    reference = trace(model, x, taps=["patch_embeddings"])
    # each patch upsampled on its own: the pseudo-inverse makes the embedding exact
    exact = trace(big, upsample_each_patch(x, 8, 16), taps=["patch_embeddings"])
    assert relative_error(exact.tensors["patch_embeddings"], reference.tensors["patch_embeddings"]) < 1e-5
    torch.testing.assert_close(exact.logits, reference.logits, atol=1e-4, rtol=0)
    # the whole image upsampled: exact up to the blending across patch borders
    x_up = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    pi_error = relative_error(trace(big, x_up, taps=["patch_embeddings"]).tensors["patch_embeddings"],
                              reference.tensors["patch_embeddings"])
    naive_error = relative_error(trace(naive, x_up, taps=["patch_embeddings"]).tensors["patch_embeddings"],
                                 reference.tensors["patch_embeddings"])
    assert pi_error < 0.1
    assert naive_error > 1.0 and naive_error > 20 * pi_error


def test_pi_kernel_matches_the_inner_product_identity():
    """<B x, w_new> = <x, w> for every patch x when the patch grows."""
    w = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    w_new = resize_patch_kernel(w, 7)
    x = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    bx = F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=False, antialias=False)
    old = torch.einsum("ncij,dcij->nd", x, w)
    new = torch.einsum("ncij,dcij->nd", bx, w_new)
    torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
    assert torch.equal(resize_patch_kernel(w, 4), w)
    with pytest.raises(ValueError):
        resize_patch_kernel(w, 7, method="nearest")


def test_pi_kernel_for_a_smaller_patch_is_the_least_squares_fit():
    """Shrinking cannot be exact; pinv gives the best fit: B (B^T w_new - w) = 0 (normal equations)."""
    w = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w_new = resize_patch_kernel(w, 4)
    basis = torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)
    B = rearrange(F.interpolate(basis, size=(4, 4), mode="bilinear", align_corners=False), "j 1 h w -> (h w) j")
    residual = B.T @ rearrange(w_new, "d c h w -> (h w) (d c)") - rearrange(w, "d c h w -> (h w) (d c)")
    torch.testing.assert_close(B @ residual, torch.zeros(16, 15, dtype=torch.float64), atol=1e-9, rtol=0)
    # any other kernel fits worse
    for seed in range(3):
        other = w_new + 0.01 * torch.randn(w_new.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        worse = B.T @ rearrange(other, "d c h w -> (h w) (d c)") - rearrange(w, "d c h w -> (h w) (d c)")
        assert worse.norm() > residual.norm()


def test_smaller_patch_keeps_the_image_size_and_interpolates_the_grid():
    model = make_model(image_size=32, patch_size=8)
    small = resample(model, patch_size=4)
    assert small.config.image_size == 32 and small.config.grid_size == 8 and small.config.num_tokens == 65
    state = small.state_dict()
    assert state["vit.embeddings.patch_embeddings.projection.weight"].shape == (32, 3, 4, 4)
    assert state["vit.embeddings.position_embeddings"].shape == (1, 65, 32)
    out = trace(small, pixels(32))
    assert out.attentions[0].shape == (2, 4, 65, 65)
    # shrinking the patch is a least-squares fit: a smooth image downsampled per patch still
    # gives embeddings close to the original ones, far closer than the naive kernel resize
    x = smooth_image(32)
    naive = resample(model, patch_size=4, kernel_resize="bilinear")
    big = trace(model, x, taps=["patch_embeddings"]).tensors["patch_embeddings"]
    x_small = upsample_each_patch(x, 8, 4)  # (down)sampled patch by patch, as B does
    probe = resample(model, patch_size=4, image_size=16)
    naive_probe = resample(model, patch_size=4, image_size=16, kernel_resize="bilinear")
    pi_error = relative_error(trace(probe, x_small, taps=["patch_embeddings"]).tensors["patch_embeddings"], big)
    naive_error = relative_error(trace(naive_probe, x_small, taps=["patch_embeddings"]).tensors["patch_embeddings"], big)
    assert pi_error < 0.4 and naive_error > 2 * pi_error
    assert naive.config == small.config


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="must be a whole number of patches"):
        resample(make_model(), patch_size=5)


# --------------------------------------------------------------------------- everything at once, ViTModel


def test_vit_model_with_pooler_keeps_its_class_and_pooler():
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                               image_size=32, patch_size=8)).eval()
    new = resample(model, patch_size=16, image_size=64, num_heads=8, num_layers=1)
    assert type(new) is ViTModel and new.pooler is not None and not new.training
    assert torch.equal(new.pooler.dense.weight, model.pooler.dense.weight)
    c = new.config
    assert (c.patch_size, c.image_size, c.num_attention_heads, c.num_hidden_layers) == (16, 64, 8, 1)
    assert trace(new, pixels(64)).pooler_output.shape == (2, 32)
    assert new.source.startswith("model (resampled:")

    no_pool = ViTModel(model.config, add_pooling_layer=False)
    assert resample(no_pool, num_layers=1).pooler is None


def test_labels_are_carried_over():
    model = make_model()
    new = resample(model, patch_size=4, num_heads=2)
    assert new.config.id2label == model.config.id2label
    assert torch.equal(new.classifier.weight, model.classifier.weight)


def test_only_our_models_are_accepted():
    with pytest.raises(TypeError):
        resample(torch.nn.Linear(2, 2), num_layers=1)
