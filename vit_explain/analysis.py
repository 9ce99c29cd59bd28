"""Numbers behind the "what has the model learned" pictures: pure functions, arrays in, arrays out.

Conventions used throughout this module:

* Token order is the ViT one: ``T = 1 + N`` tokens, the CLS token first, then ``N = g * g`` patch
  tokens in row-major order (patch ``(row, col)`` is token ``1 + row * g + col``).
* Inputs may be numpy arrays or torch tensors (any device or float dtype); they are copied to
  float64 numpy before any sum, so results do not drift with long products or large grids.
  Every result is a float64 numpy array (cast to float32 before shipping it to a figure).
* A "list of layers" is any sequence of per-layer arrays (what ``Trace.attentions`` or
  ``Trace.hidden_states`` hold), or one array stacked along a leading layer axis.
* Batches: functions that produce one picture per image keep a leading batch axis when the input
  has one; functions that summarise heads or layers (distance, entropy, similarity) average over
  the batch, the way the papers average over a set of images.

Nothing here imports streamlit or plotly, and torch is only touched when a caller passes tensors
or modules in.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "attention_rollout",
    "cls_rollout_map",
    "attention_distance_map",
    "mean_attention_distance",
    "attention_distance_all",
    "sincos_2d_position_embeddings",
    "position_similarity",
    "position_similarity_maps",
    "patch_filter_pca",
    "token_pca_rgb",
    "token_norms",
    "high_norm_mask",
    "high_norm_outliers",
    "attention_entropy",
    "layer_similarity",
    "cls_similarity_matrix",
    "logit_lens",
    "occlusion_delta",
    "occlusion_mask",
    "apply_occlusion",
    "occlusion_sensitivity",
    "normalise_map",
    "shared_scale",
]

HEAD_FUSIONS = ("mean", "max", "min")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


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


def cosine_matrix(x: Any) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``x`` ``[n, D]`` -> ``[n, n]`` (0 for zero rows).

    One product of row-normalised matrices: memory n*n, never n*n*D.
    """
    x = _np(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


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

    ``rollout``: ``[T, T]`` or ``[B, T, T]`` with ``T = g*g + 1``. Returns ``[g, g]`` (or
    ``[B, g, g]``); an all-zero row stays zero.
    """
    r = _np(rollout)
    if r.ndim not in (2, 3):
        raise ValueError(f"cls_rollout_map: expected [T, T] or [B, T, T], got {r.shape}")
    T = r.shape[-1]
    if grid is None:
        grid = _grid_from_count(T - 1, "cls_rollout_map")
    elif T < grid * grid + 1:
        raise ValueError(f"cls_rollout_map: {T} tokens is not CLS (+ prefix tokens) + a {grid}x{grid} grid")
    row = r[..., 0, T - grid * grid:]  # the patches are the last g*g tokens, after CLS and any other prefix
    total = row.sum(-1, keepdims=True)
    row = np.divide(row, total, out=np.zeros_like(row), where=total != 0)
    return row.reshape(r.shape[:-2] + (grid, grid))


# ----------------------------------------------------------------------------------------------
# 2. mean attention distance (Dosovitskiy et al., 2021, Fig. 7 right)
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


# ----------------------------------------------------------------------------------------------
# 3. position embedding similarity (Dosovitskiy et al., 2021, Fig. 7 centre)
# ----------------------------------------------------------------------------------------------


def sincos_2d_position_embeddings(
    grid: int, dim: int, temperature: float = 10000.0, cls_token: bool = False
) -> np.ndarray:
    """Fixed 2-D sine-cosine position embeddings for a ``g x g`` patch grid: ``[g*g, dim]``.

    The first half of each vector encodes the patch's row, the second half its column; each half
    holds ``dim/4`` sines then ``dim/4`` cosines at frequencies ``temperature ** (-k / (dim/4))``.
    With ``cls_token`` a zero row is put first (``[g*g + 1, dim]``). ``dim`` must divide by 4.
    """
    if dim % 4 != 0 or dim <= 0:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim}")
    if grid <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    quarter = dim // 4
    freqs = temperature ** (-np.arange(quarter, dtype=np.float64) / quarter)  # [dim/4]
    pos = _grid_positions(grid)  # [N, 2]

    def encode(coord: np.ndarray) -> np.ndarray:
        angles = coord[:, None] * freqs[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # [N, dim/2]

    emb = np.concatenate([encode(pos[:, 0]), encode(pos[:, 1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb


def position_similarity(pos_embed: Any, grid: int | None = None) -> np.ndarray:
    """Cosine similarity between the position embeddings of every pair of patches: ``[N, N]``.

    ``pos_embed``: ``[T, D]``, ``[N, D]`` or the checkpoint's ``[1, T, D]``; a CLS row (when the
    row count is a square plus one, or ``g*g + 1`` for a given ``grid``) is dropped.
    """
    e = _np(pos_embed)
    if e.ndim == 3 and e.shape[0] == 1:
        e = e[0]
    if e.ndim != 2:
        raise ValueError(f"position_similarity: expected [T, D] or [1, T, D], got {e.shape}")
    start, _ = _split_patches(e.shape[0], grid, "position_similarity")
    return cosine_matrix(e[start:])


def position_similarity_maps(pos_embed: Any, grid: int | None = None) -> np.ndarray:
    """:func:`position_similarity` laid out as pictures: ``[g, g, g, g]``.

    ``out[i, j]`` is the ``g x g`` map of how similar patch ``(i, j)``'s embedding is to every
    other patch's.
    """
    sim = position_similarity(pos_embed, grid)
    g = _grid_from_count(sim.shape[0], "position_similarity_maps")
    return sim.reshape(g, g, g, g)


# ----------------------------------------------------------------------------------------------
# 4. principal components of the patch-embedding filters (Dosovitskiy et al., 2021, Fig. 7 left)
# ----------------------------------------------------------------------------------------------


def patch_filter_pca(weight: Any, k: int = 28, scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the D patch-embedding filters.

    ``weight``: the projection kernel ``[D, C, P, P]``. Each filter is flattened to ``C*P*P``
    numbers, the mean filter is subtracted and the directions of largest variance are found.
    Returns ``(components [k, C, P, P], explained_variance_ratio [k])`` with ``k`` capped at
    ``min(D, C*P*P)``, ratios in descending order. With ``scale`` each component is min-max
    scaled over all its entries to 0..1 so it can be shown as an RGB tile (channels keep their
    relative levels); without it the components are unit-norm vectors. Signs are chosen so the
    largest-magnitude entry of each component is positive.
    """
    w = _np(weight)
    if w.ndim != 4:
        raise ValueError(f"patch_filter_pca: expected [D, C, P, P], got {w.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    D = w.shape[0]
    X = w.reshape(D, -1)
    X = X - X.mean(axis=0, keepdims=True)
    vt, var, total = _principal_axes(X, k)
    k = vt.shape[0]
    ratio = var / total if total > 0 else np.zeros(k)
    comps = _fix_signs(vt)
    if scale:
        comps = _minmax01(comps, axis=1)
    return comps.reshape((k,) + w.shape[1:]), ratio


# ----------------------------------------------------------------------------------------------
# 5. token maps: PCA colours, norms, high-norm artefacts, attention entropy
# ----------------------------------------------------------------------------------------------


def token_pca_rgb(tokens: Any, grid: int | None = None) -> np.ndarray:
    """Colour each patch by the first three principal components of the patch tokens.

    ``tokens``: ``[N, D]`` patch tokens (``[1, N, D]`` and a leading CLS row are accepted and the
    CLS row dropped). Returns ``[g, g, 3]`` in 0..1: component c drives channel c, each min-max
    scaled over the patches. Patches the model treats alike get similar colours. Channels for
    components that do not exist (fewer than 3 tokens or dims) are a constant 0.5.
    """
    x = _np(tokens)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"token_pca_rgb: expected [N, D], got {x.shape}")
    start, g = _split_patches(x.shape[0], grid, "token_pca_rgb")
    x = x[start:]
    x = x - x.mean(axis=0, keepdims=True)
    vt, _, _ = _principal_axes(x, 3)
    vt = _fix_signs(vt)
    proj = x @ vt.T  # [N, <=3]
    rgb = np.full((x.shape[0], 3), 0.5)
    rgb[:, : proj.shape[1]] = _minmax01(proj, axis=0)
    return rgb.reshape(g, g, 3)


