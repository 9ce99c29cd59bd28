"""Checkpoints in and out, and trained weights moved onto another architecture.

Loading (:func:`load_checkpoint`) accepts

* a local directory in the Hugging Face layout: ``config.json`` + ``model.safetensors`` (or
  ``pytorch_model.bin``), optionally ``preprocessor_config.json``;
* a single ``.safetensors`` file (the config is read from its metadata when this module wrote it,
  otherwise worked out from the tensor shapes);
* a ``.bin`` / ``.pt`` / ``.pth`` file or an in-memory dict holding a state dict, in the Hugging Face
  format or in timm's (converted by :func:`from_timm_state_dict`);
* a Hugging Face Hub repo id such as ``"google/vit-base-patch16-224"``, downloaded with
  ``huggingface_hub`` into its usual cache (offline, a clear error within seconds).

Pickled files are only ever read with ``torch.load(..., weights_only=True)``: a pickle that would
run code is refused. Whatever does not fit the model (missing, unexpected or mis-shaped tensors)
is listed in one :class:`CheckpointError`.

:func:`save_checkpoint` writes the classic Hugging Face layout, which transformers'
``from_pretrained`` reads. :func:`resample` turns a trained model into one with another patch
size, image size, head count or depth, reusing its weights (FlexiViT's pseudo-inverse resize for
the patch kernel, interpolated position embeddings, regrouped heads, the first N layers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.overrides import TorchFunctionMode

from .config import ViTConfig
from .model import ViTForImageClassification, ViTModel

__all__ = [
    "CheckpointError",
    "HubUnreachableError",
    "KnownCheckpoint",
    "KNOWN_CHECKPOINTS",
    "load_checkpoint",
    "save_checkpoint",
    "from_timm_state_dict",
    "resample",
    "resize_patch_kernel",
    "interpolate_position_embeddings",
    "top_k",
    "describe",
]

#: ``progress(fraction, message)``: fraction in [0, 1], message a short sentence for a person.
ProgressFn = Callable[[float, str], None]

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
PREPROCESSOR_NAME = "preprocessor_config.json"
#: Key of the safetensors metadata entry in which save_checkpoint stores the config as JSON.
METADATA_CONFIG_KEY = "vit_explain.config"

#: Seconds allowed to open a TCP connection to the Hub before calling it unreachable.
HUB_PROBE_TIMEOUT = 3.0


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit a ViT; the message says what is wrong."""


class HubUnreachableError(CheckpointError):
    """The Hugging Face Hub cannot be reached (offline) and the checkpoint is not in the cache."""


# --------------------------------------------------------------------------------------------
# Known checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownCheckpoint:
    """A pretrained ViT on the Hugging Face Hub, with what to tell a person before downloading it."""

    repo_id: str
    title: str
    description: str
    num_parameters: int
    download_mb: float
    num_labels: int  # 0: no classifier head (a ViTModel)

    @property
    def has_classifier(self) -> bool:
        return self.num_labels > 0

    def summary(self) -> str:
        """One line: title, parameters and download size."""
        return f"{self.title}: {self.num_parameters / 1e6:.1f}M parameters, about {self.download_mb:.0f} MB to download"


