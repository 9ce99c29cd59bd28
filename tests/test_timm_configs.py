"""timm checkpoints as timm writes them (model.safetensors in timm's key names + timm's config.json).

timm itself cannot be imported beside this torch, so the tests write its format (``helpers.to_timm``,
``helpers.timm_config``) from its public key names: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.norm1`` / ``attn.qkv`` / ``attn.proj`` / ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``, ``norm``, ``head``; and its hub config
(``architecture``, ``num_classes``, ``num_features``, ``global_pool``, ``pretrained_cfg``, optional
``model_args`` and ``label_names``). The loaded model must equal our own ViT built from the same
weights with the right head count, and transformers' ViT too.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import our_vit, pixels, timm_config, to_timm
from vit_explain.weights import CheckpointError, load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")


def write_timm_folder(folder, architecture, model, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(to_timm(model), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(timm_config(architecture, model, **extra)))
    return folder


def assert_same(loaded, model, size=32):
    with torch.no_grad():
        a, b = loaded(pixels(size, seed=1)), model(pixels(size, seed=1))
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    if b.logits is not None:
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture,hidden,heads", [
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", 192, 3),
    ("vit_small_patch16_224.dino", 384, 6),
    ("deit_small_patch16_224.fb_in1k", 384, 6),
])
def test_timm_folder_gets_the_head_count_of_its_architecture(tmp_path, architecture, hidden, heads):
    model = our_vit(hidden, heads)
    folder = write_timm_folder(tmp_path / "repo", architecture, model, label_names=["cat", "dog", "fish", "bird"])
    loaded = load_checkpoint(folder)
    assert loaded.config.num_attention_heads == heads
    assert loaded.config.id2label == {0: "cat", 1: "dog", 2: "fish", 3: "bird"}
    assert_same(loaded, model)
    # the same weights read with the wrong head count give other numbers: the head count matters
    wrong = load_checkpoint(folder, num_heads=heads * 2)
    with torch.no_grad():
        assert not torch.allclose(wrong(pixels(seed=1)).logits, model(pixels(seed=1)).logits, atol=1e-3)


def test_a_16_head_timm_vit_h_is_not_read_as_20_heads(tmp_path):
    model = our_vit(1280, 16, labels=0, image=28, patch=14)
    sd = to_timm(model)
    # every path: the bare state dict, the single file, the folder with timm's config
    for source in (sd, save_file(sd, tmp_path / "w.safetensors") or tmp_path / "w.safetensors",
                   write_timm_folder(tmp_path / "repo", "vit_huge_patch14_224.orig_in21k", model)):
        loaded = load_checkpoint(source)
        assert loaded.config.num_attention_heads == 16
        assert_same(loaded, model, size=28)


def test_model_args_decide_the_head_count(tmp_path):
    model = our_vit(192, 6)  # a non-standard head count for this width
    folder = write_timm_folder(tmp_path / "repo", "vit_tiny_patch16_224", model, model_args={"num_heads": 6})
    loaded = load_checkpoint(folder)
    assert loaded.config.num_attention_heads == 6
    assert_same(loaded, model)


def test_unknown_width_is_refused_asking_for_num_heads_on_every_path(tmp_path):
    model = our_vit(320, 5)
    sd = to_timm(model)
    save_file(sd, tmp_path / "w.safetensors")
    folder = write_timm_folder(tmp_path / "repo", "vit_custom_patch16", model)
    for source in (sd, tmp_path / "w.safetensors", folder):
        with pytest.raises(CheckpointError, match=r"num_heads=") as info:
            load_checkpoint(source)
        assert "320" in str(info.value)
        assert_same(load_checkpoint(source, num_heads=5), model)
    # a Hugging Face format file without config at that width: same refusal, never a guess
    save_file(dict(model.state_dict()), tmp_path / "hf.safetensors")
    with pytest.raises(CheckpointError, match=r"num_heads="):
        load_checkpoint(tmp_path / "hf.safetensors")


def test_pretrained_cfg_becomes_the_preprocessing(tmp_path):
    model = our_vit(192, 3, image=224)
    folder = write_timm_folder(tmp_path / "repo", "vit_tiny_patch16_224", model)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(interpolation="bilinear", crop_pct=0.9, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(folder)
    spec = loaded.preprocess_spec
    assert spec.shortest_edge == 248 and spec.do_center_crop and tuple(spec.crop_size) == (224, 224)
    assert spec.resample == int(Image.Resampling.BILINEAR)
    assert tuple(spec.image_mean) == (0.5, 0.4, 0.3) and tuple(spec.image_std) == (0.2, 0.3, 0.4)
    assert any("pretrained_cfg" in n and "248" in n for n in loaded.load_notes)
    # a landscape picture: shortest edge to 248, centre 224 crop
    from vit_explain.preprocess import to_pixel_values

    image = Image.new("RGB", (400, 300), (128, 102, 77))
    x = to_pixel_values(image, spec)
    assert tuple(x.shape) == (1, 3, 224, 224)
    expected = torch.tensor([(128 / 255 - 0.5) / 0.2, (102 / 255 - 0.4) / 0.3, (77 / 255 - 0.3) / 0.4])
    torch.testing.assert_close(x[0, :, 100, 100], expected, atol=1e-4, rtol=0)


def test_a_1000_class_timm_head_gets_imagenet_names(tmp_path):
    model = our_vit(192, 3, labels=1000)
    loaded = load_checkpoint(write_timm_folder(tmp_path / "repo", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", model))
    names = loaded.config.id2label
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby cat" and names[999] == "toilet paper"


@pytest.mark.parametrize("change,words", [
    ({"global_pool": "avg"}, ["global_pool='avg'", "class token"]),
    ({"architecture": "vit_base_patch16_clip_224.openai"}, ["CLIP"]),
    ({"architecture": "vit_small_patch14_reg4_dinov2.lvd142m"}, ["register"]),
    ({"architecture": "resnet50.a1_in1k"}, ["not a ViT"]),
    ({"model_args": {"init_values": 1e-5}}, ["init_values"]),
])
def test_timm_models_that_are_not_the_classic_vit_are_refused_by_config(tmp_path, change, words):
    model = our_vit(192, 3)
    folder = write_timm_folder(tmp_path / "repo", "vit_tiny_patch16_224", model)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"never read")  # refused before the weights are read
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_converted_timm_model_matches_transformers(tmp_path):
    model = our_vit(384, 6)
    loaded = load_checkpoint(write_timm_folder(tmp_path / "repo", "vit_small_patch16_224", model))
    save_checkpoint(loaded, tmp_path / "hf")
    theirs = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert theirs.config.num_attention_heads == 6
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels(seed=1)).logits, theirs(pixel_values=pixels(seed=1)).logits, atol=1e-5, rtol=0)


def test_timm_config_given_as_config_for_a_state_dict_or_file(tmp_path):
    """timm's config.json passed as config= is read as timm's (heads from its architecture), not as ViTConfig's defaults."""
    model = our_vit(384, 6)
    raw = timm_config("vit_small_patch16_224.augreg_in21k", model, label_names=["a", "b", "c", "d"])
    save_file(to_timm(model), tmp_path / "w.safetensors")
    for source in (to_timm(model), tmp_path / "w.safetensors"):
        loaded = load_checkpoint(source, config=raw)
        assert loaded.config.num_attention_heads == 6 and loaded.config.id2label[3] == "d"
        assert_same(loaded, model)


def test_a_config_without_a_head_count_is_not_given_twelve(tmp_path):
    model = our_vit(192, 3)
    config = {k: v for k, v in model.config.to_dict().items() if k != "num_attention_heads"}
    loaded = load_checkpoint(dict(model.state_dict()), config=config)
    assert loaded.config.num_attention_heads == 3
    assert_same(loaded, model)
    odd = our_vit(320, 5)
    config = {k: v for k, v in odd.config.to_dict().items() if k != "num_attention_heads"}
    with pytest.raises(CheckpointError, match="num_heads="):
        load_checkpoint(dict(odd.state_dict()), config=config)
