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
from .families import architecture_name, check_hf_config, to_family_keys, to_seed_keys
from .timm_format import from_timm_state_dict, is_timm_config, read_timm_config



#: Head counts of the standard ViT widths (timm and Google): Ti 192, S 384, B 768, L 1024, H 1280.
STANDARD_WIDTH_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def heads_for_width(hidden: int, what: str, notes: list[str]) -> int:
    """The head count of a standard ViT width, or a CheckpointError asking for num_heads=."""
    heads = STANDARD_WIDTH_HEADS.get(hidden)
    if heads is None:
        raise CheckpointError(
            f"{what} does not say how many attention heads it has (weights never store it), and its width "
            f"{hidden} is not one of the standard ViT widths "
            f"({', '.join(f'{w} -> {h}' for w, h in STANDARD_WIDTH_HEADS.items())} heads). "
            "Pass num_heads=... (or a config.json) to load it."
        )
    notes.append(f"The head count is not stored in the weights; {heads} heads is the standard for width {hidden}.")
    return heads


def _family_from_keys(state: Mapping[str, Any]) -> str:
    """Guess the checkpoint family from its key names, when no config says it."""
    if any(k.startswith("deit.") or k.endswith("embeddings.distillation_token") for k in state):
        return "deit"
    if any(k.endswith("embeddings.register_tokens") for k in state):
        return "dinov2_with_registers"
    if any(k.endswith("embeddings.mask_token") or ".layer_scale1." in k for k in state):
        return "dinov2"
    return "vit"


def _infer_config(base: Mapping[str, torch.Tensor], *, num_heads: int | None, notes: list[str], model_type: str = "vit",
                  **extra: Any) -> ViTConfig:
    """A ViTConfig read off the shapes of an (unprefixed, seed-named) state dict."""
    try:
        proj = base["embeddings.patch_embeddings.projection.weight"]  # [D, C, P, P]
        pos = base["embeddings.position_embeddings"]  # [1, S' + g*g, D]
        mlp = base["encoder.layer.0.intermediate.dense.weight"]  # [M, D]
    except KeyError as exc:
        raise CheckpointError(f"cannot work out the architecture: {exc.args[0]} is missing.") from None
    hidden, channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    distilled = "embeddings.distillation_token" in base
    registers = base.get("embeddings.register_tokens")
    with_position = 1 + int(distilled)  # prefix tokens that have a position embedding
    grid = math.isqrt(int(pos.shape[1]) - with_position)
    if grid * grid != pos.shape[1] - with_position:
        raise CheckpointError(
            f"position_embeddings has {pos.shape[1]} tokens, which is not {with_position} + a square grid of patches."
        )
    layers = 1 + max(int(m.group(1)) for k in base if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    if num_heads is None:
        num_heads = heads_for_width(hidden, "This checkpoint", notes)
    kwargs: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=int(mlp.shape[0]),
        image_size=grid * patch,
        patch_size=patch,
        num_channels=channels,
        qkv_bias="encoder.layer.0.attention.attention.query.bias" in base,
        model_type=model_type,
        use_distillation_token=distilled,
        use_distillation_head="distillation_classifier.weight" in base,
        num_register_tokens=int(registers.shape[1]) if registers is not None else 0,
        use_mask_token="embeddings.mask_token" in base,
        layerscale_value=1.0 if "encoder.layer.0.layer_scale1.lambda1" in base else None,
    )
    if model_type in ("dinov2", "dinov2_with_registers"):
        kwargs["layer_norm_eps"] = 1e-6
        kwargs["interpolate_antialias"] = model_type == "dinov2_with_registers"
        notes.append("DINOv2 weights without a config.json: layer_norm_eps 1e-6 assumed (DINOv2's).")
    if "classifier.weight" in base:
        kwargs["num_labels"] = int(base["classifier.weight"].shape[0])
    kwargs.update({k: v for k, v in extra.items() if v is not None})
    try:
        return ViTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the weights' shapes do not make a valid ViT config: {exc}") from exc


