"""Checkpoints in and out: transformers round trips, timm conversion, the Hub offline, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import TINY, CodeInPickle, our_model, our_vit, pixels, timm_config, to_timm
from hub_standin import StandInHub, folder_files, point_at
from vit_explain import ViTConfig, ViTForImageClassification, ViTModel
from vit_explain.preprocess import PreprocessSpec
from vit_explain.weights import (
    KNOWN_CHECKPOINTS,
    CheckpointError,
    HubUnreachableError,
    describe,
    from_timm_state_dict,
    load_checkpoint,
    save_checkpoint,
    top_k,
)

transformers = pytest.importorskip("transformers")


def hf_config(**changes):
    return transformers.ViTConfig(**{**TINY, **changes})


# --------------------------------------------------------------------------- transformers round trips


def test_classifier_round_trip_through_transformers(tmp_path):
    torch.manual_seed(0)
    labels = {i: name for i, name in enumerate(["cat", "dog", "fox", "owl", "eel"])}
    hf = transformers.ViTForImageClassification(hf_config(id2label=labels, label2id={v: k for k, v in labels.items()})).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf")
    assert type(ours) is ViTForImageClassification and not ours.training
    assert ours.config.id2label == labels
    assert ours.config.hidden_size == 32 and ours.config.num_attention_heads == 4
    assert isinstance(ours.preprocess_spec, PreprocessSpec) and ours.preprocess_spec.size == (32, 32)
    assert ours.source.startswith("local:")
    assert all(t.device.type == "cpu" for t in list(ours.parameters()) + list(ours.buffers()))
    x = pixels()
    with torch.no_grad():
        expected = hf(x).logits
        torch.testing.assert_close(ours(x).logits, expected, atol=1e-5, rtol=0)

    save_checkpoint(ours, tmp_path / "ours")
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == ["ViTForImageClassification"] and config["model_type"] == "vit"
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, expected, atol=1e-5, rtol=0)
    assert back.config.id2label == labels
    # transformers' own image processor reads our preprocessor_config.json
    processor = transformers.ViTImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert processor.size == {"height": 32, "width": 32}


def test_vit_model_with_pooler_round_trip(tmp_path):
    torch.manual_seed(1)
    hf = transformers.ViTModel(hf_config(), add_pooling_layer=True).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf")
    assert type(ours) is ViTModel and ours.pooler is not None
    x = pixels()
    with torch.no_grad():
        ref = hf(x)
        out = ours(x)
        torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
    save_checkpoint(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == ["ViTModel"]
    back = transformers.ViTModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).pooler_output, ref.pooler_output, atol=1e-5, rtol=0)


def test_vit_model_without_pooler(tmp_path):
    torch.manual_seed(2)
    hf = transformers.ViTModel(hf_config(), add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    assert type(ours) is ViTModel and ours.pooler is None
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels()).last_hidden_state, hf(pixels()).last_hidden_state, atol=1e-5, rtol=0)


def test_pytorch_model_bin_round_trip(tmp_path):
    torch.manual_seed(3)
    hf = transformers.ViTForImageClassification(hf_config(num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "hf")
    # the checkpoint-format tensors as a classic torch.save'd state dict
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_bytes((tmp_path / "hf" / "config.json").read_bytes())
    torch.save(load_file(tmp_path / "hf" / "model.safetensors"), tmp_path / "bin" / "pytorch_model.bin")
    ours = load_checkpoint(tmp_path / "bin")
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels()).logits, hf(pixels()).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["classifier", "pooler"])
def test_state_dict_of_a_transformers_5_model(kind):
    """transformers 5 renames the layers in memory (layers.0.attention.q_proj); those load too."""
    torch.manual_seed(4)
    if kind == "classifier":
        hf = transformers.ViTForImageClassification(hf_config(num_labels=3)).eval()
    else:
        hf = transformers.ViTModel(hf_config()).eval()
    ours = load_checkpoint(hf.state_dict(), num_heads=4)
    with torch.no_grad():
        if kind == "classifier":
            torch.testing.assert_close(ours(pixels()).logits, hf(pixels()).logits, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(ours(pixels()).pooler_output, hf(pixels()).pooler_output, atol=1e-5, rtol=0)


def test_preprocessor_config_is_read(tmp_path):
    model = our_model()
    save_checkpoint(model, tmp_path)
    deit_style = {
        "do_resize": True, "size": 37, "resample": 3, "do_center_crop": True, "crop_size": 32,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(deit_style))
    loaded = load_checkpoint(tmp_path)
    spec = loaded.preprocess_spec
    assert spec.size == (37, 37) and spec.crop_size == (32, 32) and spec.do_center_crop
    assert spec.resample == 3 and spec.image_mean == (0.485, 0.456, 0.406)
    # ...and written back unchanged
    save_checkpoint(loaded, tmp_path / "again")
    assert PreprocessSpec.from_dict(json.loads((tmp_path / "again" / "preprocessor_config.json").read_text())) == spec


def test_saved_files_are_contiguous_safetensors_with_config_metadata(tmp_path):
    model = our_model()
    save_checkpoint(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[key], value)
    # a lone .safetensors written by save_checkpoint knows its config (heads included)
    alone = load_checkpoint(tmp_path / "model.safetensors")
    assert alone.config.num_attention_heads == 4 and alone.config.id2label == model.config.id2label
    with torch.no_grad():
        assert torch.equal(alone(pixels()).logits, model(pixels()).logits)


def test_loaded_model_does_not_share_the_callers_tensors():
    model = our_model()
    state = model.state_dict()
    loaded = load_checkpoint(state, config=model.config)
    with torch.no_grad():
        loaded.classifier.weight.zero_()
    assert model.classifier.weight.abs().sum() > 0
    assert loaded.source == "state dict"


# --------------------------------------------------------------------------- config from shapes


def test_bare_safetensors_infers_the_architecture(tmp_path):
    # 192 wide is ViT-Ti: 3 heads by the standard width table (not 192 / 64 by luck: see the 1280 test)
    model = our_model(hidden_size=192, num_attention_heads=3, intermediate_size=64)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    loaded = load_checkpoint(tmp_path / "w.safetensors")
    c = loaded.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.patch_size, c.image_size, c.num_labels) == (
        192, 2, 64, 8, 32, 5,
    )
    assert c.num_attention_heads == 3
    assert any("3 heads" in note and "192" in note for note in loaded.load_notes)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, atol=1e-6, rtol=0)


def test_bare_safetensors_needs_num_heads_when_hidden_is_not_a_multiple_of_64(tmp_path):
    model = our_model()  # hidden 32
    save_file(dict(model.state_dict()), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="num_heads"):
        load_checkpoint(tmp_path / "w.safetensors")
    loaded = load_checkpoint(tmp_path / "w.safetensors", num_heads=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, atol=1e-6, rtol=0)
    by_config = load_checkpoint(tmp_path / "w.safetensors", config=model.config)
    assert by_config.config.id2label == model.config.id2label


# --------------------------------------------------------------------------- errors


def test_missing_unexpected_and_misshaped_keys_are_listed_together(tmp_path):
    model = our_model()
    state = dict(model.state_dict())
    for key in ("vit.layernorm.weight", "vit.layernorm.bias", "classifier.bias"):
        del state[key]
    state["vit.encoder.layer.0.extra.weight"] = torch.zeros(3)
    state["vit.encoder.layer.5.output.dense.bias"] = torch.zeros(3)
    state["vit.encoder.layer.0.attention.attention.query.weight"] = torch.zeros(16, 16)
    save_checkpoint(model, tmp_path)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert "3 keys missing" in message and "vit.layernorm.weight" in message and "classifier.bias" in message
    assert "2 unexpected" in message and "vit.encoder.layer.5.output.dense.bias" in message
    assert "1 with the wrong shape" in message
    assert "query.weight expected [32, 32], file has [16, 16]" in message


def test_config_that_disagrees_with_the_weights(tmp_path):
    model = our_model()
    save_checkpoint(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight expected \[48, 32\], file has \[37, 32\]"):
        load_checkpoint(tmp_path)


def bert_like_state_dict():
    return {
        "bert.embeddings.word_embeddings.weight": torch.zeros(100, 32),
        "bert.embeddings.position_embeddings.weight": torch.zeros(16, 32),
        "bert.encoder.layer.0.attention.self.query.weight": torch.zeros(32, 32),
        "cls.predictions.bias": torch.zeros(100),
    }


def resnet_like_state_dict():
    return {
        "conv1.weight": torch.zeros(8, 3, 7, 7),
        "bn1.running_mean": torch.zeros(8),
        "layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3),
        "fc.weight": torch.zeros(10, 8),
    }


@pytest.mark.parametrize("make", [bert_like_state_dict, resnet_like_state_dict])
def test_other_architectures_are_refused_clearly(tmp_path, make):
    with pytest.raises(CheckpointError, match="does not look like a ViT checkpoint"):
        load_checkpoint(make())
    save_file(make(), tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not look like a ViT checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


@pytest.mark.parametrize("weights", ["bert", "garbage"])
def test_bert_directory_with_its_own_config(tmp_path, weights):
    """Refused from config.json alone, naming what it is and what is supported; the weights are never read."""
    if weights == "bert":
        save_file(bert_like_state_dict(), tmp_path / "model.safetensors")
    else:  # not even a safetensors file: reading it would fail with another message
        (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
    }))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert "'bert'" in message and "BertForMaskedLM" in message  # what the folder really holds
    assert "cannot run" in message and "Supported: ViT" in message and "Dinov2WithRegistersModel" in message


def test_truncated_safetensors(tmp_path):
    save_checkpoint(our_model(), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_corrupt_pickle(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_checkpoint(tmp_path / "pytorch_model.bin")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    model = our_model()
    hostile = dict(model.state_dict())
    hostile["vit.layernorm.weight"] = CodeInPickle(marker)
    save_checkpoint(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hostile, tmp_path / "pytorch_model.bin")
    for source in (tmp_path, tmp_path / "pytorch_model.bin"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(source)
        assert "only safetensors files or plain tensor pickles" in str(info.value).lower()
        assert not marker.exists()
    # The payload is real: the file's pickle calls exec with the marker-writing code (read, never run).
    import pickletools
    import zipfile

    with zipfile.ZipFile(tmp_path / "pytorch_model.bin") as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert any(isinstance(arg, str) and arg.split()[-1] == "exec" for _, arg in ops)
    assert any(isinstance(arg, str) and "pwned" in arg for _, arg in ops)


def test_plain_pickle_of_a_non_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="state dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_bad_sources():
    with pytest.raises(CheckpointError, match="neither an existing file or folder nor"):
        load_checkpoint("./no/such/folder")
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint("not a repo id at all")
    with pytest.raises(TypeError):
        load_checkpoint(42)


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "secret-notes.txt").write_text("private")
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin") as info:
        load_checkpoint(tmp_path)
    # a shared server must not let users browse folders through the error message
    assert "secret-notes" not in str(info.value) and "config.json" not in str(info.value)


# --------------------------------------------------------------------------- timm


def test_timm_conversion_reproduces_the_logits_exactly(tmp_path):
    model = our_model(layer_norm_eps=1e-6)
    timm_sd = to_timm(model)
    config, state = from_timm_state_dict(timm_sd, num_heads=4)
    assert config.layer_norm_eps == 1e-6 and config.num_attention_heads == 4 and config.num_labels == 5
    assert set(state) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    loaded = load_checkpoint(timm_sd, num_heads=4)
    assert type(loaded) is ViTForImageClassification
    x = pixels()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    # the same from a file
    torch.save(timm_sd, tmp_path / "vit_timm.pth")
    from_file = load_checkpoint(tmp_path / "vit_timm.pth", num_heads=4)
    with torch.no_grad():
        assert torch.equal(from_file(x).logits, model(x).logits)


def test_timm_wrapped_in_a_training_checkpoint_and_without_head():
    model = our_model(layer_norm_eps=1e-6)
    timm_sd = to_timm(model)
    timm_sd["head.weight"] = torch.zeros(0, 32)
    timm_sd["head.bias"] = torch.zeros(0)
    loaded = load_checkpoint({"model": timm_sd, "epoch": 3}, num_heads=4)
    assert type(loaded) is ViTModel and loaded.pooler is None
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixels()).last_hidden_state, model.vit(pixels()).last_hidden_state, atol=0, rtol=0
        )


def vit_small_timm(layers=2, image=32, classes=10):
    """Random weights with ViT-S/16's widths (D=384, MLP 1536), few layers, a small image."""
    g = torch.Generator().manual_seed(0)
    D, M, grid = 384, 1536, image // 16

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = {
        "cls_token": r(1, 1, D), "pos_embed": r(1, 1 + grid * grid, D),
        "patch_embed.proj.weight": r(D, 3, 16, 16), "patch_embed.proj.bias": r(D),
        "norm.weight": 1 + r(D), "norm.bias": r(D), "head.weight": r(classes, D), "head.bias": r(classes),
    }
    for i in range(layers):
        t = f"blocks.{i}."
        sd |= {
            t + "norm1.weight": 1 + r(D), t + "norm1.bias": r(D),
            t + "attn.qkv.weight": r(3 * D, D), t + "attn.qkv.bias": r(3 * D),
            t + "attn.proj.weight": r(D, D), t + "attn.proj.bias": r(D),
            t + "norm2.weight": 1 + r(D), t + "norm2.bias": r(D),
            t + "mlp.fc1.weight": r(M, D), t + "mlp.fc1.bias": r(M),
            t + "mlp.fc2.weight": r(D, M), t + "mlp.fc2.bias": r(D),
        }
    return sd