#: Checkpoints the app offers by name. Sizes are those of the float32 ``model.safetensors``.
KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    c.repo_id: c
    for c in (
        KnownCheckpoint(
            "google/vit-base-patch16-224",
            "ViT-B/16 (ImageNet-1k)",
            "The original ViT-Base, 16-pixel patches at 224 px: pre-trained on ImageNet-21k, "
            "fine-tuned on ImageNet-1k (1000 classes).",
            86_567_656,
            346,
            1000,
        ),
        KnownCheckpoint(
            "google/vit-base-patch16-224-in21k",
            "ViT-B/16 (ImageNet-21k, no head)",
            "ViT-Base pre-trained on ImageNet-21k only: no classifier, but a trained pooler; "
            "good for looking at attention and features.",
            86_389_248,
            346,
            0,
        ),
        KnownCheckpoint(
            "facebook/deit-tiny-patch16-224",
            "DeiT-Ti/16 (ImageNet-1k)",
            "Data-efficient ViT-Tiny (192 wide, 3 heads), trained on ImageNet-1k only "
            "(72.2% top-1); small and quick on a CPU.",
            5_717_416,
            23,
            1000,
        ),
        KnownCheckpoint(
            "facebook/deit-small-patch16-224",
            "DeiT-S/16 (ImageNet-1k)",
            "Data-efficient ViT-Small (384 wide, 6 heads), trained on ImageNet-1k only (79.9% top-1).",
            22_050_664,
            88,
            1000,
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Building models without paying for a random initialisation
# --------------------------------------------------------------------------------------------


def _build(kind: type, config: ViTConfig, pooler: bool = True) -> nn.Module:
    """An instance of ``kind`` whose parameters will all be replaced by load_state_dict(assign=True).

    Built on the meta device when the model's constructor allows it (no memory, no random
    numbers), otherwise normally.
    """
    make = (lambda: ViTModel(config, add_pooling_layer=pooler)) if kind is ViTModel else (lambda: kind(config))
    try:
        with torch.device("meta"), _MetaTruth():
            return make()
    except Exception:  # the initialiser needs real numbers: build it the ordinary way
        return make()


class _MetaTruth(TorchFunctionMode):
    """Answers False when code asks a meta tensor for its truth value.

    Meta tensors have shapes but no numbers, so the model's random initialiser (whose
    truncated-normal redraw loop asks ``while (...).any():``) cannot run on them as is. Inside
    this mode that question gets "no", the loop ends, and the model's skeleton is built in
    milliseconds per layer instead of seconds. Only this thread, only inside ``_build``.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__bool__ and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return False
        return func(*args, **(kwargs or {}))


def _assign(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a checked state dict into a model made by _build, so no meta tensor is left."""
    ready = {}
    for key, value in model.state_dict().items():
        tensor = state_dict[key]
        ready[key] = tensor.detach().to(dtype=value.dtype if value.is_floating_point() else tensor.dtype).contiguous()
    model.load_state_dict(ready, strict=True, assign=True)
    left = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - would mean a tensor the state dict does not carry
        raise CheckpointError(f"these tensors were never loaded: {', '.join(left)}")
    return model.eval()


# --------------------------------------------------------------------------------------------
# Checking a state dict against a model
# --------------------------------------------------------------------------------------------


def _names(keys: Sequence[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def _check_fit(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, hint: str = "") -> None:
    """Raise CheckpointError listing every missing, unexpected and mis-shaped key at once."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} expected {list(expected[k])}, file has {list(state_dict[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not (missing or unexpected or wrong or not_tensors):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} key{'s' if len(missing) != 1 else ''} missing: {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape: {_names(wrong, 4)}")
    if not_tensors:
        parts.append(f"{len(not_tensors)} not tensors: {_names(not_tensors)}")
    message = f"{what} does not fit a {type(model).__name__}: " + "; ".join(parts) + "."
    if not _looks_like_hf_vit(state_dict) and not _looks_like_timm_vit(state_dict):
        message += " " + _foreign_hint(state_dict)
    if hint:
        message += " " + hint
    raise CheckpointError(message)


def _looks_like_hf_vit(state_dict: Mapping[str, Any]) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state_dict)


def _looks_like_timm_vit(state_dict: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in state_dict and "pos_embed" in state_dict


def _foreign_hint(state_dict: Mapping[str, Any]) -> str:
    prefixes = sorted({k.split(".")[0] for k in state_dict})
    return (
        "This does not look like a ViT checkpoint (no embeddings.patch_embeddings.projection.weight; "
        f"its keys start with {_names([p + '.' for p in prefixes], 5)}). Only Vision Transformers in "
        "the Hugging Face ViT format or timm's vit_* format can be loaded."
    )


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file (it may be truncated or corrupt; "
            f"download or save it again). Details: {exc}"
        ) from exc
    except OSError as exc:
        raise CheckpointError(f"{path} could not be read: {exc}") from exc
    return tensors, metadata


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save'd state dict, read with weights_only=True (no code from the file ever runs)."""
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise CheckpointError(
                f"{path.name} was refused: its pickle asks to create objects other than tensors, "
                "which could run code on this machine. Only safetensors files or plain tensor "
                "pickles (a state dict saved with torch.save) are accepted; convert it with "
                "safetensors.torch.save_file on a machine you trust."
            ) from exc
        raise CheckpointError(f"{path.name} is not a readable PyTorch file (truncated or corrupt?): {exc}") from exc
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, ImportError) as exc:
        raise CheckpointError(
            f"{path.name} is not a readable PyTorch file (it may be truncated or corrupt): {exc}"
        ) from exc
    return _unwrap_state_dict(obj, path.name)


def _unwrap_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "module"):  # training checkpoints nest the weights
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what} does not hold a state dict (a dict of named tensors).")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} is not a plain state dict: {_names(bad)} are not tensors.")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name} should hold a JSON object, found {type(data).__name__}.")
    return data


# --------------------------------------------------------------------------------------------
# Config from shapes
# --------------------------------------------------------------------------------------------


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
    from .preprocess import PreprocessSpec

    model.preprocess_spec = spec if spec is not None else PreprocessSpec.for_config(model.config)
    model.source = source
    model.load_notes = list(notes)
    return model


