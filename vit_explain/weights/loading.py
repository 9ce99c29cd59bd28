"""load_checkpoint: one entry point that tells a folder, a file, a state dict and a Hub id apart."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ViTConfig
from .common import CheckpointError, ProgressFn, _looks_like_timm_vit
from .files import _metadata_config, _read_pickle, _read_safetensors, _unwrap_state_dict
from .hf_format import _attach, _load_directory, _model_from_state_dict, check_config
from .hub import _REPO_ID, fetch_repo

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
            directory = fetch_repo(text, revision=revision, cache_dir=cache_dir, progress=report, check=check_config)
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