def test_timm_vit_small_defaults():
    sd = vit_small_timm()
    config, state = from_timm_state_dict(sd)
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (384, 6, 1536)
    assert (config.patch_size, config.image_size, config.num_hidden_layers, config.num_labels) == (16, 32, 2, 10)
    assert config.layer_norm_eps == 1e-6 and config.qkv_bias and config.hidden_act == "gelu"
    q, k, v = sd["blocks.1.attn.qkv.weight"].chunk(3)
    assert torch.equal(state["vit.encoder.layer.1.attention.attention.query.weight"], q)
    assert torch.equal(state["vit.encoder.layer.1.attention.attention.key.weight"], k)
    assert torch.equal(state["vit.encoder.layer.1.attention.attention.value.bias"], sd["blocks.1.attn.qkv.bias"][768:])
    assert from_timm_state_dict(sd, num_heads=12)[0].num_attention_heads == 12
    # another input size: the position embeddings follow the new grid, CLS kept
    config64, state64 = from_timm_state_dict(sd, image_size=64)
    pos = state64["vit.embeddings.position_embeddings"]
    assert config64.image_size == 64 and pos.shape == (1, 17, 384)
    assert torch.equal(pos[:, 0], sd["pos_embed"][:, 0])


def test_timm_no_embed_class_and_pre_logits_pooler():
    model = our_model(layer_norm_eps=1e-6)
    timm_sd = to_timm(model)
    timm_sd["pos_embed"] = timm_sd["pos_embed"][:, 1:].clone()  # CLS had no position embedding
    del timm_sd["head.weight"], timm_sd["head.bias"]
    timm_sd["pre_logits.fc.weight"] = torch.randn(32, 32)
    timm_sd["pre_logits.fc.bias"] = torch.randn(32)
    config, state = from_timm_state_dict(timm_sd, num_heads=4)
    assert torch.equal(state["embeddings.position_embeddings"][:, 0], torch.zeros(1, 32))
    assert torch.equal(state["pooler.dense.weight"], timm_sd["pre_logits.fc.weight"])
    loaded = load_checkpoint(timm_sd, num_heads=4)
    assert type(loaded) is ViTModel and loaded.pooler is not None