def token_norms(hidden_states: Sequence[Any]) -> np.ndarray:
    """L2 norm of every token after every layer.

    ``hidden_states``: L+1 arrays ``[T, D]`` (or ``[B, T, D]``), the embeddings first.
    Returns ``[L+1, T]`` (or ``[B, L+1, T]``).
    """
    layers = _layers(hidden_states, "token_norms")
    norms = np.stack([np.linalg.norm(h, axis=-1) for h in layers])  # [L+1, (B,) T]
    return np.moveaxis(norms, 0, -2) if norms.ndim == 3 else norms


def high_norm_mask(
    norms: Any, k: float = 5.0, min_ratio: float = 2.0, skip_cls: bool = True, num_prefix_tokens: int = 1
) -> np.ndarray:
    """Boolean mask of high-norm artefact tokens (Darcet et al., 2023), same shape as ``norms``.

    ``norms``: ``[T]`` or ``[L+1, T]`` (each row judged on its own). A token is flagged when its
    norm is above ``median + k * 1.4826 * MAD`` (a robust z-score above ``k``; the MAD is the
    median absolute deviation, 1.4826 makes it a standard deviation for Gaussian data) *and* above
    ``min_ratio * median``. The second condition stops a tight, healthy distribution from
    flagging tokens that are only slightly larger. With ``skip_cls`` token 0 is neither judged nor
    counted in the statistics (the CLS token lives on another scale); with ``num_prefix_tokens``
    above 1 the other prefix tokens (distillation token, registers) are skipped too, so only patch
    tokens are judged.
    """
    n = _np(norms)
    if n.ndim not in (1, 2):
        raise ValueError(f"high_norm_mask: expected [T] or [L+1, T], got {n.shape}")
    rows = n.reshape(-1, n.shape[-1])
    start = max(1, int(num_prefix_tokens)) if skip_cls else 0
    body = rows[:, start:]
    med = np.median(body, axis=1, keepdims=True)
    mad = np.median(np.abs(body - med), axis=1, keepdims=True) * 1.4826
    flagged = (body > med + k * mad) & (body > min_ratio * med)
    mask = np.zeros(rows.shape, dtype=bool)
    mask[:, start:] = flagged
    return mask.reshape(n.shape)


