"""Private helpers shared by the analysis modules: array conversion, token/grid bookkeeping, PCA.

Nothing here is part of the public API; see :mod:`vit_explain.analysis` for the conventions
(token order, float64 results, lists of layers).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np


def _torch_module():
    """The torch module if something already imported it, else None (we never import it here)."""
    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def _is_torch_module(x: Any) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(x, torch.nn.Module)


def _np(x: Any) -> np.ndarray:
    """Any array-like (torch tensor included) as a float64 numpy array."""
    if _is_tensor(x):
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _layers(seq: Any, what: str) -> list[np.ndarray]:
    """A list of float64 arrays from a sequence of per-layer arrays (or a stacked array)."""
    layers = [_np(a) for a in seq]
    if not layers:
        raise ValueError(f"{what}: expected at least one layer, got an empty sequence")
    shape = layers[0].shape
    for i, a in enumerate(layers):
        if a.shape != shape:
            raise ValueError(f"{what}: layer {i} has shape {a.shape}, layer 0 has {shape}")
    return layers


def _grid_from_count(n: int, what: str) -> int:
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{what}: {n} patch tokens do not form a square grid")
    return g


def _split_patches(num_tokens: int, grid: int | None, what: str) -> tuple[int, int]:
    """Return ``(first_patch_index, grid)`` for a token axis of length ``num_tokens``.

    With ``grid`` given, the patches are the last ``g*g`` tokens and any tokens before them are
    prefix tokens (CLS; also a distillation token or registers: ``config.num_prefix_tokens``).
    Without it, a length that is a square plus one is read as CLS + patches, a square as patches.
    """
    if grid is not None:
        if num_tokens >= grid * grid:
            return num_tokens - grid * grid, grid
        raise ValueError(
            f"{what}: {num_tokens} tokens do not fit a {grid}x{grid} grid "
            f"(expected {grid * grid} patches, after any prefix tokens)"
        )
    g = math.isqrt(num_tokens - 1) if num_tokens > 1 else 0
    if num_tokens > 1 and g * g == num_tokens - 1:
        return 1, g
    return 0, _grid_from_count(num_tokens, what)


def _grid_positions(grid: int) -> np.ndarray:
    """``[g*g, 2]`` (row, col) of every patch in row-major order."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    return np.stack([rows, cols], axis=1).astype(np.float64)


def _pairwise_grid_distance(grid: int) -> np.ndarray:
    """``[N, N]`` Euclidean distance between patch centres, in patches."""
    pos = _grid_positions(grid)
    diff = pos[:, None, :] - pos[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis (0 where either vector is zero)."""
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)



def _minmax01(x: np.ndarray, axis=None) -> np.ndarray:
    """Scale to 0..1 over ``axis``; a constant slice becomes 0.5."""
    lo = x.min(axis=axis, keepdims=True)
    hi = x.max(axis=axis, keepdims=True)
    span = hi - lo
    out = np.full_like(x, 0.5)
    np.divide(x - lo, span, out=out, where=np.broadcast_to(span > 0, x.shape))
    return out


def _principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Top ``k`` principal directions of already-centred rows ``x`` ``[n, m]``.

    Returns ``(directions [k', m], variances [k'], total)`` where ``k' = min(k, n, m)``, the
    variances are the squared singular values (descending) and ``total`` is the sum of all of
    them. It diagonalises the smaller of the two Gram matrices, which is several times faster
    than a full SVD for the square-ish matrices met here (768 filters of 768 numbers, 196 tokens
    of 768 numbers) and plenty accurate for the leading components. Directions whose variance is
    numerically zero come back as zero vectors.
    """
    n, m = x.shape
    k = min(k, n, m)
    total = float((x * x).sum())
    if n <= m:
        evals, evecs = np.linalg.eigh(x @ x.T)  # ascending
        order = np.argsort(evals)[::-1][:k]
        dirs = (x.T @ evecs[:, order]).T  # [k, m], norms = singular values
    else:
        evals, evecs = np.linalg.eigh(x.T @ x)
        order = np.argsort(evals)[::-1][:k]
        dirs = evecs[:, order].T
    var = np.clip(evals[order], 0.0, None)
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    tiny = max(total, np.finfo(np.float64).tiny) * 1e-12
    keep = (var > tiny)[:, None] & (norms > 0)
    dirs = np.divide(dirs, norms, out=np.zeros_like(dirs), where=keep)
    var = np.where(keep[:, 0], var, 0.0)
    return dirs, var, total


def _fix_signs(vt: np.ndarray) -> np.ndarray:
    """Flip each row so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    if vt.size == 0:
        return vt
    idx = np.abs(vt).argmax(axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1.0
    return vt * signs[:, None]