def _as_config(config: ViTConfig | Mapping[str, Any], notes: list[str] | None = None) -> ViTConfig:
    if isinstance(config, ViTConfig):
        return config
    data = dict(config)
    if "num_attention_heads" not in data and "hidden_size" in data:
        # a hand-written config without a head count: the standard widths, never ViTConfig's default of 12
        data["num_attention_heads"] = heads_for_width(int(data["hidden_size"]), "The config", notes if notes is not None else [])
    try:
        return ViTConfig.from_dict(data)
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
    timm: Mapping[str, Any] | None = None,
    run_size: int | None = None,
) -> nn.Module:
    """Check and load a state dict (any supported family's transformers names, or timm's) into the right class.

    ``timm``: what a timm ``config.json`` says (architecture, model_args, labels), for timm weights.
    ``run_size``: the image size to run at when the position embeddings were trained at another
    (DINOv2: 518 trained, 224 run), as its preprocessor says.
    """
    state = _rename_new_transformers_keys(dict(state_dict), notes)
    if isinstance(config, Mapping) and is_timm_config(config):  # timm's config.json given as config=
        timm, config = check_config(config, what), None
    elif isinstance(config, Mapping):
        check_hf_config(config, what)
    if _looks_like_timm_vit(state) and not _looks_like_hf_vit(state):
        cfg = _as_config(config, notes) if config is not None else None
        timm = dict(timm or {})
        converted_config, state = from_timm_state_dict(
            state,
            num_heads=num_heads if num_heads is not None else (cfg.num_attention_heads if cfg else None),
            id2label=cfg.id2label if cfg is not None and not _placeholder_labels(cfg) else timm.get("id2label"),
            architecture=timm.get("architecture"),
            model_args=timm.get("model_args"),
            _notes=notes,
        )
        notes.append("Converted from timm's format (layer_norm_eps 1e-6).")
        config = converted_config

    if isinstance(config, ViTConfig):
        model_type = config.model_type
    elif isinstance(config, Mapping) and config.get("model_type"):
        model_type = str(config["model_type"])
    else:
        model_type = _family_from_keys(state)
    state = to_seed_keys(state, model_type)

    classifier = any(k.startswith("classifier.") for k in state) or any(k.startswith("vit.") for k in state)
    if classifier:
        dropped = [k for k in state if k.startswith("vit.pooler.")]
        for k in dropped:  # transformers ignores a pooler in a classification checkpoint too
            del state[k]
        if dropped:
            notes.append("The checkpoint's pooler is unused by the classifier and was skipped.")
        base = {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}
        base.update({k: v for k, v in state.items() if k.startswith(("classifier.", "distillation_classifier."))})
    else:
        base = state
    if not _looks_like_hf_vit(base) and config is None:
        raise CheckpointError(f"{what} cannot be loaded. " + _foreign_hint(state))

    if config is None:
        cfg = _infer_config(base, num_heads=num_heads, notes=notes, model_type=model_type)
    else:
        try:
            cfg = _as_config(config, notes)
        except CheckpointError as exc:
            raise CheckpointError(f"{what}: {exc}" + (f" {config_hint}" if config_hint else "")) from exc
        if num_heads is not None and num_heads != cfg.num_attention_heads:
            cfg = cfg.replace(num_attention_heads=num_heads)
    head = state.get("classifier.weight")
    if head is not None and head.ndim == 2 and cfg.num_labels != head.shape[0] and _placeholder_labels(cfg):
        # no real label names were given: the head's size decides how many classes there are
        cfg = cfg.replace(id2label={}, num_labels=int(head.shape[0]))
    if run_size and run_size != cfg.image_size and cfg.model_type in ("dinov2", "dinov2_with_registers"):
        trained = cfg.position_embedding_size or cfg.image_size
        try:
            cfg = cfg.replace(image_size=run_size, position_embedding_size=trained)
        except ValueError as exc:
            raise CheckpointError(f"{what}: cannot run at its preprocessor's size {run_size}: {exc}") from exc
        notes.append(f"Runs at {run_size} px (its preprocessor's crop); the position embeddings, trained for "
                     f"{trained} px, are resized to the {cfg.grid_size}x{cfg.grid_size} grid as DINOv2 does.")

    if classifier:
        model = _build(ViTForImageClassification, cfg)
    else:
        model = _build(ViTModel, cfg, pooler="pooler.dense.weight" in state)
    _check_fit(model, state, what, config_hint)
    return _assign(model, state)


