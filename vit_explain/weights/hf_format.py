"""The Hugging Face layout: config.json + model.safetensors folders, single files, state dicts
in transformers' key names; saving in the same layout."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ViTConfig
from ..model import ViTForImageClassification, ViTModel
from .common import (
    CONFIG_NAME,
    METADATA_CONFIG_KEY,
    PICKLE_NAME,
    PREPROCESSOR_NAME,
    SAFETENSORS_NAME,
    CheckpointError,
    _assign,
    _build,
    _check_fit,
    _foreign_hint,
    _looks_like_hf_vit,
    _looks_like_timm_vit,
)
from .files import _metadata_config, _read_json, _read_pickle, _read_safetensors
from .timm_format import from_timm_state_dict



def _infer_config(base: Mapping[str, torch.Tensor], *, num_heads: int | None, notes: list[str], **extra: Any) -> ViTConfig:
    """A ViTConfig read off the shapes of an (unprefixed) Hugging Face ViT state dict."""
    try:
        proj = base["embeddings.patch_embeddings.projection.weight"]  # [D, C, P, P]
        pos = base["embeddings.position_embeddings"]  # [1, T, D]
        mlp = base["encoder.layer.0.intermediate.dense.weight"]  # [M, D]
    except KeyError as exc:
        raise CheckpointError(f"cannot work out the architecture: {exc.args[0]} is missing.") from None
    hidden, channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    grid = math.isqrt(int(pos.shape[1]) - 1)
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(
            f"position_embeddings has {pos.shape[1]} tokens, which is not 1 + a square grid of patches."
        )
    layers = 1 + max(int(m.group(1)) for k in base if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    if num_heads is None:
        if hidden % 64:
            raise CheckpointError(
                f"the number of attention heads cannot be read from the weights, and hidden size "
                f"{hidden} is not a multiple of 64 (the usual head size); pass num_heads=..."
            )
        num_heads = hidden // 64
        notes.append(
            f"The head count is not stored in the weights; assumed {num_heads} heads of 64 dimensions "
            "(pass num_heads=... or a config to change it)."
        )
    kwargs: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=int(mlp.shape[0]),
        image_size=grid * patch,
        patch_size=patch,
        num_channels=channels,
        qkv_bias="encoder.layer.0.attention.attention.query.bias" in base,
    )
    if "classifier.weight" in base:
        kwargs["num_labels"] = int(base["classifier.weight"].shape[0])
    kwargs.update({k: v for k, v in extra.items() if v is not None})
    try:
        return ViTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the weights' shapes do not make a valid ViT config: {exc}") from exc


def _as_config(config: ViTConfig | Mapping[str, Any]) -> ViTConfig:
    if isinstance(config, ViTConfig):
        return config
    try:
        return ViTConfig.from_dict(dict(config))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the config cannot build a ViT: {exc}") from exc


# --------------------------------------------------------------------------------------------
# State dict -> model
# --------------------------------------------------------------------------------------------


def _model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: ViTConfig | Mapping[str, Any] | None,
    num_heads: int | None,
    what: str,
    notes: list[str],
    config_hint: str = "",
) -> nn.Module:
    """Check and load a Hugging Face (or timm) format state dict into the right class."""
    state = _rename_new_transformers_keys(dict(state_dict), notes)
    if _looks_like_timm_vit(state) and not _looks_like_hf_vit(state):
        cfg = _as_config(config) if config is not None else None
        converted_config, state = from_timm_state_dict(
            state,
            num_heads=num_heads if num_heads is not None else (cfg.num_attention_heads if cfg else None),
            id2label=cfg.id2label if cfg is not None and not _placeholder_labels(cfg) else None,
            _notes=notes,
        )
        notes.append("Converted from timm's format (layer_norm_eps 1e-6).")
        config = converted_config

    classifier = any(k.startswith("classifier.") for k in state) or any(k.startswith("vit.") for k in state)
    if classifier:
        dropped = [k for k in state if k.startswith("vit.pooler.")]
        for k in dropped:  # transformers ignores a pooler in a classification checkpoint too
            del state[k]
        if dropped:
            notes.append("The checkpoint's pooler is unused by the classifier and was skipped.")
        base = {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}
        base.update({k: v for k, v in state.items() if k.startswith("classifier.")})
    else:
        base = state
    if not _looks_like_hf_vit(base) and config is None:
        raise CheckpointError(f"{what} cannot be loaded. " + _foreign_hint(state))

    if config is None:
        cfg = _infer_config(base, num_heads=num_heads, notes=notes)
    else:
        try:
            cfg = _as_config(config)
        except CheckpointError as exc:
            raise CheckpointError(f"{what}: {exc}" + (f" {config_hint}" if config_hint else "")) from exc
        if num_heads is not None and num_heads != cfg.num_attention_heads:
            cfg = cfg.replace(num_attention_heads=num_heads)
    head = state.get("classifier.weight")
    if head is not None and head.ndim == 2 and cfg.num_labels != head.shape[0] and _placeholder_labels(cfg):
        # no real label names were given: the head's size decides how many classes there are
        cfg = cfg.replace(id2label={}, num_labels=int(head.shape[0]))

    if classifier:
        model = _build(ViTForImageClassification, cfg)
    else:
        model = _build(ViTModel, cfg, pooler="pooler.dense.weight" in state)
    _check_fit(model, state, what, config_hint)
    return _assign(model, state)


# transformers 5 names the layers differently in memory (save_pretrained still writes the
# classic names); a state_dict() saved straight from such a model is renamed back.
_NEW_TRANSFORMERS_NAMES = [
    (r"layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"layers\.(\d+)\.(layernorm_before|layernorm_after)\.", r"encoder.layer.\1.\2."),
]


def _rename_new_transformers_keys(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    if not any(re.match(r"(vit\.)?layers\.\d+\.attention\.q_proj\.", k) for k in state):
        return state
    renamed = {}
    for key, value in state.items():
        prefix = "vit." if key.startswith("vit.") else ""
        rest = key[len(prefix):]
        for pattern, replacement in _NEW_TRANSFORMERS_NAMES:
            rest = re.sub("^" + pattern, replacement, rest)
        renamed[prefix + rest] = value
    notes.append("Renamed transformers 5's in-memory key names to the checkpoint format.")
    return renamed


def _placeholder_labels(config: ViTConfig) -> bool:
    return all(name == f"LABEL_{i}" for i, name in config.id2label.items())


def _attach(model: nn.Module, *, spec: Any, source: str, notes: list[str]) -> nn.Module:
    from ..preprocess import PreprocessSpec

    model.preprocess_spec = spec if spec is not None else PreprocessSpec.for_config(model.config)
    model.source = source
    model.load_notes = list(notes)
    return model


def _load_spec(path: Path | None, notes: list[str]) -> Any:
    from ..preprocess import PreprocessSpec

    if path is None or not path.is_file():
        return None
    try:
        return PreprocessSpec.from_dict(_read_json(path))
    except (ValueError, TypeError) as exc:
        notes.append(f"{path.name} could not be used ({exc}); the ViT defaults apply.")
        return None


def _load_directory(directory: Path, *, config, num_heads, notes: list[str], source: str) -> nn.Module:
    config_path = directory / CONFIG_NAME
    if (directory / (SAFETENSORS_NAME + ".index.json")).exists() or (directory / (PICKLE_NAME + ".index.json")).exists():
        raise CheckpointError(
            f"{directory} holds a sharded checkpoint (several weight files with an index); "
            "only single-file checkpoints are supported (every ViT fits in one file)."
        )
    if (directory / SAFETENSORS_NAME).is_file():
        state, metadata = _read_safetensors(directory / SAFETENSORS_NAME)
    elif (directory / PICKLE_NAME).is_file():
        state, metadata = _read_pickle(directory / PICKLE_NAME), {}
    else:
        # The folder's other files are not listed: on a shared server that would let anyone browse it.
        raise CheckpointError(
            f"{directory} has no {SAFETENSORS_NAME} or {PICKLE_NAME}. Point to a folder saved with "
            "save_pretrained or save_checkpoint, or to a .safetensors file."
        )
    hint = ""
    if config is None and config_path.is_file():
        raw = _read_json(config_path)
        model_type = raw.get("model_type")
        if model_type not in (None, "vit"):
            hint = (
                f"Its config.json describes a {model_type!r} model "
                f"({', '.join(raw.get('architectures') or []) or 'no architectures listed'}); only ViT "
                "(model_type 'vit') checkpoints load here."
            )
        config = raw
    elif config is None:
        config = _metadata_config(metadata)
        if config is None:
            notes.append("No config.json: the architecture was worked out from the weights' shapes.")
    return _attach(
        _model_from_state_dict(
            state, config=config, num_heads=num_heads, what=source.split(": ", 1)[-1], notes=notes, config_hint=hint
        ),
        spec=_load_spec(directory / PREPROCESSOR_NAME, notes),
        source=source,
        notes=notes,
    )





def save_checkpoint(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into ``directory``.

    The layout is the one transformers' ``save_pretrained`` writes, so
    ``transformers.ViTForImageClassification.from_pretrained(directory)`` (or ``ViTModel``) reads it,
    and so does :func:`load_checkpoint`. Returns the directory.
    """
    from safetensors.torch import save_file

    from ..preprocess import PreprocessSpec

    if not isinstance(model, (ViTModel, ViTForImageClassification)):
        raise TypeError(f"save_checkpoint expects a ViTModel or ViTForImageClassification, got {type(model).__name__}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = model.config.to_dict()
    config_dict["architectures"] = [type(model).__name__]
    spec = getattr(model, "preprocess_spec", None) or PreprocessSpec.for_config(model.config)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", METADATA_CONFIG_KEY: json.dumps(config_dict)}

    # Write each file beside its final name, then rename: a crash never leaves half a file.
    def write(name: str, writer: Callable[[str], None]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        os.close(fd)
        try:
            writer(tmp)
            os.replace(tmp, out / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_json(data: dict) -> Callable[[str], None]:
        return lambda p: Path(p).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    write(SAFETENSORS_NAME, lambda p: save_file(tensors, p, metadata=metadata))
    write(CONFIG_NAME, write_json(config_dict))
    write(PREPROCESSOR_NAME, write_json(spec.to_dict()))
    return out


