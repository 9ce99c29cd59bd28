"""Our einops ViT against transformers' ViT on the same weights (eager attention, float32)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vit_explain import ViTConfig, ViTForImageClassification, ViTModel
from vit_explain.capture import trace

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "seed-defaults": dict(),  # ViT-B/16 at 224
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 image_size=32, patch_size=8),
    "odd-sizes": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, intermediate_size=200,
                      image_size=48, patch_size=12),
    "gelu-new": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     image_size=64, patch_size=16, hidden_act="gelu_new", layer_norm_eps=1e-6),
    "relu-no-qkv-bias": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                             image_size=40, patch_size=8, hidden_act="relu", qkv_bias=False),
    "quick-gelu": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=24, patch_size=6, hidden_act="quick_gelu"),
}
ATOL = 1e-5


def _reference(kind, kwargs, tmp_path, num_labels=7):
    torch.manual_seed(0)
    hf_config = transformers.ViTConfig(**kwargs, num_labels=num_labels, attn_implementation="eager")
    if kind == "classifier":
        ref = transformers.ViTForImageClassification(hf_config)
    else:
        ref = transformers.ViTModel(hf_config, add_pooling_layer=True)
    with torch.no_grad():  # random non-zero biases and norms, so a swapped or dropped term shows
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref.eval().save_pretrained(tmp_path)
    config = ViTConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    ours = (ViTForImageClassification(config) if kind == "classifier" else ViTModel(config)).eval()
    ours.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    return ref, ours, config


def _close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= ATOL, diff


# ViT-B/16 runs once, as a classifier, to keep the suite quick; the others run both ways.
CASES = [("seed-defaults", "classifier")] + [(n, k) for n in CONFIGS if n != "seed-defaults" for k in ("classifier", "base")]


@pytest.mark.parametrize("name, kind", CASES)
def test_outputs_match_transformers(name, kind, tmp_path):
    ref, ours, config = _reference(kind, CONFIGS[name], tmp_path)
    x = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x, output_attentions=True, output_hidden_states=True)
        got = ours(x, output_attentions=True, output_hidden_states=True)
        fast = ours(x)  # the fused attention path
    traced = trace(ours, x)

    if kind == "classifier":
        _close(got.logits, expected.logits)
        _close(fast.logits, expected.logits)
        _close(traced.logits, expected.logits)
    else:
        _close(got.last_hidden_state, expected.last_hidden_state)
        _close(got.pooler_output, expected.pooler_output)
        _close(fast.pooler_output, expected.pooler_output)
        _close(traced.pooler_output, expected.pooler_output)
        _close(traced.last_hidden_state, expected.last_hidden_state)
    assert len(got.hidden_states) == len(expected.hidden_states) == config.num_hidden_layers + 1
    for ours_h, ref_h, traced_h in zip(got.hidden_states, expected.hidden_states, traced.hidden_states):
        _close(ours_h, ref_h)
        _close(traced_h, ref_h)
    assert len(got.attentions) == len(expected.attentions) == config.num_hidden_layers
    for ours_a, ref_a, traced_a in zip(got.attentions, expected.attentions, traced.attentions):
        _close(ours_a, ref_a)
        _close(traced_a, ref_a)


def test_state_dict_keys_and_shapes_are_the_hub_format(tmp_path):
    ref, ours, _ = _reference("classifier", CONFIGS["odd-sizes"], tmp_path)
    file_sd = load_file(tmp_path / "model.safetensors")
    ours_sd = ours.state_dict()
    assert set(ours_sd) == set(file_sd)
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in file_sd.items()}
    for key in ("vit.embeddings.patch_embeddings.projection.weight", "vit.encoder.layer.0.attention.attention.query.weight",
                "vit.encoder.layer.2.attention.output.dense.bias", "vit.encoder.layer.1.intermediate.dense.weight",
                "vit.encoder.layer.1.output.dense.weight", "vit.encoder.layer.0.layernorm_before.weight",
                "vit.encoder.layer.0.layernorm_after.bias", "vit.layernorm.weight", "classifier.weight"):
        assert key in ours_sd


def test_parameter_counts_are_pinned():
    # The JAX original's counts for ViT-B/16.
    assert ViTModel(ViTConfig()).num_parameters() == 86_389_248
    assert ViTForImageClassification(ViTConfig(num_labels=1000)).num_parameters() == 86_567_656
    assert ViTModel(ViTConfig(), add_pooling_layer=False).num_parameters() == 86_389_248 - (768 * 768 + 768)


def test_wrong_input_size_says_what_to_do():
    model = ViTModel(ViTConfig(**CONFIGS["tiny"])).eval()
    with pytest.raises(ValueError, match="resize the image"):
        model(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"\[batch, 3, 32, 32\]"):
        model(torch.randn(1, 1, 32, 32))


def test_init_matches_reference_statistics():
    config = ViTConfig(**CONFIGS["odd-sizes"])
    model = ViTModel(config)
    model.init_weights(seed=3)
    w = model.encoder.layer[0].attention.attention.query.weight
    assert abs(w.std().item() - 0.02) < 0.002  # like transformers: std = initializer_range, cut at +-2
    assert abs(w.mean().item()) < 0.002
    assert torch.all(model.encoder.layer[0].layernorm_before.weight == 1)
    assert torch.all(model.encoder.layer[0].attention.attention.query.bias == 0)
    again = ViTModel(config)
    again.init_weights(seed=3)
    assert torch.equal(again.embeddings.position_embeddings, model.embeddings.position_embeddings)
