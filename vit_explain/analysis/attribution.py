"""Which patches mattered: occlusion (hide patches, watch the prediction) and maps on one colour scale.

See :mod:`vit_explain.analysis` for the conventions. torch is only touched when a caller passes
tensors in (the occlusion functions keep the input's type).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ._common import _is_tensor, _np


# ----------------------------------------------------------------------------------------------
# 1. occlusion
# ----------------------------------------------------------------------------------------------


def occlusion_delta(base_probs: Any, occluded_probs: Any) -> np.ndarray:
    """How much each class lost when part of the image was hidden: ``base - occluded`` (``[K]``).

    Positive values: the hidden part supported that class; negative: it argued against it.
    """
    return _np(base_probs) - _np(occluded_probs)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def occlusion_mask(
    image_size: int | Sequence[int], grid: int | Sequence[int], patches: Sequence[Sequence[int]]
) -> np.ndarray:
    """Boolean ``[H, W]`` mask, True over the listed ``(row, col)`` patches of a ``grid``.

    ``image_size`` and ``grid`` are an int (square) or ``(height, width)``; the image size must be
    a multiple of the grid.
    """
    H, W = _hw(image_size)
    gh, gw = _hw(grid)
    if gh <= 0 or gw <= 0 or H % gh or W % gw:
        raise ValueError(f"image size {H}x{W} does not split into a {gh}x{gw} grid of patches")
    ph, pw = H // gh, W // gw
    cells = np.zeros((gh, gw), dtype=bool)
    for r, c in patches:
        if not (0 <= r < gh and 0 <= c < gw):
            raise ValueError(f"patch ({r}, {c}) is outside the {gh}x{gw} grid")
        cells[r, c] = True
    return np.repeat(np.repeat(cells, ph, axis=0), pw, axis=1)


def apply_occlusion(
    pixel_values: Any,
    patches: Sequence[Sequence[int]],
    patch_size: int,
    fill: float | Sequence[float] = 0.0,
):
    """A copy of ``pixel_values`` (``[B, C, H, W]`` tensor or array) with the listed patches filled.

    ``fill`` is a value in the normalised space the model sees (0.0 is mid-grey with the ViT
    mean = std = 0.5 normalisation), or one value per channel. The input is left untouched and the
    result has the input's type, dtype and device.
    """
    if len(getattr(pixel_values, "shape", ())) != 4:
        raise ValueError(f"apply_occlusion: expected [B, C, H, W], got {getattr(pixel_values, 'shape', None)}")
    _, C, H, W = pixel_values.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image {H}x{W} is not a multiple of patch_size {patch_size}")
    mask = occlusion_mask((H, W), (H // patch_size, W // patch_size), patches)
    fill_arr = np.array(np.broadcast_to(np.asarray(fill, dtype=np.float64).reshape(-1), (C,)))
    if _is_tensor(pixel_values):
        import torch

        out = pixel_values.clone()
        m = torch.from_numpy(mask).to(out.device)
        f = torch.as_tensor(fill_arr, dtype=out.dtype, device=out.device).view(1, C, 1, 1)
        return torch.where(m, f, out)
    x = np.array(pixel_values, copy=True)
    return np.where(mask, fill_arr.reshape(1, C, 1, 1).astype(x.dtype), x)


def occlusion_sensitivity(
    predict_fn: Callable,
    pixel_values: Any,
    patch_size: int,
    target: int,
    batch: int = 16,
    fill: float | Sequence[float] = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Drop in the target class's probability when each patch is hidden in turn: ``[gh, gw]``.

    ``predict_fn`` maps a ``[B, C, H, W]`` batch to probabilities ``[B, K]``; ``pixel_values`` is one
    image ``[1, C, H, W]``. Patches are hidden one at a time with ``fill`` and scored ``batch`` at a
    time (``progress(done, total)`` is called after each batch). A positive value means the patch
    helped the prediction. torch inputs run under ``torch.no_grad``.
    """
    shape = tuple(getattr(pixel_values, "shape", ()))
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"occlusion_sensitivity: expected one image [1, C, H, W], got {shape}")
    _, C, H, W = shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image {H}x{W} is not a multiple of patch_size {patch_size}")
    gh, gw = H // patch_size, W // patch_size
    batch = max(1, int(batch))
    is_tensor = _is_tensor(pixel_values)
    if is_tensor:
        import torch

        guard = torch.no_grad()
    else:
        import contextlib

        guard = contextlib.nullcontext()
    cells = [(r, c) for r in range(gh) for c in range(gw)]
    drops = np.empty(len(cells))
    with guard:
        base = _np(predict_fn(pixel_values))[0, target]
        for start in range(0, len(cells), batch):
            chunk = cells[start : start + batch]
            views = [apply_occlusion(pixel_values, [cell], patch_size, fill) for cell in chunk]
            stacked = torch.cat(views) if is_tensor else np.concatenate(views)
            probs = _np(predict_fn(stacked))
            drops[start : start + len(chunk)] = base - probs[:, target]
            if progress is not None:
                progress(start + len(chunk), len(cells))
    return drops.reshape(gh, gw)