def high_norm_outliers(
    norms: Any, k: float = 5.0, min_ratio: float = 2.0, skip_cls: bool = True, num_prefix_tokens: int = 1
) -> np.ndarray:
    """Token indices (CLS = 0) flagged by :func:`high_norm_mask`, ascending.

    For ``[L+1, T]`` input, a token is listed if it is flagged after any layer; use the mask for
    the per-layer picture.
    """
    mask = high_norm_mask(norms, k=k, min_ratio=min_ratio, skip_cls=skip_cls, num_prefix_tokens=num_prefix_tokens)
    if mask.ndim == 2:
        mask = mask.any(axis=0)
    return np.flatnonzero(mask)


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
# 6. how much each layer changes the tokens
# ----------------------------------------------------------------------------------------------


def layer_similarity(hidden_states: Sequence[Any]) -> np.ndarray:
    """Mean cosine similarity of each token between consecutive hidden states: ``[L]``.

    Entry ``l`` compares ``hidden_states[l]`` with ``hidden_states[l + 1]`` (what layer ``l + 1``
    changed), averaged over tokens and images. Values near 1: the layer barely rotated the tokens.
    """
    layers = _layers(hidden_states, "layer_similarity")
    if len(layers) < 2:
        raise ValueError("layer_similarity: need at least two hidden states")
    return np.array([_cosine(a, b).mean() for a, b in zip(layers[:-1], layers[1:])])