# transformers 5 names the layers differently in memory (save_pretrained still writes the
# classic names); a state_dict() saved straight from such a model is renamed back.
_NEW_TRANSFORMERS_NAMES = [
    (r"(?:layers|encoder\.layer)\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"(?:layers|encoder\.layer)\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"(?:layers|encoder\.layer)\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"(?:layers|encoder\.layer)\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"layers\.(\d+)\.(layernorm_before|layernorm_after)\.", r"encoder.layer.\1.\2."),
]


def _rename_new_transformers_keys(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    if not any(re.match(r"((vit|deit|dinov2)\.)?(layers|encoder\.layer)\.\d+\.attention\.q_proj\.", k) for k in state):
        return state
    renamed = {}
    for key, value in state.items():
        m = re.match(r"(vit\.|deit\.|dinov2\.)?", key)
        prefix = m.group(0) if m else ""
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


def check_config(raw: Mapping[str, Any], what: str) -> dict[str, Any] | None:
    """Refuse a ``config.json`` this app cannot run (before any weights are read or downloaded).

    Returns what a timm config says (see :func:`read_timm_config`), or None for a transformers config.
    """
    if is_timm_config(raw):
        return read_timm_config(raw, what)
    check_hf_config(raw, what)
    return None


def _spec_size(spec: Any) -> int | None:
    """The square size a preprocessing spec produces, if it says one."""
    if spec is None:
        return None
    size = spec.crop_size if spec.do_center_crop and spec.crop_size else spec.size
    return int(size[0]) if size and size[0] == size[1] else None


def _load_directory(directory: Path, *, config, num_heads, notes: list[str], source: str) -> nn.Module:
    config_path = directory / CONFIG_NAME
    what = source.split(": ", 1)[-1]
    if (directory / (SAFETENSORS_NAME + ".index.json")).exists() or (directory / (PICKLE_NAME + ".index.json")).exists():
        raise CheckpointError(
            f"{directory} holds a sharded checkpoint (several weight files with an index); "
            "only single-file checkpoints are supported (every ViT fits in one file)."
        )
    # The config first: a model this app cannot run is refused before its weights are read.
    timm = None
    if config is None and config_path.is_file():
        raw = _read_json(config_path)
        timm = check_config(raw, what)
        config = None if timm is not None else raw
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
    if config is None and timm is None:
        config = _metadata_config(metadata)
        if config is None:
            notes.append("No config.json: the architecture was worked out from the weights' shapes.")
    spec = _load_spec(directory / PREPROCESSOR_NAME, notes)
    if spec is None and timm is not None and timm.get("spec") is not None:
        spec = timm["spec"]
        notes.append("Preprocessing from timm's pretrained_cfg (" + timm["spec_text"] + ").")
    model = _model_from_state_dict(state, config=config, num_heads=num_heads, what=what, notes=notes, timm=timm,
                                   run_size=_spec_size(spec))
    if spec is not None and _spec_size(spec) not in (None, model.config.image_size):
        notes.append(f"The preprocessor makes {_spec_size(spec)} px pictures but the model takes "
                     f"{model.config.image_size} px; the ViT defaults apply.")
        spec = None
    return _attach(model, spec=spec, source=source, notes=notes)


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
    config = model.config
    config_dict = config.to_dict()
    classifier = isinstance(model, ViTForImageClassification)
    config_dict["architectures"] = [
        architecture_name(config.model_type, classifier=classifier, distillation_head=config.use_distillation_head)]
    spec = getattr(model, "preprocess_spec", None) or PreprocessSpec.for_config(model.config)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tensors = to_family_keys(tensors, config.model_type, distillation_head=config.use_distillation_head)
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