def top_indices(values: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``values`` (flattened row-major), largest first.

    For a ``[g, g]`` map these are row-major patch indices; for ``[K]`` logits or probabilities,
    the top-k classes. Ties keep the lower index first; ``k`` is capped at the number of entries.
    """
    flat = _np(values).ravel()
    return np.argsort(-flat, kind="stable")[: max(0, int(k))]


# ----------------------------------------------------------------------------------------------
# 2. putting maps on one colour scale
# ----------------------------------------------------------------------------------------------


def normalise_map(m: Any, mode: str = "max") -> np.ndarray:
    """Rescale a heat map so maps from different methods can share a colour scale.

    ``mode="max"`` (default) divides by the largest absolute value: the strongest patch becomes 1
    (or -1), signs survive, so signed maps such as occlusion work too. ``mode="sum"`` divides by
    the total so the map is a distribution over patches (for non-negative maps such as attention
    and rollout; a negative entry raises). An all-zero map is returned as zeros.
    """
    x = _np(m)
    if mode == "max":
        scale = np.nanmax(np.abs(x)) if x.size else 0.0
    elif mode == "sum":
        if np.nanmin(x) < 0:
            raise ValueError("normalise_map(mode='sum') needs a non-negative map; use mode='max'")
        scale = np.nansum(x)
    else:
        raise ValueError(f"mode must be 'max' or 'sum', got {mode!r}")
    if not np.isfinite(scale) or scale == 0:
        return np.zeros_like(x)
    return x / scale


def shared_scale(*maps: Any, symmetric: bool = False) -> tuple[float, float]:
    """``(vmin, vmax)`` covering every finite value of all ``maps``, for one shared colour bar.

    With ``symmetric`` the range is ``(-a, a)`` with ``a`` the largest absolute value (for signed
    maps with a diverging colour scale). A degenerate range (all equal, or no finite values) is
    widened so that ``vmax > vmin`` always holds.
    """
    vals = [x[np.isfinite(x)] for x in (_np(m).ravel() for m in maps)]
    vals = [v for v in vals if v.size]
    if not vals:
        return (0.0, 1.0)
    allv = np.concatenate(vals)
    lo, hi = float(allv.min()), float(allv.max())
    if symmetric:
        a = max(abs(lo), abs(hi))
        lo, hi = -a, a
    if hi <= lo:
        if symmetric:
            lo, hi = -1.0, 1.0
        else:
            hi = lo + 1.0
    return (lo, hi)


def map_correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two maps over their entries (e.g. attention vs occlusion over the patches).

    NaN when it is undefined: fewer than two entries, or either map constant.
    """
    x, y = _np(a).ravel(), _np(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"map_correlation: maps of {x.size} and {y.size} entries")
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