def _load_spec(path: Path | None, notes: list[str]) -> Any:
    from .preprocess import PreprocessSpec

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


def _metadata_config(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    text = metadata.get(METADATA_CONFIG_KEY)
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def load_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    config: ViTConfig | Mapping[str, Any] | None = None,
    num_heads: int | None = None,
    progress: ProgressFn | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Load a ViT checkpoint; returns a ViTForImageClassification or a ViTModel in eval mode.

    ``source`` is a local directory (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``), a ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file, a state dict
    (Hugging Face or timm key names), or a Hub repo id such as ``"google/vit-base-patch16-224"``.
    ``config`` (a ViTConfig or a ``config.json`` dict) is used when the source carries none and
    replaces a directory's own ``config.json`` when given; ``num_heads`` sets the head count when
    it cannot be known otherwise (the weights do not store it; the default is 64-dimensional heads).
    ``progress(fraction, message)`` is called as the download and loading advance.

    A checkpoint with a ``classifier`` head gives a ViTForImageClassification, otherwise a
    ViTModel (with a pooler iff the file has ``pooler.dense``). The returned model carries
    ``preprocess_spec`` (a :class:`~vit_explain.preprocess.PreprocessSpec`), ``source`` (a short
    description) and ``load_notes`` (assumptions made while loading, for the user to read).
    Raises :class:`CheckpointError` (a ValueError) with a plain message for anything unusable,
    :class:`HubUnreachableError` when the Hub is needed but cannot be reached.
    """
    report = progress or (lambda fraction, message: None)
    notes: list[str] = []
    if isinstance(source, Mapping):
        report(0.0, "Reading the state dict")
        state = _unwrap_state_dict(source, "the state dict")
        state = {k: v.clone() for k, v in state.items()}  # the model must not share the caller's tensors
        model = _model_from_state_dict(state, config=config, num_heads=num_heads, what="the state dict", notes=notes)
        report(1.0, "Loaded")
        return _attach(model, spec=None, source="state dict", notes=notes)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a Hub repo id or a state dict, got {type(source).__name__}")

    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        report(0.0, f"Reading {path}")
        model = _load_directory(path, config=config, num_heads=num_heads, notes=notes, source=f"local: {path}")
        report(1.0, "Loaded")
        return model
    if path.is_file():
        report(0.0, f"Reading {path.name}")
        if path.suffix == ".safetensors":
            state, metadata = _read_safetensors(path)
            if config is None:
                config = _metadata_config(metadata)
        elif path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
            state = _read_pickle(path)
        else:
            raise CheckpointError(
                f"{path.name}: unknown file type {path.suffix or '(none)'}; give a .safetensors or "
                ".bin/.pt/.pth file, or the folder that holds config.json and the weights."
            )
        if config is None and not _looks_like_timm_vit(state):
            notes.append("No config.json: the architecture was worked out from the weights' shapes.")
        model = _model_from_state_dict(state, config=config, num_heads=num_heads, what=path.name, notes=notes)
        report(1.0, "Loaded")
        return _attach(model, spec=None, source=f"file: {path.name}", notes=notes)

    text = os.fspath(source)
    if _REPO_ID.fullmatch(text) and not text.startswith((".", "/", "~")):
        try:
            directory = _hub_download(text, revision=revision, cache_dir=cache_dir, report=report)
        except CheckpointError as exc:
            if Path(text.split("/")[0]).is_dir():  # probably meant as a local path
                raise type(exc)(f"{exc} (No local folder {str(path)!r} exists either, seen from {os.getcwd()}.)") from exc
            raise
        report(0.97, "Building the model")
        model = _load_directory(directory, config=config, num_heads=num_heads, notes=notes, source=f"hub: {text}")
        report(1.0, "Loaded")
        return model
    raise CheckpointError(
        f"{text!r} is neither an existing file or folder nor a Hugging Face Hub repo id "
        "(like 'google/vit-base-patch16-224')."
    )


# --------------------------------------------------------------------------------------------
# The Hugging Face Hub
# --------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}")
_TRUE = {"1", "true", "yes", "on"}


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_offline() -> bool:
    """Offline mode as huggingface_hub sees it (read at its import) or as the environment says now."""
    from huggingface_hub import constants

    from_env = any((os.environ.get(n) or "").strip().lower() in _TRUE for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return from_env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _uses_proxy() -> bool:
    return any(os.environ.get(n) for n in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Can a TCP connection to the Hub be opened within ``timeout`` seconds? (DNS included)"""
    if _uses_proxy():  # only the proxy knows; let huggingface_hub try
        return True
    url = urlparse(endpoint)
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, daemon=True)  # name lookups ignore socket timeouts
    worker.start()
    worker.join(timeout + 1.0)
    return bool(outcome and outcome[0])


