"""What every checkpoint format shares: file names, errors, building a model skeleton and
loading a checked state dict into it, and the message that lists what does not fit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..config import ViTConfig
from ..model import ViTModel

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


