import json

import pytest

from vit_explain import ViTConfig

transformers = pytest.importorskip("transformers")


def test_defaults_are_the_seed_values():
    c = ViTConfig()
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size) == (768, 12, 12, 3072)
    assert (c.patch_size, c.image_size, c.num_channels, c.hidden_act) == (16, 224, 3, "gelu")
    assert c.layer_norm_eps == 1e-12 and c.initializer_range == 0.02
    assert c.hidden_dropout_prob == 0.0 and c.attention_probs_dropout_prob == 0.0
    assert c.qkv_bias is True
    assert c.num_patches == 196 and c.num_tokens == 197 and c.head_dim == 64


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(hidden_size=768, num_attention_heads=10), ["divides", "12"]),
        (dict(image_size=224, patch_size=15), ["patch size that divides", "14", "16"]),
        (dict(patch_size=300), ["larger than image_size"]),
        (dict(hidden_size=0), ["hidden_size", "positive"]),
        (dict(num_hidden_layers=-1), ["num_hidden_layers"]),
        (dict(hidden_act="banana"), ["gelu"]),
        (dict(hidden_dropout_prob=1.5), ["hidden_dropout_prob"]),
        (dict(id2label={0: "a", 1: "b"}, num_labels=3), ["num_labels"]),
    ],
)
def test_invalid_configs_say_what_to_change(changes, words):
    with pytest.raises(ValueError) as info:
        ViTConfig(**changes)
    for word in words:
        assert word in str(info.value)


def test_from_dict_reads_a_transformers_config_and_ignores_extra_keys(tmp_path):
    hf = transformers.ViTConfig(hidden_size=96, num_attention_heads=6, image_size=48, patch_size=12,
                                id2label={0: "cat", 1: "dog", 2: "owl"})
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert "encoder_stride" in data  # a key we do not use
    c = ViTConfig.from_dict(data)
    assert c.hidden_size == 96 and c.num_attention_heads == 6 and c.image_size == 48
    assert c.id2label == {0: "cat", 1: "dog", 2: "owl"} and c.num_labels == 3
    back = transformers.ViTConfig.from_dict(c.to_dict())
    assert back.hidden_size == 96 and back.id2label == {0: "cat", 1: "dog", 2: "owl"}


def test_replace_validates():
    c = ViTConfig()
    assert c.replace(patch_size=32).num_tokens == 50
    with pytest.raises(ValueError):
        c.replace(num_attention_heads=7)
