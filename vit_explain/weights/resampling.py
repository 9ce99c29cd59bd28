"""Trained weights moved onto another architecture: patch size, image size, heads, depth."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import ViTConfig
from ..model import ViTForImageClassification, ViTModel
from .common import _assign, _build, _check_fit

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


def interpolate_position_embeddings(position_embeddings: torch.Tensor, new_grid: int, *,
                                    num_prefix: int = 1) -> torch.Tensor:
    """[1, S + g*g, D] -> [1, S + new_grid^2, D]: the S prefix rows kept, the patch grid resized bicubically.

    ``num_prefix`` is the number of prefix tokens that have a position embedding: 1 (CLS), or 2
    for DeiT's CLS + distillation token (register tokens have none).
    """
    tokens = position_embeddings.shape[1]
    grid = math.isqrt(tokens - num_prefix)
    if grid * grid != tokens - num_prefix:
        raise ValueError(f"position embeddings with {tokens} tokens are not {num_prefix} prefix rows + a square grid")
    if new_grid == grid:
        return position_embeddings.clone()
    cls, patches = position_embeddings[:, :num_prefix], position_embeddings[:, num_prefix:]
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
    if config.position_embedding_size is not None and new_patch != config.patch_size:
        # the embeddings' own grid (DINOv2) no longer fits the new patches: resize them to the image's grid once
        changes["position_embedding_size"] = None
    new_config = config.replace(**changes)  # validates patch/image divisibility with a clear message

    prefix = "vit." if isinstance(model, ViTForImageClassification) else ""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    kernel_key = f"{prefix}embeddings.patch_embeddings.projection.weight"
    if new_patch != config.patch_size:
        state[kernel_key] = resize_patch_kernel(state[kernel_key], new_patch, method=kernel_resize)
    if new_config.position_grid_size != config.position_grid_size:  # DINOv2 resizes on the fly otherwise
        pos_key = f"{prefix}embeddings.position_embeddings"
        state[pos_key] = interpolate_position_embeddings(state[pos_key], new_config.position_grid_size,
                                                         num_prefix=1 + int(config.use_distillation_token))
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
        what = ", ".join(f"{k.replace('num_attention_heads', 'heads').replace('num_hidden_layers', 'layers')} {v}"
                         for k, v in changes.items() if k != "position_embedding_size")
        new.source += f" (resampled: {what})"
    new.load_notes = list(getattr(model, "load_notes", []))
    return new


def _spec_for_size(spec: Any, old: ViTConfig, new: ViTConfig) -> Any:
    """The model's preprocessing with its geometry scaled from old.image_size to new.image_size."""
    from ..preprocess import PreprocessSpec

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