@pytest.mark.parametrize(
    "extra, why",
    [
        ({"fc_norm.weight": torch.ones(384), "fc_norm.bias": torch.zeros(384)}, "averaging the patch tokens"),
        ({"dist_token": torch.zeros(1, 1, 384)}, "distilled"),
        ({"blocks.0.ls1.gamma": torch.ones(384)}, "layer scale"),
        ({"pre_logits.fc.weight": torch.zeros(384, 384), "pre_logits.fc.bias": torch.zeros(384)}, "pre-logits"),
        ({"blocks.0.attn.mystery.weight": torch.zeros(3)}, "does not know"),
    ],
)
def test_timm_models_of_another_architecture_are_refused(extra, why):
    with pytest.raises(CheckpointError, match=why):
        from_timm_state_dict({**vit_small_timm(layers=1), **extra})


# --------------------------------------------------------------------------- the Hub


def test_hub_offline_mode_fails_fast_with_a_helpful_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    with pytest.raises(HubUnreachableError) as info:
        load_checkpoint("google/vit-base-patch16-224", cache_dir=tmp_path, progress=lambda f, m: calls.append((f, m)))
    message = str(info.value)
    assert "Cannot reach the Hugging Face Hub" in message and "offline" in message
    assert "bundled model works offline" in message
    assert "load_checkpoint('/path/to/folder')" in message
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert calls and all(0.0 <= f <= 1.0 for f, _ in calls)


