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

One module per concern: ``common`` (errors, building and checking), ``files`` (reading),
``hf_format`` (Hugging Face folders, files and saving), ``timm_format`` (timm conversion), ``hub``
(the Hub), ``loading`` (:func:`load_checkpoint`), ``resampling``, ``known`` (checkpoints offered
by name) and ``summary`` (helpers for the app). This package re-exports the public names.
"""

from __future__ import annotations

from .common import (
    CONFIG_NAME,
    METADATA_CONFIG_KEY,
    PICKLE_NAME,
    PREPROCESSOR_NAME,
    SAFETENSORS_NAME,
    CheckpointError,
    HubUnreachableError,
    ProgressFn,
)
from .hf_format import save_checkpoint
from .hub import _progress_bar_class, fetch_repo
from .known import KNOWN_CHECKPOINTS, KnownCheckpoint
from .loading import load_checkpoint
from .resampling import interpolate_position_embeddings, resample, resize_patch_kernel
from .summary import describe, top_k
from .timm_format import from_timm_state_dict


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