def _unreachable(repo_id: str, reason: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"Cannot reach the Hugging Face Hub to download {repo_id!r}: {reason}. "
        "The bundled model works offline and needs no download. To use this checkpoint without "
        f"the Hub, fetch config.json, model.safetensors and preprocessor_config.json from "
        f"https://huggingface.co/{repo_id} on a machine with internet, put them in one folder "
        "and load that folder instead (load_checkpoint('/path/to/folder'))."
    )


def _mb(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def _hub_download(repo_id: str, *, revision, cache_dir, report: ProgressFn) -> Path:
    """The snapshot folder holding the checkpoint's files, from the cache or downloaded."""
    import huggingface_hub
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    common = dict(repo_id=repo_id, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir))

    # 1. Already in the cache? Then no network is needed at all.
    report(0.0, f"Looking for {repo_id} in the Hugging Face cache")
    cached: dict[str, Path] = {}
    for name in (CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME, PREPROCESSOR_NAME):
        try:
            cached[name] = Path(hf_hub_download(filename=name, local_files_only=True, **common))
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ValueError):
            pass
    if CONFIG_NAME in cached and (SAFETENSORS_NAME in cached or PICKLE_NAME in cached):
        report(0.95, f"Found {repo_id} in the cache")
        return cached[CONFIG_NAME].parent

    # 2. Fail fast when offline, instead of minutes of retries.
    if _hub_offline():
        raise _unreachable(repo_id, "offline mode is on (HF_HUB_OFFLINE is set) and it is not in the local cache")
    endpoint = _hub_endpoint()
    report(0.0, f"Connecting to {urlparse(endpoint).hostname}")
    if not _hub_reachable(endpoint):
        raise _unreachable(repo_id, f"no connection to {urlparse(endpoint).hostname} (this machine seems to be offline)")

    # 3. Which files, and how big.
    try:
        info = huggingface_hub.HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id!r} is a gated repository: accept its terms on huggingface.co and log in "
            "(huggingface-cli login) before downloading it."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"There is no public model called {repo_id!r} on the Hugging Face Hub (check the spelling).") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"{repo_id!r} has no revision {revision!r}.") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise _unreachable(repo_id, f"the Hub did not answer ({exc.__class__.__name__})") from exc
    sizes = {s.rfilename: getattr(s, "size", None) for s in (info.siblings or [])}
    if CONFIG_NAME not in sizes:
        raise CheckpointError(f"{repo_id!r} has no config.json; it is not a transformers model repository.")
    if SAFETENSORS_NAME in sizes:
        weights = SAFETENSORS_NAME
    elif PICKLE_NAME in sizes:
        weights = PICKLE_NAME
    else:
        raise CheckpointError(
            f"{repo_id!r} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME} (sharded and other "
            "formats are not supported)."
        )
    wanted = [CONFIG_NAME] + ([PREPROCESSOR_NAME] if PREPROCESSOR_NAME in sizes else []) + [weights]
    total = sum(sizes.get(n) or 0 for n in wanted) or 1
    done = 0

    # 4. Download, reporting bytes as they arrive when huggingface_hub lets us see them.
    import inspect

    can_hook = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    folder: Path | None = None
    for name in wanted:
        size = sizes.get(name)
        start = done
        report(0.95 * start / total, f"Downloading {name} ({_mb(size)})")
        kwargs: dict[str, Any] = dict(filename=name, endpoint=endpoint, **common)
        if can_hook:
            kwargs["tqdm_class"] = _progress_bar_class(
                lambda n, name=name, start=start, size=size: report(
                    0.95 * min(total, start + n) / total, f"Downloading {name}: {_mb(n)} of {_mb(size)}"
                )
            )
        try:
            folder = Path(hf_hub_download(**kwargs)).parent
        except EntryNotFoundError as exc:
            raise CheckpointError(f"{repo_id!r} lists {name} but it could not be fetched.") from exc
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise _unreachable(repo_id, f"the download of {name} failed ({exc.__class__.__name__})") from exc
        done += size or 0
        report(0.95 * done / total, f"Downloaded {name} ({_mb(size)})")
    assert folder is not None
    return folder


def _progress_bar_class(on_bytes: Callable[[int], None]) -> type:
    """A tqdm subclass for huggingface_hub that forwards the byte count to ``on_bytes``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Progress(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no terminal bar; the callback reports instead
            super().__init__(*args, **kwargs)
            self._seen = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            self._seen += int(n or 0)
            on_bytes(self._seen)
            return super().update(n)

    return _Progress


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_checkpoint(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into ``directory``.

    The layout is the one transformers' ``save_pretrained`` writes, so
    ``transformers.ViTForImageClassification.from_pretrained(directory)`` (or ``ViTModel``) reads it,
    and so does :func:`load_checkpoint`. Returns the directory.
    """
    from safetensors.torch import save_file

    from .preprocess import PreprocessSpec

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