def test_a_missing_local_folder_that_looks_like_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").mkdir()
    with pytest.raises(HubUnreachableError, match="No local folder 'assets/model' exists either"):
        load_checkpoint("assets/model", cache_dir=tmp_path / "cache")


def test_hub_unreachable_network_fails_fast(tmp_path, monkeypatch):
    # Not offline mode: a real connection attempt to an endpoint nobody listens on.
    from types import SimpleNamespace

    point_at(monkeypatch, SimpleNamespace(endpoint="http://127.0.0.1:9"), tmp_path)
    with pytest.raises(HubUnreachableError, match="no connection to 127.0.0.1") as info:
        load_checkpoint("facebook/deit-tiny-patch16-224", cache_dir=tmp_path)
    assert "bundled model works offline" in str(info.value)


def fill_hub_cache(cache: Path, repo_id: str, model) -> None:
    """Lay out files as huggingface_hub's cache does: refs/main -> snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_checkpoint(model, repo / "snapshots" / commit)


def test_hub_repo_from_the_cache_works_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = our_model()
    fill_hub_cache(tmp_path, "someone/tiny-vit", model)
    calls = []
    loaded = load_checkpoint("someone/tiny-vit", cache_dir=tmp_path, progress=lambda f, m: calls.append((f, m)))
    assert loaded.source == "hub: someone/tiny-vit"
    with torch.no_grad():
        assert torch.equal(loaded(pixels()).logits, model(pixels()).logits)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("cache" in m for _, m in calls)


def test_progress_bar_class_forwards_bytes():
    from vit_explain.weights import _progress_bar_class

    seen = []
    bar_class = _progress_bar_class(seen.append)
    # the keyword arguments huggingface_hub passes to its download bars
    bar = bar_class(unit="B", unit_scale=True, total=100, initial=10, desc="model.safetensors",
                    disable=False, name="huggingface_hub.http_get")
    bar.update(30)
    bar.update(60)
    bar.close()
    assert seen == [40, 100]


# --------------------------------------------------------------------------- small helpers


def test_top_k():
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    probs = torch.softmax(logits, 0)
    result = top_k(logits, {0: "a", 1: "b", 2: "c", 3: "d"}, k=2)
    assert [name for name, _ in result] == ["b", "c"]
    assert result[0][1] == pytest.approx(float(probs[1])) and result[1][1] == pytest.approx(float(probs[2]))
    everything = top_k(logits[None], ["a", "b", "c", "d"], k=10)  # [1, K], k clipped to K
    assert len(everything) == 4 and sum(p for _, p in everything) == pytest.approx(1.0)
    assert [p for _, p in everything] == sorted((p for _, p in everything), reverse=True)
    assert top_k(logits, {"0": "a"}, k=4)[-1] == ("LABEL_3", pytest.approx(float(probs[3])))
    assert top_k(logits, None, k=0) == []
    with pytest.raises(ValueError):
        top_k(torch.zeros(2, 3), None)


def test_describe():
    info = describe(our_model())
    assert info["class"] == "ViTForImageClassification" and info["is_classifier"] and not info["has_pooler"]
    assert info["num_labels"] == 5 and info["num_tokens"] == 17 and info["head_dim"] == 8
    assert info["parameters"] == sum(p.numel() for p in our_model().parameters())
    assert describe(ViTModel(ViTConfig(**TINY)))["has_pooler"] is True


def count_parameters(D, layers, M, P, image, classes=0, pooler=False, C=3):
    """Parameters of a ViT, counted by hand."""
    tokens = (image // P) ** 2 + 1
    embeddings = D * C * P * P + D + D + tokens * D
    layer = 4 * (D * D + D) + 2 * 2 * D + (D * M + M) + (M * D + D)
    total = embeddings + layers * layer + 2 * D
    total += (D * D + D) if pooler else 0
    return total + (D * classes + classes if classes else 0)


def test_parameter_formula_and_known_checkpoints():
    assert count_parameters(32, 2, 37, 8, 32, classes=5) == our_model().num_parameters()
    assert count_parameters(32, 2, 37, 8, 32, pooler=True) == ViTModel(ViTConfig(**TINY)).num_parameters()
    expected = {
        "google/vit-base-patch16-224": count_parameters(768, 12, 3072, 16, 224, classes=1000),
        "google/vit-base-patch16-224-in21k": count_parameters(768, 12, 3072, 16, 224, pooler=True),
        "facebook/deit-tiny-patch16-224": count_parameters(192, 12, 768, 16, 224, classes=1000),
        "facebook/deit-small-patch16-224": count_parameters(384, 12, 1536, 16, 224, classes=1000),
        "facebook/dino-vitb16": count_parameters(768, 12, 3072, 16, 224, pooler=True),
        # DINOv2-S/14: position embeddings for 518 px (37 x 37), a mask token and two layer scales a layer
        "facebook/dinov2-small": count_parameters(384, 12, 1536, 14, 518) + 384 + 12 * 2 * 384,
        "facebook/dinov2-with-registers-small": count_parameters(384, 12, 1536, 14, 518) + 384 + 12 * 2 * 384 + 4 * 384,
    }
    assert set(expected) <= set(KNOWN_CHECKPOINTS)
    for repo_id, params in expected.items():
        known = KNOWN_CHECKPOINTS[repo_id]
        assert known.repo_id == repo_id and known.num_parameters == params
        # float32 safetensors: four bytes a parameter, within a megabyte
        assert abs(known.download_mb - params * 4 / 1e6) < 1.0
        assert known.description and f"{params / 1e6:.1f}M" in known.summary()
    assert KNOWN_CHECKPOINTS["google/vit-base-patch16-224"].num_parameters == 86_567_656


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A stand-in Hub serving one small checkpoint as someone/tiny-vit, huggingface_hub pointed at it."""
    model = our_model()
    save_checkpoint(model, tmp_path / "repo")
    hub = StandInHub({"someone/tiny-vit": folder_files(tmp_path / "repo")})
    point_at(monkeypatch, hub, tmp_path / "cache")
    yield hub, model
    hub.close()