def cls_similarity_matrix(hidden_states: Sequence[Any], token_index: int = 0) -> np.ndarray:
    """Cosine similarity of one token (the CLS token by default) across all hidden states.

    Returns ``[L+1, L+1]``; with a batch, the per-image matrices are averaged.
    """
    layers = _layers(hidden_states, "cls_similarity_matrix")
    v = np.stack([h[..., token_index, :] for h in layers])  # [L+1, (B,) D]
    sim = _cosine(v[:, None], v[None, :])  # [L+1, L+1, (B,)]
    return sim.mean(-1) if sim.ndim == 3 else sim


# ----------------------------------------------------------------------------------------------
# 7. logit lens
# ----------------------------------------------------------------------------------------------


def logit_lens(
    hidden_states: Sequence[Any],
    final_layernorm: Callable,
    classifier: Callable,
    top_k: int = 5,
    id2label: dict | None = None,
    token_index: int = 0,
) -> dict[str, Any]:
    """Read the class prediction off the CLS token after every layer, as if the model stopped there.

    ``hidden_states``: L+1 arrays ``[T, D]`` or ``[B, T, D]`` (embeddings first; like transformers'
    ``output_hidden_states`` they come *before* the final layernorm, so the last row reproduces the
    model's own prediction). ``final_layernorm`` and ``classifier`` are applied to the CLS vectors
    of all layers at once, then a softmax. If any input is a torch tensor or either callable is a
    ``torch.nn.Module``, the callables get torch tensors (no grad, in the module's dtype/device).

    Returns a dict of float64 / int arrays, ``S = L+1`` stages (with a batch, ``B`` leads):
    ``logits`` and ``probs`` ``[S, K]``; ``top_indices`` and ``top_probs`` ``[S, top_k]``
    (most likely first); ``final_class`` (the last stage's top-1, ``[]`` or ``[B]``);
    ``final_class_prob`` ``[S]`` its probability at each stage; and ``labels`` (a nested list of
    names for ``top_indices``) when ``id2label`` is given.
    """
    layers = list(hidden_states)
    if not layers:
        raise ValueError("logit_lens: expected at least one hidden state")
    use_torch = (
        any(_is_tensor(h) for h in layers)
        or _is_torch_module(final_layernorm)
        or _is_torch_module(classifier)
    )
    if use_torch:
        import torch

        dtype, device = torch.float32, torch.device("cpu")
        for fn in (classifier, final_layernorm):
            if _is_torch_module(fn):
                p = next(iter(fn.parameters()), None)
                if p is not None:
                    dtype, device = p.dtype, p.device
                    break
        cls = torch.stack([torch.as_tensor(h)[..., token_index, :] for h in layers])
        cls = cls.to(device=device, dtype=dtype)  # [S, (B,) D]
        with torch.no_grad():
            logits = _np(classifier(final_layernorm(cls)))
    else:
        cls = np.stack([np.asarray(h)[..., token_index, :] for h in layers])
        logits = _np(classifier(final_layernorm(cls)))
    if logits.ndim == 3:
        logits = np.moveaxis(logits, 0, 1)  # [B, S, K]
    probs = _softmax(logits, axis=-1)
    top_k = max(1, min(top_k, probs.shape[-1]))
    top_indices = np.argsort(-probs, axis=-1, kind="stable")[..., :top_k]
    top_probs = np.take_along_axis(probs, top_indices, axis=-1)
    final_class = top_indices[..., -1, 0]
    final_class_prob = np.take_along_axis(
        probs, np.broadcast_to(np.asarray(final_class)[..., None, None], probs.shape[:-1] + (1,)), -1
    )[..., 0]
    out = {
        "logits": logits,
        "probs": probs,
        "top_indices": top_indices,
        "top_probs": top_probs,
        "final_class": final_class,
        "final_class_prob": final_class_prob,
    }
    if id2label is not None:

        def name(i: int) -> str:
            return str(id2label.get(i, id2label.get(str(i), i)))

        out["labels"] = np.vectorize(name, otypes=[object])(top_indices).tolist()
    return out


# ----------------------------------------------------------------------------------------------
# 8. occlusion
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


# ----------------------------------------------------------------------------------------------
# 9. putting maps on one colour scale
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