# --------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------

_TIMM_REFUSALS = [
    (r"^fc_norm\.", "it pools by averaging the patch tokens (fc_norm, global_pool='avg'); the classic ViT classifies from the CLS token"),
    (r"^dist_token$|^head_dist\.", "it is a distilled DeiT with a second (distillation) token and head"),
    (r"^reg_token$", "it has register tokens"),
    (r"\.ls[12]\.", "it uses layer scale (ls1/ls2, as in DeiT-III or CaiT)"),
    (r"\.(q_norm|k_norm)\.|\.attn\.norm\.", "it normalises queries and keys (qk-norm)"),
    (r"\.attn\.(q_bias|v_bias)$", "it has separate q/v biases (BEiT style)"),
    (r"^attn_pool\.", "it pools with attention (MAP head)"),
    (r"\.norm_pre\.|^norm_pre\.", "it has a pre-norm before the blocks (CLIP style)"),
]


def from_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    image_size: int | None = None,
    layer_norm_eps: float = 1e-6,
    id2label: Mapping[int, str] | None = None,
    _notes: list[str] | None = None,
) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """Convert a timm ``vit_*`` state dict to (ViTConfig, Hugging Face state dict).

    Returns a config and a state dict rather than a model, so the caller chooses what to build
    (``load_checkpoint(state_dict)`` does the whole job). The fused ``attn.qkv`` projection is split
    into query, key and value (in that order); ``head`` becomes ``classifier`` (keys prefixed
    ``vit.``, for a ViTForImageClassification); without a head (absent or 0 classes) the result is
    a ViTModel state dict, whose pooler is timm's ``pre_logits.fc`` if the model has one.

    The weights do not record the head count: ``num_heads`` defaults to hidden size / 64, as in
    every standard timm ViT (Ti: 3, S: 6, B: 12, L: 16). ``layer_norm_eps`` stays at timm's 1e-6.
    ``image_size`` other than the one the weights were trained at interpolates the position
    embeddings to the new grid. Models that are not the classic ViT (average pooling, layer
    scale, distillation or register tokens, ...) raise CheckpointError naming the feature.
    """
    notes = _notes if _notes is not None else []
    sd = _unwrap_state_dict(state_dict, "the timm state dict")
    for pattern, why in _TIMM_REFUSALS:
        hits = [k for k in sd if re.search(pattern, k)]
        if hits:
            raise CheckpointError(
                f"This timm model is not the classic ViT architecture: {why} ({_names(hits, 3)})."
            )
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight"):
        if key not in sd:
            hint = " (a model without a CLS token is not supported)" if key == "cls_token" else ""
            raise CheckpointError(f"The timm state dict has no {key}{hint}; it is not a timm ViT.")

    proj = sd["patch_embed.proj.weight"]  # [D, C, P, P]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"patch_embed.proj.weight should be [D, C, P, P] with square patches, got {list(proj.shape)}.")
    hidden, channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    head_w = sd.get("head.weight")
    has_head = head_w is not None and head_w.numel() > 0
    has_pre_logits = "pre_logits.fc.weight" in sd
    if has_head and has_pre_logits:
        raise CheckpointError(
            "This timm model has a pre-logits layer (pre_logits.fc) before its classifier head; "
            "the Hugging Face ViT classifier has no such layer. Drop head.* to load it as a "
            "ViTModel whose pooler is that layer."
        )

    pos = sd["pos_embed"]  # [1, T, D]
    tokens = int(pos.shape[1])
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        if math.isqrt(tokens) ** 2 == tokens:
            # timm's no_embed_class: the CLS token gets no position embedding; zero is exactly that.
            pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            grid = math.isqrt(tokens)
            notes.append("The CLS token had no position embedding (no_embed_class); a zero one was added.")
        else:
            raise CheckpointError(f"pos_embed has {tokens} tokens, which is not 1 + a square grid.")
    trained_size = grid * patch
    if image_size is not None and image_size != trained_size:
        if image_size % patch:
            raise CheckpointError(f"image_size {image_size} is not a multiple of the patch size {patch}.")
        pos = interpolate_position_embeddings(pos, image_size // patch)
        notes.append(f"Position embeddings interpolated from {grid}x{grid} to {image_size // patch}x{image_size // patch} patches.")
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layer_ids:
        raise CheckpointError("The timm state dict has no blocks.*: no transformer layers to convert.")
    if layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"The timm blocks are not numbered 0..N-1: {layer_ids}.")
    if num_heads is None:
        if hidden % 64:
            raise CheckpointError(
                f"Hidden size {hidden} is not a multiple of 64, so the head count cannot be assumed; pass num_heads=..."
            )
        num_heads = hidden // 64
        notes.append(f"Assumed {num_heads} attention heads of 64 dimensions (timm weights do not record it).")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError("blocks.0.mlp.fc1.weight is missing; this is not a timm ViT block.")
    labels = dict(id2label) if id2label else {}
    num_labels = int(head_w.shape[0]) if has_head else 0
    if labels and len(labels) != num_labels:
        raise CheckpointError(f"id2label names {len(labels)} classes but the head has {num_labels} outputs.")
    try:
        config = ViTConfig(
            hidden_size=hidden,
            num_hidden_layers=len(layer_ids),
            num_attention_heads=num_heads,
            intermediate_size=int(fc1.shape[0]),
            hidden_act="gelu",
            layer_norm_eps=layer_norm_eps,
            image_size=image_size or trained_size,
            patch_size=patch,
            num_channels=channels,
            qkv_bias="blocks.0.attn.qkv.bias" in sd,
            id2label=labels,
            num_labels=num_labels if has_head else None,
        )
    except ValueError as exc:
        raise CheckpointError(f"The timm weights do not make a valid ViT config: {exc}") from exc

    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"The timm state dict is missing {key}.")
        used.add(key)
        return sd[key]

    def copy_pair(timm_prefix: str, hf_prefix: str, bias: bool = True) -> None:
        out[f"{hf_prefix}.weight"] = take(f"{timm_prefix}.weight")
        if bias:
            out[f"{hf_prefix}.bias"] = take(f"{timm_prefix}.bias")

    take("cls_token")
    take("pos_embed")
    out["embeddings.cls_token"] = sd["cls_token"]
    out["embeddings.position_embeddings"] = pos
    copy_pair("patch_embed.proj", "embeddings.patch_embeddings.projection")
    for i in layer_ids:
        t, h = f"blocks.{i}", f"encoder.layer.{i}"
        copy_pair(f"{t}.norm1", f"{h}.layernorm_before")
        qkv_w = take(f"{t}.attn.qkv.weight")  # [3D, D], rows: all of q, then k, then v
        if tuple(qkv_w.shape) != (3 * hidden, hidden):
            raise CheckpointError(f"{t}.attn.qkv.weight should be [{3 * hidden}, {hidden}], got {list(qkv_w.shape)}.")
        for name, part in zip(("query", "key", "value"), qkv_w.chunk(3, dim=0)):
            out[f"{h}.attention.attention.{name}.weight"] = part
        if config.qkv_bias:
            for name, part in zip(("query", "key", "value"), take(f"{t}.attn.qkv.bias").chunk(3, dim=0)):
                out[f"{h}.attention.attention.{name}.bias"] = part
        copy_pair(f"{t}.attn.proj", f"{h}.attention.output.dense")
        copy_pair(f"{t}.norm2", f"{h}.layernorm_after")
        copy_pair(f"{t}.mlp.fc1", f"{h}.intermediate.dense")
        copy_pair(f"{t}.mlp.fc2", f"{h}.output.dense")
    copy_pair("norm", "layernorm")
    if has_head:
        out = {f"vit.{k}": v for k, v in out.items()}
        copy_pair("head", "classifier")
    else:
        used.update(k for k in ("head.weight", "head.bias") if k in sd)  # 0-class heads
        if has_pre_logits:
            copy_pair("pre_logits.fc", "pooler.dense")
    left = sorted(set(sd) - used)
    if left:
        raise CheckpointError(f"The timm state dict has keys this converter does not know: {_names(left)}.")
    return config, {k: v.detach().clone().contiguous() for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Resampling a trained model
# --------------------------------------------------------------------------------------------


def _bilinear_resize_matrix(old: int, new: int) -> torch.Tensor:
    """B [new*new, old*old]: column j is basis image j (old x old) resized bilinearly to new x new."""
    basis = torch.eye(old * old, dtype=torch.float64).reshape(old * old, 1, old, old)
    resized = F.interpolate(basis, size=(new, new), mode="bilinear", align_corners=False, antialias=False)
    return rearrange(resized, "j 1 h w -> (h w) j")


def resize_patch_kernel(kernel: torch.Tensor, new_patch_size: int, *, method: str = "pi") -> torch.Tensor:
    """Resize a patch-embedding kernel [D, C, P, P] to [D, C, new, new].

    ``method="pi"`` is FlexiViT's pseudo-inverse resize (Beyer et al. 2023): with B the bilinear
    resize of a P x P patch to new x new, the new kernel is ``pinv(B^T) w``, the kernel whose
    response to a resized patch ``B x`` best matches the old kernel's response to ``x``. When the
    patch grows (new >= P) the match is exact: ``<B x, w_new> = <x, w>`` for every patch x.
    ``method="bilinear"`` resizes the kernel like an image (the naive baseline, for comparison).
    """
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
        raise ValueError(f"kernel must be [D, C, P, P], got {list(kernel.shape)}")
    old = int(kernel.shape[-1])
    if new_patch_size == old:
        return kernel.clone()
    if method == "bilinear":
        return F.interpolate(kernel.double(), size=(new_patch_size, new_patch_size), mode="bilinear",
                             align_corners=False, antialias=False).to(kernel.dtype)
    if method != "pi":
        raise ValueError(f"method must be 'pi' or 'bilinear', got {method!r}")
    resize = _bilinear_resize_matrix(old, new_patch_size)  # [new^2, old^2]
    flat = rearrange(kernel.double(), "d c h w -> (h w) (d c)")  # [old^2, D*C]
    new_flat = torch.linalg.pinv(resize.T) @ flat  # [new^2, D*C]
    d, c = kernel.shape[:2]
    return rearrange(new_flat, "(h w) (d c) -> d c h w", h=new_patch_size, d=d, c=c).to(kernel.dtype)


def interpolate_position_embeddings(position_embeddings: torch.Tensor, new_grid: int) -> torch.Tensor:
    """[1, 1 + g*g, D] -> [1, 1 + new_grid^2, D]: the CLS entry kept, the patch grid resized bicubically."""
    tokens = position_embeddings.shape[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"position embeddings with {tokens} tokens are not CLS + a square grid")
    if new_grid == grid:
        return position_embeddings.clone()
    cls, patches = position_embeddings[:, :1], position_embeddings[:, 1:]
    image = rearrange(patches.double(), "1 (gh gw) d -> 1 d gh gw", gh=grid)
    resized = F.interpolate(image, size=(new_grid, new_grid), mode="bicubic", align_corners=False,
                            antialias=new_grid < grid)  # smooth first when shrinking
    patches = rearrange(resized, "1 d gh gw -> 1 (gh gw) d").to(position_embeddings.dtype)
    return torch.cat([cls, patches], dim=1)


def _allowed_heads(hidden: int) -> list[int]:
    return [h for h in range(1, hidden + 1) if hidden % h == 0]


def resample(
    model: nn.Module,
    *,
    patch_size: int | None = None,
    image_size: int | None = None,
    num_heads: int | None = None,
    num_layers: int | None = None,
    kernel_resize: str = "pi",
) -> nn.Module:
    """A new model of the same class built from ``model``'s trained weights with another shape.

    * ``patch_size``: the patch kernel is resized with FlexiViT's pseudo-inverse resize
      (``kernel_resize="bilinear"`` for the naive image-like resize); the image size stays unless
      given too, so the patch grid changes and the position embeddings are interpolated to it.
    * ``image_size``: the position embeddings are interpolated (bicubic) to the new grid, CLS kept.
    * ``num_heads``: the same query/key/value/output weights, split into another number of heads
      (any divisor of the hidden size).
    * ``num_layers``: the first N encoder layers are kept (1 <= N <= current).

    ``model`` is left untouched. The result is in eval mode and carries the labels, ``source`` and
    a ``preprocess_spec`` adjusted to the new image size.
    """
    if not isinstance(model, (ViTModel, ViTForImageClassification)):
        raise TypeError(f"resample expects a ViTModel or ViTForImageClassification, got {type(model).__name__}")
    config: ViTConfig = model.config
    changes: dict[str, Any] = {}
    new_patch = config.patch_size if patch_size is None else int(patch_size)
    new_image = config.image_size if image_size is None else int(image_size)
    if new_patch != config.patch_size:
        changes["patch_size"] = new_patch
    if new_image != config.image_size:
        changes["image_size"] = new_image
    if num_heads is not None and num_heads != config.num_attention_heads:
        allowed = _allowed_heads(config.hidden_size)
        if num_heads not in allowed:
            raise ValueError(
                f"{num_heads} heads cannot split hidden size {config.hidden_size}; allowed head counts: "
                f"{', '.join(map(str, allowed))}."
            )
        changes["num_attention_heads"] = int(num_heads)
    if num_layers is not None and num_layers != config.num_hidden_layers:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(
                f"num_layers must be between 1 and {config.num_hidden_layers} (the trained depth), got {num_layers}."
            )
        changes["num_hidden_layers"] = int(num_layers)
    new_config = config.replace(**changes)  # validates patch/image divisibility with a clear message

    prefix = "vit." if isinstance(model, ViTForImageClassification) else ""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    kernel_key = f"{prefix}embeddings.patch_embeddings.projection.weight"
    if new_patch != config.patch_size:
        state[kernel_key] = resize_patch_kernel(state[kernel_key], new_patch, method=kernel_resize)
    if new_config.grid_size != config.grid_size:
        pos_key = f"{prefix}embeddings.position_embeddings"
        state[pos_key] = interpolate_position_embeddings(state[pos_key], new_config.grid_size)
    if new_config.num_hidden_layers < config.num_hidden_layers:
        layer = re.compile(rf"^{re.escape(prefix)}encoder\.layer\.(\d+)\.")
        state = {
            k: v for k, v in state.items()
            if not ((m := layer.match(k)) and int(m.group(1)) >= new_config.num_hidden_layers)
        }

    if isinstance(model, ViTForImageClassification):
        new = _build(ViTForImageClassification, new_config)
    else:
        new = _build(ViTModel, new_config, pooler=model.pooler is not None)
    _check_fit(new, state, "the resampled weights")
    _assign(new, state)

    spec = getattr(model, "preprocess_spec", None)
    new.preprocess_spec = _spec_for_size(spec, config, new_config)
    new.source = getattr(model, "source", "model")
    if changes:
        what = ", ".join(f"{k.replace('num_attention_heads', 'heads').replace('num_hidden_layers', 'layers')} {v}" for k, v in changes.items())
        new.source += f" (resampled: {what})"
    new.load_notes = list(getattr(model, "load_notes", []))
    return new


def _spec_for_size(spec: Any, old: ViTConfig, new: ViTConfig) -> Any:
    """The model's preprocessing with its geometry scaled from old.image_size to new.image_size."""
    from .preprocess import PreprocessSpec

    if spec is None:
        return PreprocessSpec.for_config(new)
    if old.image_size == new.image_size:
        return spec
    ratio = new.image_size / old.image_size

    def scale(v: int | None) -> int | None:
        return None if v is None else max(1, round(v * ratio))

    try:
        changes: dict[str, Any] = {}
        if spec.size is not None:
            changes["size"] = (scale(spec.size[0]), scale(spec.size[1]))
        if spec.shortest_edge is not None:
            changes["shortest_edge"] = scale(spec.shortest_edge)
            changes["longest_edge"] = scale(spec.longest_edge)
        if spec.crop_size is not None:
            changes["crop_size"] = (new.image_size, new.image_size) if spec.do_center_crop else (
                scale(spec.crop_size[0]), scale(spec.crop_size[1]))
        scaled = dataclasses.replace(spec, **changes)
        if scaled.output_size(4 * new.image_size, 4 * new.image_size) == (new.image_size, new.image_size):
            return scaled
    except (ValueError, TypeError):
        pass
    # Anything else: the ViT defaults at the new size, keeping the checkpoint's colour statistics.
    return dataclasses.replace(
        PreprocessSpec.for_config(new), image_mean=spec.image_mean, image_std=spec.image_std, resample=spec.resample
    )


# --------------------------------------------------------------------------------------------
# Small helpers for the app
# --------------------------------------------------------------------------------------------


def top_k(logits: Any, id2label: Mapping[int, str] | Sequence[str] | None, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes as (label, probability), most probable first.

    ``logits`` is [K] or [1, K] (a tensor or anything torch.as_tensor takes); probabilities are
    the softmax over all K classes; ``k`` is clipped to K.
    """
    scores = torch.as_tensor(logits).detach().to(torch.float64)
    if scores.ndim == 2 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"logits must be [K] or [1, K] with K >= 1, got shape {list(scores.shape)}")
    probs = torch.softmax(scores, dim=0)
    k = max(0, min(int(k), probs.numel()))
    values, indices = torch.topk(probs, k)
    if isinstance(id2label, Mapping):
        names = {int(key): str(value) for key, value in id2label.items()}
    elif id2label is not None:
        names = dict(enumerate(map(str, id2label)))
    else:
        names = {}
    return [(names.get(int(i), f"LABEL_{int(i)}"), float(p)) for p, i in zip(values, indices)]


def describe(model: nn.Module) -> dict[str, Any]:
    """A short summary of a model for display: sizes, parameter count, head and pooler."""
    config: ViTConfig = model.config
    is_classifier = isinstance(model, ViTForImageClassification)
    base = model.vit if is_classifier else model
    return {
        "class": type(model).__name__,
        "source": getattr(model, "source", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "grid_size": config.grid_size,
        "num_tokens": config.num_tokens,
        "layer_norm_eps": config.layer_norm_eps,
        "has_pooler": base.pooler is not None,
        "is_classifier": is_classifier,
        "num_labels": config.num_labels if is_classifier else 0,
    }