def test_download_from_the_hub_with_progress(fake_hub, tmp_path):
    hub, model = fake_hub
    calls = []
    loaded = load_checkpoint("someone/tiny-vit", cache_dir=tmp_path / "cache", progress=lambda f, m: calls.append((f, m)))
    assert loaded.source == "hub: someone/tiny-vit"
    with torch.no_grad():
        assert torch.equal(loaded(pixels()).logits, model(pixels()).logits)
    assert any(r.startswith("GET /someone/tiny-vit/resolve/main/model.safetensors") for r in hub.requests)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    messages = [m for _, m in calls]
    size_kb = f"{len((tmp_path / 'repo' / 'model.safetensors').read_bytes()) / 1e3:.0f} kB"
    assert f"Downloading model.safetensors ({size_kb})" in messages
    assert f"Downloaded model.safetensors ({size_kb})" in messages
    # now in the cache: a second load needs no server at all
    hub.close()
    again = load_checkpoint("someone/tiny-vit", cache_dir=tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(again(pixels()).logits, model(pixels()).logits)


def test_unknown_hub_repo(fake_hub, tmp_path):
    with pytest.raises(CheckpointError, match="no public model called 'someone/missing'"):
        load_checkpoint("someone/missing", cache_dir=tmp_path / "cache")


def test_second_load_reuses_the_cache_without_asking_for_the_weights_again(fake_hub, tmp_path):
    hub, model = fake_hub
    load_checkpoint("someone/tiny-vit", cache_dir=tmp_path / "cache")
    weight_requests = [r for r in hub.requests if "model.safetensors" in r]
    assert weight_requests  # downloaded once
    again = load_checkpoint("someone/tiny-vit", cache_dir=tmp_path / "cache")  # the server is still up
    assert [r for r in hub.requests if "model.safetensors" in r] == weight_requests
    with torch.no_grad():
        assert torch.equal(again(pixels()).logits, model(pixels()).logits)


@pytest.mark.parametrize("config,words", [
    ({"model_type": "clip", "architectures": ["CLIPModel"]}, ["CLIP", "CLIPModel", "Supported:"]),
    ({"model_type": "dinov2", "architectures": ["Dinov2Model"], "use_swiglu_ffn": True,
      "hidden_size": 1536}, ["SwiGLU"]),
    ({"architecture": "vit_base_patch16_siglip_224.webli", "num_classes": 0, "global_pool": "map"}, ["SigLIP"]),
])
def test_hub_refuses_an_unsupported_architecture_before_requesting_any_weights(tmp_path, monkeypatch, config, words):
    big = b"\0" * 2_000_000  # stands for gigabytes of weights
    hub = StandInHub({"someone/other-model": {"config.json": json.dumps(config).encode(), "model.safetensors": big}})
    try:
        point_at(monkeypatch, hub, tmp_path / "cache")
        with pytest.raises(CheckpointError) as info:
            load_checkpoint("someone/other-model", cache_dir=tmp_path / "cache")
        assert all(w in str(info.value) for w in words), str(info.value)
        assert any("config.json" in r for r in hub.requests)
        assert not any("model.safetensors" in r for r in hub.requests), hub.requests
    finally:
        hub.close()


def test_a_timm_repository_on_the_hub_loads_with_its_head_count_and_preprocessing(tmp_path, monkeypatch):
    model = our_vit(384, 6)
    save_file(to_timm(model), tmp_path / "w.safetensors")
    files = {"model.safetensors": (tmp_path / "w.safetensors").read_bytes(),
             "config.json": json.dumps(timm_config("vit_small_patch16_224.dino", model)).encode()}
    hub = StandInHub({"timm/vit_small_patch16_224.dino": files})
    try:
        point_at(monkeypatch, hub, tmp_path / "cache")
        loaded = load_checkpoint("timm/vit_small_patch16_224.dino", cache_dir=tmp_path / "cache")
    finally:
        hub.close()
    assert loaded.config.num_attention_heads == 6
    assert tuple(loaded.preprocess_spec.image_mean) == (0.485, 0.456, 0.406)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, atol=1e-5, rtol=0)
