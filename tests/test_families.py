"""The ViT family beyond the classic model: distilled DeiT, DINOv2, DINOv2 with registers, timm configs.

Each family is checked against its transformers class on random weights built here (float32,
atol 1e-5), through every loading path (folder written by save_pretrained, single file, state
dict), and back out through save_checkpoint into transformers' from_pretrained.
"""

from __future__ import annotations

import json

import pytest
import torch

from helpers import HF_SMALL, pixels, randomise
from vit_explain.capture import trace
from vit_explain.weights import CheckpointError, load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")

SMALL = HF_SMALL


def distilled_deit():
    config = transformers.DeiTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8, num_labels=5)
    return randomise(transformers.DeiTForImageClassificationWithTeacher(config)), 32


def dinov2(registers=0):
    if registers:
        config = transformers.Dinov2WithRegistersConfig(**SMALL, image_size=56, patch_size=14, mlp_ratio=2,
                                                       num_register_tokens=registers)
        return randomise(transformers.Dinov2WithRegistersModel(config)), 56
    config = transformers.Dinov2Config(**SMALL, image_size=56, patch_size=14, mlp_ratio=2)
    return randomise(transformers.Dinov2Model(config)), 56


def deit(kind):
    config = transformers.DeiTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8, num_labels=5)
    cls = transformers.DeiTForImageClassification if kind == "classifier" else transformers.DeiTModel
    return randomise(cls(config)), 32


FAMILIES = {
    "deit_model": lambda: deit("model"),  # CLS + distillation token, a pooler on CLS
    "deit_classifier": lambda: deit("classifier"),  # the distillation token, one head on CLS
    "distilled_deit": distilled_deit,
    "dinov2": dinov2,
    "dinov2_registers": lambda: dinov2(registers=4),
}


def reference(model, x):
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True, output_attentions=True)
    return out


def assert_matches(ours, theirs, x):
    want = reference(theirs, x)
    with torch.no_grad():
        got = ours(x, output_attentions=True, output_hidden_states=True)
    if getattr(want, "pooler_output", None) is not None and got.pooler_output is not None:
        torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=0)
    if getattr(want, "logits", None) is not None:
        torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=0)
    assert len(got.hidden_states) == len(want.hidden_states)
    for a, b in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for a, b in zip(got.attentions, want.attentions):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parity_through_a_save_pretrained_folder(tmp_path, family):
    theirs, size = FAMILIES[family]()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    assert_matches(ours, theirs, pixels(size))
    # and at another image size: DINOv2 resizes its position embeddings to the grid, like transformers
    if family.startswith("dinov2"):
        other = type(ours)(ours.config.replace(image_size=28, position_embedding_size=size), add_pooling_layer=False)
        other.load_state_dict(ours.state_dict())
        assert_matches(other.eval(), theirs, pixels(28))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parity_from_a_state_dict_and_a_single_file(tmp_path, family):
    theirs, size = FAMILIES[family]()
    theirs.save_pretrained(tmp_path / "hf")
    on_disk = tmp_path / "hf" / "model.safetensors"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    # in-memory state dict of transformers (its own in-memory names), with the config
    assert_matches(load_checkpoint(theirs.state_dict(), config=config), theirs, pixels(size))
    # the bare file: the family is recognised from its key names; heads must be given (width 32)
    with pytest.raises(CheckpointError, match="num_heads"):
        load_checkpoint(on_disk)
    bare = load_checkpoint(on_disk, num_heads=4)
    if family.startswith("dinov2"):
        assert bare.config.layerscale_value == 1.0 and bare.config.use_mask_token
    assert bare.config.num_prefix_tokens == {"distilled_deit": 2, "deit_model": 2, "deit_classifier": 2, "dinov2": 1,
                                              "dinov2_registers": 5}[family]
    from vit_explain.weights import describe

    info = describe(bare)
    assert info["prefix_tokens"][0] == "CLS" and len(info["prefix_tokens"]) == bare.config.num_prefix_tokens
    assert info["num_tokens"] == bare.config.num_prefix_tokens + bare.config.num_patches
    assert_matches(bare, theirs, pixels(size))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_checkpoint_writes_what_transformers_reads(tmp_path, family):
    theirs, size = FAMILIES[family]()
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf")
    save_checkpoint(ours, tmp_path / "ours")
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["architectures"] == [type(theirs).__name__]
    back = type(theirs).from_pretrained(tmp_path / "ours").eval()
    assert_matches(ours, back, pixels(size))
    again = load_checkpoint(tmp_path / "ours")
    assert_matches(again, theirs, pixels(size))


