"""Attention maps: where the CLS token looks, rollout, attention distance, entropy, per-head shares.

Pure numpy functions (see :mod:`vit_explain.analysis` for the conventions). The attention of one
layer is ``[H, T, T]`` (or ``[B, H, T, T]``): rows are queries, each row a softmax over the keys;
``T = S + g*g`` tokens, the ``S`` prefix tokens (CLS first) before the patches.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._common import _grid_from_count, _layers, _np, _pairwise_grid_distance, _split_patches

HEAD_FUSIONS = ("mean", "max", "min")


# ----------------------------------------------------------------------------------------------
# 0. the CLS token's attention over the patches
# ----------------------------------------------------------------------------------------------


def cls_attention_map(
    attn: Any,
    grid: int,
    num_prefix: int | None = None,
    *,
    head_fusion: str | None = "mean",
    renormalise: bool = False,
) -> np.ndarray:
    """Where the CLS token looks: its attention row over the patch tokens, laid out as the patch grid.

    ``attn``: attention ``[..., H, T, T]`` (one layer ``[H, T, T]``, all layers ``[L, H, T, T]``,
    a batch ...); with ``head_fusion=None`` any ``[..., T, T]`` (a rollout, or attention whose head
    axis should be kept). Row 0 (the CLS query) is read; the ``num_prefix`` prefix tokens (CLS, a
    distillation token, registers) are skipped as keys and the ``g*g`` patch keys that follow are
    reshaped row-major to ``[g, g]``. ``num_prefix=None`` takes every token before the last
    ``g*g`` as a prefix token (there must be at least one: the CLS token); a given value must
    match ``T = num_prefix + g*g``.

    ``head_fusion``: ``"mean"`` (default), ``"max"`` or ``"min"`` over the head axis (``-3``), or
    None to keep every axis. ``renormalise``: divide the map by its sum over the patches (after
    fusing the heads), so it is a distribution over the patches and the weight CLS keeps on the
    prefix tokens is dropped; a map with no mass stays all zeros. Without it the raw weights are
    returned.

    Returns float64 ``[..., g, g]``: the leading axes of ``attn`` without the head axis when heads
    are fused (``[H, T, T]`` -> ``[g, g]``, ``[L, H, T, T]`` -> ``[L, g, g]``), with it otherwise
    (``[L, H, T, T]`` -> ``[L, H, g, g]``).
    """
    a = _np(attn)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"cls_attention_map: expected [..., T, T] attention, got {a.shape}")
    if head_fusion is not None:
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS} or None, got {head_fusion!r}")
        if a.ndim < 3:
            raise ValueError(f"cls_attention_map: fusing heads needs [..., H, T, T], got {a.shape}")
    T, n = a.shape[-1], grid * grid
    start = T - n if num_prefix is None else int(num_prefix)
    if grid < 1 or start < 1 or start + n != T:
        raise ValueError(
            f"cls_attention_map: {T} tokens are not "
            f"{'CLS (+ prefix tokens)' if num_prefix is None else f'{num_prefix} prefix tokens'}"
            f" + a {grid}x{grid} grid of patches"
        )
    rows = a[..., 0, start:]  # [..., (H,) N]: the CLS query's weights on the patch keys
    if head_fusion is not None:
        rows = getattr(np, head_fusion)(rows, axis=-2)
    if renormalise:
        total = rows.sum(-1, keepdims=True)
        rows = np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)
    return rows.reshape(rows.shape[:-1] + (grid, grid))


# ----------------------------------------------------------------------------------------------
# 1. attention rollout (Abnar & Zuidema, 2020)
# ----------------------------------------------------------------------------------------------


def _discard_lowest(fused: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the smallest ``ratio`` fraction of the off-diagonal entries of each ``[T, T]`` slice."""
    T = fused.shape[-1]
    flat = fused.reshape(-1, T * T).copy()
    off = np.flatnonzero(~np.eye(T, dtype=bool).ravel())
    n_drop = int(math.floor(ratio * off.size))
    if n_drop == 0:
        return fused
    vals = flat[:, off]
    lowest = np.argsort(vals, axis=1, kind="stable")[:, :n_drop]
    np.put_along_axis(vals, lowest, 0.0, axis=1)
    flat[:, off] = vals
    return flat.reshape(fused.shape)


