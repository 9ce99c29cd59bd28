"""What the tokens and weights hold: position similarity, filter and token PCA, norms, layer changes.

Pure numpy functions (see :mod:`vit_explain.analysis` for the conventions).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import (
    _cosine,
    _fix_signs,
    _grid_from_count,
    _grid_positions,
    _layers,
    _minmax01,
    _np,
    _pairwise_grid_distance,
    _principal_axes,
    _split_patches,
)


# ----------------------------------------------------------------------------------------------
# 1. similarity of vectors
# ----------------------------------------------------------------------------------------------


def cosine_matrix(x: Any) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``x`` ``[n, D]`` -> ``[n, n]`` (0 for zero rows).

    One product of row-normalised matrices: memory n*n, never n*n*D.
    """
    x = _np(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def cosine_similarity(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of ``a`` and ``b`` along their last axis (broadcast); 0 where either is zero.

    Two ``[D]`` vectors give a 0-d array (``float(...)`` it); ``[B, D]`` against ``[D]`` gives ``[B]``.
    """
    return _cosine(_np(a), _np(b))


# ----------------------------------------------------------------------------------------------
# 2. position embedding similarity (Dosovitskiy et al., 2021, Fig. 7 centre)
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


def similarity_by_distance(sim: Any, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``sim`` ``[N, N]`` over patch pairs, grouped by their distance.

    Distances are Euclidean between patch centres in patches, rounded to 0.5; the pair of a patch
    with itself (distance 0) is included. Returns ``(distances, means, stds)``, distances ascending.
    """
    sim = _np(sim)
    bins = np.round(_pairwise_grid_distance(grid) * 2).astype(np.int64).ravel()
    counts = np.bincount(bins)
    keep = counts > 0
    sums = np.bincount(bins, weights=sim.ravel())
    squares = np.bincount(bins, weights=sim.ravel() ** 2)
    means = sums[keep] / counts[keep]
    stds = np.sqrt(np.maximum(squares[keep] / counts[keep] - means**2, 0.0))
    return np.nonzero(keep)[0] / 2, means, stds


# ----------------------------------------------------------------------------------------------
# 3. the patch embedding and its filters' principal components (Dosovitskiy et al., 2021, Fig. 7 left)
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


def conv_as_linear(weight: Any, bias: Any | None, patch_vector: Any) -> np.ndarray:
    """The patch embedding as one matrix product: ``W.reshape(D, C*P*P) @ patch + b``: ``[D]``.

    ``weight`` is the Conv2d kernel ``[D, C, P, P]``; ``patch_vector`` is the patch flattened in
    (c, p1, p2) order, exactly what ``rearrange(..., "b c (h p1) (w p2) -> b (h w) (c p1 p2)")``
    produces. A convolution whose kernel and stride both equal P visits each patch once and
    takes this dot product there, so the two give the same numbers.
    """
    w = _np(weight)
    out = w.reshape(w.shape[0], -1) @ _np(patch_vector)
    if bias is not None:
        out = out + _np(bias)
    return out


# ----------------------------------------------------------------------------------------------
# 4. token maps: PCA colours, norms, high-norm artefacts
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


def token_mean_std(tokens: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each token's D features: two ``[..., T]`` arrays.

    What a layer norm sets to 0 and 1 before its learned scale and shift.
    """
    x = _np(tokens)
    return x.mean(axis=-1), x.std(axis=-1)


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


# ----------------------------------------------------------------------------------------------
# 5. how much each layer changes the tokens
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


def stream_norms(hidden_states: Any, residuals: Any) -> dict[str, np.ndarray]:
    """Norms of the residual stream and of what each branch adds to it, per layer and token.

    ``hidden_states`` ``[L+1, T, D]`` (the stream before layer l is ``hidden_states[l]``);
    ``residuals`` ``[L, T, D]`` (the stream after layer l's attention branch was added: the
    ``layer.l.residual`` tap). Returns ``stream`` ``[L+1, T]`` (norm of the stream),
    ``attention`` ``[L, T]`` (norm of the attention branch's update = residual - input) and
    ``mlp`` ``[L, T]`` (norm of the MLP branch's update = output - residual).
    """
    h = _np(hidden_states)
    r = _np(residuals)
    if h.ndim != 3 or r.shape != (h.shape[0] - 1,) + h.shape[1:]:
        raise ValueError(f"stream_norms: expected hidden [L+1, T, D] and residuals [L, T, D], got {h.shape}, {r.shape}")
    return {
        "stream": np.linalg.norm(h, axis=-1),
        "attention": np.linalg.norm(r - h[:-1], axis=-1),
        "mlp": np.linalg.norm(h[1:] - r, axis=-1),
    }


def update_ratio(residual: Any, mlp_output: Any) -> np.ndarray:
    """``|MLP output| / |stream before the MLP|`` per token: how big a change the MLP makes (``[T]``).

    0 for a token whose stream is zero.
    """
    r = np.linalg.norm(_np(residual), axis=-1)
    m = np.linalg.norm(_np(mlp_output), axis=-1)
    return np.divide(m, r, out=np.zeros_like(m), where=r > 0)


# ----------------------------------------------------------------------------------------------
# 6. the MLP's activation
# ----------------------------------------------------------------------------------------------

#: An activation counts as "switched off" when its magnitude is below this.
NEAR_ZERO = 0.05


def activation_stats(pre: Any, post: Any, tol: float = NEAR_ZERO) -> dict[str, float]:
    """Shares of the ``T x M`` activations: below zero before, and near zero / on after, the activation.

    Keys: ``negative`` (share of ``pre < 0``), ``near_zero`` (``|post| < tol``), ``active``
    (``post > tol``), and the mean and standard deviation of ``pre`` (``pre_mean``, ``pre_std``).
    """
    pre, post = _np(pre), _np(post)
    n = max(pre.size, 1)
    return {
        "negative": float((pre < 0).sum() / n),
        "near_zero": float((np.abs(post) < tol).sum() / n),
        "active": float((post > tol).sum() / n),
        "pre_mean": float(pre.mean()) if pre.size else 0.0,
        "pre_std": float(pre.std()) if pre.size else 0.0,
    }


def active_share_map(post: Any, grid: int, tol: float = NEAR_ZERO) -> np.ndarray:
    """For each patch, the share of its M hidden units that the activation left on (``> tol``): ``[g, g]``.

    ``post``: ``[T, M]`` after the activation; the patches are the last ``g*g`` tokens.
    """
    post = _np(post)
    share = (post[-grid * grid:] > tol).mean(axis=1)  # the patch tokens, after CLS and any other prefix
    return share.reshape(grid, grid)
