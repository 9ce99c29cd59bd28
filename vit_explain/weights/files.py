"""Reading checkpoint files: safetensors, weights-only pickles, JSON configs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .common import METADATA_CONFIG_KEY, CheckpointError, _names



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


def _read_json(path: Path, what: str | None = None) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a CheckpointError that names the file (or ``what``)."""
    what = what or path.name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} should hold a JSON object, found {type(data).__name__}.")
    return data



def _metadata_config(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    text = metadata.get(METADATA_CONFIG_KEY)
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