def attention_rollout(
    attentions: Sequence[Any],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    residual: bool = True,
) -> np.ndarray:
    """How much each token's final state draws on each input token, following attention back.

    ``attentions``: L arrays ``[H, T, T]`` (or ``[B, H, T, T]``), rows = queries, softmax over keys.
    Returns ``[T, T]`` (or ``[B, T, T]``): row ``i`` says how token ``i`` after the last layer mixes
    the input tokens. Rows sum to 1.

    Per layer: the heads are fused (``mean``, ``max`` or ``min`` over the head axis); optionally the
    ``discard_ratio`` fraction of smallest *off-diagonal* entries is set to 0 (the diagonal, a token
    keeping itself, is never dropped; the widely copied implementation protects only CLS->CLS and
    counts the fraction over all T*T entries); with ``residual`` the skip connection is modelled as
    ``0.5 * A + 0.5 * I``; then each row is divided by its own sum (a row-wise keepdims sum, so the
    result is row-stochastic even when max/min fusion or discarding broke the row sums). A row left
    with no mass at all (possible only without ``residual``) becomes the identity row. The layers
    are then chained in order: ``R = A_L @ ... @ A_2 @ A_1``. Use ``attentions[:l]`` to roll out
    through the first ``l`` layers only.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio <= 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1], got {discard_ratio}")
    layers = _layers(attentions, "attention_rollout")
    shape = layers[0].shape
    if len(shape) not in (3, 4) or shape[-1] != shape[-2]:
        raise ValueError(
            f"attention_rollout: each layer must be [H, T, T] or [B, H, T, T], got {shape}"
        )
    T = shape[-1]
    eye = np.eye(T)
    rollout = np.broadcast_to(eye, shape[:-3] + (T, T)).copy()
    for att in layers:
        fused = getattr(np, head_fusion)(att, axis=-3)  # [(B,) T, T]
        if discard_ratio > 0:
            fused = _discard_lowest(fused, discard_ratio)
        if residual:
            fused = 0.5 * fused + 0.5 * eye
        sums = fused.sum(axis=-1, keepdims=True)  # [(B,) T, 1]: one sum per row
        dead = sums[..., 0] <= 0
        fused = np.divide(fused, sums, out=np.zeros_like(fused), where=sums > 0)
        if dead.any():
            fused[dead] = np.broadcast_to(eye, fused.shape)[dead]
        rollout = fused @ rollout  # the newer layer multiplies from the left
    return rollout


def cls_rollout_map(rollout: Any, grid: int | None = None) -> np.ndarray:
    """CLS token's row of a rollout over the patch tokens, renormalised to sum 1, as a grid.

    ``rollout``: ``[T, T]`` or ``[B, T, T]`` with ``T = g*g + 1`` (or more prefix tokens before the
    patches when ``grid`` is given). Returns ``[g, g]`` (or ``[B, g, g]``); an all-zero row stays
    zero. This is :func:`cls_attention_map` of the rollout (no head axis), renormalised.
    """
    r = _np(rollout)
    if r.ndim not in (2, 3):
        raise ValueError(f"cls_rollout_map: expected [T, T] or [B, T, T], got {r.shape}")
    if grid is None:
        grid = _grid_from_count(r.shape[-1] - 1, "cls_rollout_map")
    return cls_attention_map(r, grid, head_fusion=None, renormalise=True)


# ----------------------------------------------------------------------------------------------
# 2. how far and how widely heads look: mean attention distance (Dosovitskiy et al., 2021,
#    Fig. 7 right) and attention entropy
# ----------------------------------------------------------------------------------------------


def _patch_attention(att: Any, grid: int, what: str) -> np.ndarray:
    """Patch-to-patch block of ``[..., T, T]`` attention, rows renormalised (NaN if no mass)."""
    a = _np(att)
    if a.ndim not in (3, 4) or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{what}: expected [H, T, T] or [B, H, T, T], got {a.shape}")
    start, _ = _split_patches(a.shape[-1], grid, what)
    p = a[..., start:, start:]
    sums = p.sum(-1, keepdims=True)
    return np.divide(p, sums, out=np.full_like(p, np.nan), where=sums > 0)


def attention_distance_map(attentions_layer: Any, grid: int, patch_size: int) -> np.ndarray:
    """Per query patch, the attention-weighted distance (in pixels) to the patches it looks at.

    ``attentions_layer``: ``[H, T, T]`` or ``[B, H, T, T]`` for one layer, ``T = g*g + 1`` (CLS
    first) or ``g*g``. The CLS token is left out as query and as key; each query's attention over
    the patch keys is renormalised to sum 1 (a query that put all its weight on CLS gets NaN).
    Distances are between patch centres: grid distance times ``patch_size``.
    Returns ``[H, g, g]`` (or ``[B, H, g, g]``).
    """
    p = _patch_attention(attentions_layer, grid, "attention_distance_map")
    dist = _pairwise_grid_distance(grid) * float(patch_size)  # [N, N] pixels
    per_query = (p * dist).sum(-1)  # [(B,) H, N]
    return per_query.reshape(per_query.shape[:-1] + (grid, grid))


def mean_attention_distance(attentions_layer: Any, grid: int, patch_size: int) -> np.ndarray:
    """Mean attention distance of each head of one layer, in pixels: ``[H]``.

    The per-query distances of :func:`attention_distance_map` averaged over query patches (and
    over images when a batch is given), skipping queries with no attention on patches.
    Small values: the head looks locally, like a convolution; large values: globally.
    """
    per_query = attention_distance_map(attentions_layer, grid, patch_size)
    per_query = per_query.reshape(per_query.shape[:-2] + (-1,))  # [(B,) H, N]
    if per_query.ndim == 3:
        per_query = np.moveaxis(per_query, 0, 1).reshape(per_query.shape[1], -1)  # [H, B*N]
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(per_query)
        counts = valid.sum(-1)
        total = np.where(valid, per_query, 0.0).sum(-1)
        return np.divide(total, counts, out=np.full(total.shape, np.nan), where=counts > 0)


def attention_distance_all(attentions: Sequence[Any], grid: int, patch_size: int) -> np.ndarray:
    """:func:`mean_attention_distance` for every layer: ``[L, H]`` pixels."""
    return np.stack(
        [mean_attention_distance(a, grid, patch_size) for a in _layers(attentions, "attention_distance_all")]
    )


def uniform_attention_distance(grid: int, patch_size: int) -> float:
    """Mean attention distance (pixels) of a head that spreads its weight evenly over the patches.

    The mean distance between patch centres over all (query, key) pairs, self-pairs included:
    what :func:`mean_attention_distance` gives for uniform attention (the reference line of the
    distance plots). 0 for a single patch.
    """
    return float(_pairwise_grid_distance(grid).mean() * patch_size)


def attention_entropy(attentions: Sequence[Any]) -> np.ndarray:
    """Entropy (nats) of each head's attention rows, averaged over queries (and images): ``[L, H]``.

    ``attentions``: L arrays ``[H, T, T]`` or ``[B, H, T, T]``. A row spread evenly over T keys
    scores ``log T``; a row on one key scores 0 (``0 * log 0`` counts as 0).
    """
    out = []
    for a in _layers(attentions, "attention_entropy"):
        if a.ndim not in (3, 4):
            raise ValueError(f"attention_entropy: expected [H, T, T] or [B, H, T, T], got {a.shape}")
        plogp = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
        ent = -plogp.sum(-1)  # [(B,) H, T]
        ent = ent.mean(-1)
        out.append(ent.mean(0) if ent.ndim == 2 else ent)
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# 3. what each head adds, and where CLS's attention goes
# ----------------------------------------------------------------------------------------------


def head_contributions(context: Any, weight: Any, num_heads: int) -> np.ndarray:
    """Split the output projection into one term per head: ``[H, T, D]``.

    ``attention_output = context @ W.T + b`` and the columns of ``context`` ``[T, D]`` come in H
    blocks of ``d = D / H`` (one per head), so the product is a sum of H terms
    ``context[:, head block] @ W[:, head block].T``. Adding the bias to the sum of the terms gives
    ``attention_output`` back.
    """
    context = _np(context)
    weight = _np(weight)
    t, dim = context.shape
    if dim % num_heads:
        raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
    d = dim // num_heads
    per_head = context.reshape(t, num_heads, d).transpose(1, 0, 2)  # "t (h d) -> h t d"
    w = weight.reshape(weight.shape[0], num_heads, d).transpose(1, 2, 0)  # "o (h d) -> h d o"
    return np.matmul(per_head, w)  # [H, T, d] @ [H, d, D] -> [H, T, D]; a batched matmul, 10x faster than einsum


def cls_destinations(
    probs: Any, prefix_names: Sequence[str], grid: int, artefacts: Any | None = None
) -> dict[str, np.ndarray]:
    """Where the CLS token's attention goes, per head: shares that sum to 1 over the groups.

    ``probs`` ``[H, T, T]`` with the prefix tokens named by ``prefix_names`` first ("CLS", "DIST",
    "REG0" ...) and the g*g patches last. ``artefacts``: a ``[g*g]`` boolean mask of high-norm patch
    tokens, counted as their own group. Returns {group name: ``[H]`` shares}, groups with no tokens
    left out.
    """
    a = _np(probs)[:, 0, :]  # [H, T], the CLS row
    n = grid * grid
    start = a.shape[-1] - n
    if start < 1 or len(prefix_names) != start:
        raise ValueError(f"{a.shape[-1]} tokens do not fit {len(prefix_names)} prefix tokens + a {grid}x{grid} grid")
    names = list(prefix_names)
    groups = {"CLS itself": a[:, 0]}
    if "DIST" in names:
        groups["distillation token"] = a[:, names.index("DIST")]
    registers = [i for i, name in enumerate(names) if name.startswith("REG")]
    if registers:
        groups["register tokens"] = a[:, registers].sum(axis=1)
    patches = a[:, start:]
    mask = np.zeros(n, dtype=bool) if artefacts is None else np.asarray(artefacts, dtype=bool).reshape(n)
    if mask.any():
        groups["high-norm patches"] = patches[:, mask].sum(axis=1)
    groups["other patches"] = patches[:, ~mask].sum(axis=1)
    return groups