def test_distilled_deit_averages_its_two_heads(tmp_path):
    theirs, size = distilled_deit()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    assert ours.config.use_distillation_token and ours.config.use_distillation_head
    x = pixels(size)
    with torch.no_grad():
        want = theirs(pixel_values=x)
        final = ours(x).last_hidden_state
        cls = ours.classifier(final[:, 0])
        dist = ours.distillation_classifier(final[:, 1])
    torch.testing.assert_close(cls, want.cls_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(dist, want.distillation_logits, atol=1e-5, rtol=0)
    assert not torch.allclose(cls, dist)  # the two heads differ, so averaging matters


def test_dinov2_runs_at_its_preprocessors_crop(tmp_path):
    """A DINOv2 checkpoint (position embeddings for 518 px) runs at its processor's 224 px crop."""
    config = transformers.Dinov2Config(**SMALL, image_size=518, patch_size=14, mlp_ratio=2)
    theirs = randomise(transformers.Dinov2Model(config))
    theirs.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    ours = load_checkpoint(tmp_path)
    assert ours.config.image_size == 224 and ours.config.position_embedding_size == 518
    assert ours.config.num_tokens == 1 + 16 * 16
    assert any("224" in n and "518" in n for n in ours.load_notes)
    assert_matches(ours, theirs, pixels(224, batch=1))
    # another patch size: the 37x37 embeddings no longer fit 16-pixel patches; resized once to the new grid
    from vit_explain.weights import resample

    sixteen = resample(ours, patch_size=16)
    assert sixteen.config.position_embedding_size is None and sixteen.config.grid_size == 14
    assert sixteen.embeddings.position_embeddings.shape[1] == 1 + 14 * 14
    with torch.no_grad():
        assert torch.isfinite(sixteen(pixels(224, batch=1)).last_hidden_state).all()
    # saved and read back by transformers with the embeddings' true size
    save_checkpoint(ours, tmp_path / "ours")
    assert transformers.Dinov2Model.from_pretrained(tmp_path / "ours").config.image_size == 518
    assert load_checkpoint(tmp_path / "ours").config.image_size == 224


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_trace_handles_the_prefix_tokens(tmp_path, family):
    theirs, size = FAMILIES[family]()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    config = ours.config
    x = pixels(size, batch=1)
    t = trace(ours, x)
    assert t.hidden_states[0].shape[1] == config.num_tokens == config.num_prefix_tokens + config.num_patches
    assert t.attentions[0].shape[-1] == config.num_tokens
    tensors = t.tensors
    # tokens + position embeddings = embeddings (registers get a zero position row)
    torch.testing.assert_close(tensors["tokens_with_cls"] + tensors["position_embeddings"], t.hidden_states[0])
    if config.num_register_tokens:
        zeros = tensors["position_embeddings"][0, 1:1 + config.num_register_tokens]
        assert torch.count_nonzero(zeros) == 0
    with torch.no_grad():
        torch.testing.assert_close(t.last_hidden_state, ours(x).last_hidden_state)


# --------------------------------------------------------------------------- refused by name


@pytest.mark.parametrize("config,words", [
    ({"model_type": "clip", "architectures": ["CLIPModel"]}, ["CLIP", "CLIPModel"]),
    ({"model_type": "siglip", "architectures": ["SiglipModel"]}, ["SigLIP"]),
    ({"model_type": "beit", "architectures": ["BeitForImageClassification"]}, ["BEiT"]),
    ({"model_type": "dinov2", "architectures": ["Dinov2Model"], "use_swiglu_ffn": True}, ["SwiGLU", "dinov2-giant"]),
    ({"model_type": "dinov2", "architectures": ["Dinov2ForImageClassification"]}, ["Dinov2ForImageClassification"]),
    ({"model_type": "vit", "architectures": ["ViTForMaskedImageModeling"]}, ["ViTForMaskedImageModeling"]),
])
def test_unsupported_architectures_are_refused_by_name(tmp_path, config, words):
    (tmp_path / "model.safetensors").write_bytes(b"never read")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "Supported:" in message


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resample_keeps_the_prefix_tokens(tmp_path, family):
    """The sidebar's sliders (patch size, image size, heads, layers) work on every family."""
    from vit_explain.weights import resample

    theirs, size = FAMILIES[family]()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    # heads and layers: the same numbers as transformers' first layer(s)
    fewer = resample(ours, num_layers=1)
    assert fewer.config.num_prefix_tokens == ours.config.num_prefix_tokens
    want = reference(theirs, pixels(size))
    with torch.no_grad():
        torch.testing.assert_close(fewer(pixels(size), output_hidden_states=True).hidden_states[1],
                                   want.hidden_states[1], atol=1e-5, rtol=0)
    # patch and image size: new grids, the prefix tokens kept in front
    patch = ours.config.patch_size
    for changes in ({"image_size": 2 * size}, {"patch_size": patch // 2}, {"patch_size": patch // 2, "image_size": 2 * size}):
        changed = resample(ours, **changes)
        config = changed.config
        x = pixels(config.image_size, batch=1)
        with torch.no_grad():
            out = changed(x, output_attentions=True)
        assert out.last_hidden_state.shape[1] == config.num_prefix_tokens + config.grid_size ** 2
        assert torch.isfinite(out.last_hidden_state).all()
        save_checkpoint(changed, tmp_path / f"r{len(changes)}{config.patch_size}")
        again = load_checkpoint(tmp_path / f"r{len(changes)}{config.patch_size}")
        with torch.no_grad():
            torch.testing.assert_close(again(x).last_hidden_state, out.last_hidden_state, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_counted_parameters_are_the_models(tmp_path, family):
    """flops.architecture (the overview's diagram and the sidebar's count) counts every family exactly."""
    from vit_explain.flops import architecture
    from vit_explain.model import ViTForImageClassification

    theirs, _ = FAMILIES[family]()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    classifier = isinstance(ours, ViTForImageClassification)
    pooler = (ours.vit if classifier else ours).pooler is not None
    counted = architecture(ours.config, has_pooler=pooler, classifier=classifier)[0].params
    assert counted == ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
