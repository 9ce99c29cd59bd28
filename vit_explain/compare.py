"""Two models on the same picture: which layer, head and patch of B to set beside those of A, and the
numbers the Compare page draws from the two forward passes. No Streamlit here.

Pairing (model A is the reference, the one the pickers count in):

* **layers by relative depth**: layer ``i`` of an ``L``-layer model sits at depth ``i / (L - 1)``
  (0: the first layer, 1: the last); layer ``i`` of A faces the layer of B nearest that depth, so
  the first faces the first and the last the last (:func:`facing_layer`);
* **patches by position**: patch ``p`` of A faces the patch of B that covers the centre of ``p`` in
  the picture (:func:`facing_patch`), whatever the two grids;
* **heads where both have them**: head ``h`` of A faces head ``h`` of B when B has one
  (:func:`facing_head`); the numbers are only names: the heads of two models learned independently.

For maps to share one colour scale across grids of different sizes they are expressed relative to
uniform attention (:func:`relative_to_uniform`: 1 everywhere when every patch gets the same share),
and distances as a share of the picture's side (:func:`distance_by_depth`).

:func:`layer_cka` compares every layer of A with every layer of B over a set of pictures (linear CKA,
:class:`vit_explain.analysis.MinibatchCKA`), running plain forward passes one picture at a time and
keeping nothing but the running sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import analysis
from .config import ViTConfig
from .pipeline import final_norm_and_head

#: Largest patch grid the layer similarity compares tokens on: finer grids are averaged down to it, so one
#: picture's Gram matrices stay small (257 tokens) whatever the models.
MAX_CKA_GRID = 16


# ---------------------------------------------------------------------------------- pairing
def relative_depth(layer: int, num_layers: int) -> float:
    """Where layer ``layer`` sits in a stack of ``num_layers``: 0 the first, 1 the last (a lone layer: 1)."""
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} is not one of 0 .. {num_layers - 1}")
    return layer / (num_layers - 1) if num_layers > 1 else 1.0


def facing_layer(layer_a: int, layers_a: int, layers_b: int) -> int:
    """The layer of a ``layers_b``-layer model nearest in relative depth to layer ``layer_a`` of A
    (ties go to the deeper one): the first faces the first, the last the last."""
    depth = relative_depth(layer_a, layers_a)
    return int(min(layers_b - 1, math.floor(depth * (layers_b - 1) + 0.5)))


def layer_pairs(layers_a: int, layers_b: int) -> list[int]:
    """``facing_layer`` of every layer of A: ``pairs[i]`` is the layer of B facing layer ``i`` of A."""
    return [facing_layer(i, layers_a, layers_b) for i in range(layers_a)]


def facing_patch(patch: int, grid_a: int, grid_b: int) -> int:
    """The patch of a ``grid_b x grid_b`` grid covering the centre of patch ``patch`` of a ``grid_a x grid_a``
    grid over the same picture (patches numbered row by row)."""
    if not 0 <= patch < grid_a * grid_a:
        raise ValueError(f"patch {patch} is not one of 0 .. {grid_a * grid_a - 1}")
    row, col = divmod(int(patch), grid_a)
    r = min(grid_b - 1, int((row + 0.5) * grid_b / grid_a))
    c = min(grid_b - 1, int((col + 0.5) * grid_b / grid_a))
    return r * grid_b + c


def facing_head(head: int | None, heads_b: int) -> int | None:
    """Head ``head`` of B if B has it, else None (None, "all heads averaged", stays None)."""
    return head if head is not None and 0 <= head < heads_b else None


@dataclass(frozen=True)
class Pairing:
    """How the pickers, counted in model A, point into model B."""

    layers_a: int
    layers_b: int
    heads_a: int
    heads_b: int
    grid_a: int
    grid_b: int

    @classmethod
    def of(cls, config_a: ViTConfig, config_b: ViTConfig) -> "Pairing":
        return cls(config_a.num_hidden_layers, config_b.num_hidden_layers, config_a.num_attention_heads,
                   config_b.num_attention_heads, config_a.grid_size, config_b.grid_size)

    @property
    def shared_heads(self) -> int:
        """Heads 0 .. shared_heads - 1 exist in both models."""
        return min(self.heads_a, self.heads_b)

    def layer(self, layer_a: int) -> int:
        return facing_layer(layer_a, self.layers_a, self.layers_b)

    def head(self, head: int | None) -> int | None:
        return facing_head(head, self.heads_b)

    def patch(self, patch_a: int) -> int:
        return facing_patch(patch_a, self.grid_a, self.grid_b)

    @property
    def common_grid(self) -> int:
        """The grid the layer similarity compares tokens on: the coarser of the two, at most MAX_CKA_GRID."""
        return min(self.grid_a, self.grid_b, MAX_CKA_GRID)


# ---------------------------------------------------------------------------------- maps on one scale
def relative_to_uniform(weights: np.ndarray) -> np.ndarray:
    """A map of shares over ``N`` patches (``[..., g, g]``) as multiples of the uniform share ``1/N``.

    Each map is divided by its own sum first (the weight left on CLS and other prefix tokens is
    dropped), then multiplied by ``N``: 1 means "as much as any patch would get if attention were
    spread evenly", so grids of 64 and 196 patches can share one colour scale. A map with no weight
    on the patches stays 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.shape[-1] * w.shape[-2]
    total = w.sum(axis=(-2, -1), keepdims=True)
    return np.divide(w * n, total, out=np.zeros_like(w), where=total > 0)


def cls_maps(attentions: np.ndarray, grid: int, head: int | None = None) -> np.ndarray:
    """Where CLS looks in every layer, relative to uniform: ``[L, g, g]`` (``head`` None: heads averaged)."""
    a = np.asarray(attentions)
    if head is None:
        maps = analysis.cls_attention_map(a, grid)
    else:
        maps = analysis.cls_attention_map(a[:, head], grid, head_fusion=None)
    return relative_to_uniform(maps)


def query_map(attention_layer: np.ndarray, patch: int, grid: int, head: int | None = None) -> np.ndarray:
    """Where patch ``patch`` looks in one layer ``[H, T, T]``, over the patches, relative to uniform: ``[g, g]``."""
    a = np.asarray(attention_layer, dtype=np.float64)
    n = grid * grid
    if a.ndim != 3 or a.shape[-1] < n + 1 or not 0 <= patch < n:
        raise ValueError(f"query_map: expected [H, T, T] with T > {n} and a patch in 0 .. {n - 1}, got {a.shape}, {patch}")
    rows = a[:, a.shape[-1] - n + patch, -n:]  # [H, N]: the query patch's weights on the patch keys
    row = rows.mean(axis=0) if head is None else rows[head]
    return relative_to_uniform(row.reshape(grid, grid))


def rollout_map(attentions: np.ndarray, grid: int, through: int | None = None) -> np.ndarray:
    """CLS's attention rollout (heads averaged) through the first ``through + 1`` layers (all: None),
    relative to uniform: ``[g, g]``."""
    a = np.asarray(attentions)
    if through is not None:
        a = a[: through + 1]
    return relative_to_uniform(analysis.cls_rollout_map(analysis.attention_rollout(a), grid))


def distance_by_depth(attentions: np.ndarray, config: ViTConfig) -> dict[str, np.ndarray | float]:
    """Mean attention distance of every head (ViT paper, Fig. 7 right), against relative depth.

    ``depth`` ``[L]`` (0 first layer, 1 last), ``pixels`` ``[L, H]``, ``share`` ``[L, H]`` (pixels over the
    picture's side, so models of other image sizes share an axis) and ``uniform_share``, where evenly
    spread attention would put a head.
    """
    L = config.num_hidden_layers
    pixels = analysis.attention_distance_all(attentions, config.grid_size, config.patch_size)
    size = float(config.image_size)
    return {
        "depth": np.array([relative_depth(i, L) for i in range(L)]),
        "pixels": pixels,
        "share": pixels / size,
        "uniform_share": analysis.uniform_attention_distance(config.grid_size, config.patch_size) / size,
    }


def lens_by_depth(model: nn.Module, hidden_states: np.ndarray) -> dict[str, np.ndarray]:
    """The logit lens of a classifier (:func:`vit_explain.analysis.logit_lens` on the CLS token), layer by layer.

    The final layer norm and the classifier read the CLS token after every layer (``hidden_states[1:]``; the
    embeddings are left out: they are not a layer, and their CLS token is the same for every picture).
    ``depth`` ``[L]``: the layers' relative depths (:func:`relative_depth`); ``final_prob`` ``[L]``: the
    probability of the model's final answer after each layer; ``top1`` ``[L]``: the top class there;
    ``final_class``.
    """
    norm, head = final_norm_and_head(model)
    if head is None:
        raise ValueError("the logit lens needs a classifier")
    states = np.asarray(hidden_states)
    out = analysis.logit_lens(states[1:, :1, :], norm, head, top_k=1)
    L = len(out["final_class_prob"])
    return {"depth": np.array([relative_depth(i, L) for i in range(L)]), "final_prob": out["final_class_prob"],
            "top1": out["top_indices"][:, 0].astype(np.int64), "final_class": int(out["final_class"])}


# ---------------------------------------------------------------------------------- tokens on a common grid
def pool_matrix(grid_in: int, grid_out: int) -> np.ndarray:
    """``[grid_out², grid_in²]``: each output patch the area-weighted mean of the input patches it overlaps.

    Both grids cover the same picture; patches numbered row by row. Each row sums to 1; equal grids
    give the identity.
    """
    def one_axis() -> np.ndarray:
        edges_in = np.arange(grid_in + 1) / grid_in
        edges_out = np.arange(grid_out + 1) / grid_out
        lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
        hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
        overlap = np.clip(hi - lo, 0.0, None)  # [out, in]
        return overlap / overlap.sum(axis=1, keepdims=True)

    w = one_axis()
    return np.kron(w, w)


def paired_tokens(hidden_states: np.ndarray, grid: int, common_grid: int) -> np.ndarray:
    """CLS and the patch tokens moved onto ``common_grid``: ``[..., 1 + common_grid², D]``.

    ``hidden_states`` ``[..., T, D]`` with CLS first and the ``grid²`` patches last (other prefix tokens,
    a distillation token or registers, have no counterpart in another model and are left out). When
    the grids differ each common patch is the area-weighted mean of the patches it overlaps, so token
    ``k`` is the same spot of the picture in both models.
    """
    h = np.asarray(hidden_states, dtype=np.float64)
    patches = h[..., -grid * grid:, :]
    if common_grid != grid:
        patches = np.einsum("on,...nd->...od", pool_matrix(grid, common_grid), patches)
    return np.concatenate([h[..., :1, :], patches], axis=-2)


# ---------------------------------------------------------------------------------- layer similarity
def hidden_states(model: nn.Module, pixel_values: torch.Tensor) -> np.ndarray:
    """Every hidden state of a plain forward pass (no trace, no attention maps kept): ``[L+1, T, D]`` float32."""
    param = next(model.parameters())
    with torch.no_grad():
        out = model(pixel_values.to(param.device, param.dtype), output_hidden_states=True)
    states = out.hidden_states if hasattr(out, "hidden_states") else out[1]
    return torch.cat(states).to(torch.float32).cpu().numpy()


def layer_cka(model_a: nn.Module, model_b: nn.Module, pictures: Sequence[bytes], *, unbiased: bool = True,
              progress: Callable[[float, str], None] | None = None) -> dict:
    """Linear CKA of every hidden state of A against every hidden state of B over ``pictures``.

    Features: every token of every picture, CLS and the patches, on the coarser of the two grids
    (:func:`paired_tokens`, at most :data:`MAX_CKA_GRID`); each picture's tokens are one batch of
    :class:`~vit_explain.analysis.MinibatchCKA` (unbiased HSIC by default). Each model prepares the
    picture its own way (size, mean, std). Hidden state 0 is the embeddings, ``k`` the stream after
    layer ``k - 1``.

    Returns ``cross`` ``[La+1, Lb+1]`` (A against B), ``within_a`` ``[La+1, La+1]`` and ``within_b``
    (each model against itself), ``pictures`` and ``tokens`` (per picture), ``grid``.
    """
    from .preprocess import load_image, to_pixel_values

    if not pictures:
        raise ValueError("layer_cka needs at least one picture")
    config_a, config_b = model_a.config, model_b.config
    grid = Pairing.of(config_a, config_b).common_grid
    report = progress or (lambda fraction, text: None)
    cka = analysis.MinibatchCKA(config_a.num_hidden_layers + 1, config_b.num_hidden_layers + 1, unbiased=unbiased)
    for i, data in enumerate(pictures):
        report(i / len(pictures), f"Picture {i + 1} of {len(pictures)}: both models' hidden states")
        image = load_image(data)
        tokens = []
        for model in (model_a, model_b) if model_b is not model_a else (model_a,):  # one model twice: one pass
            spec = getattr(model, "preprocess_spec", None) or model.config
            states = hidden_states(model, to_pixel_values(image, spec))
            tokens.append(paired_tokens(states, model.config.grid_size, grid))
        cka.update(list(tokens[0]), list(tokens[-1]))
    report(1.0, "Done")
    return {"cross": cka.cross(), "within_a": cka.within_a(), "within_b": cka.within_b(),
            "pictures": len(pictures), "tokens": 1 + grid * grid, "grid": grid, "unbiased": unbiased}


def cka_summary(cross: np.ndarray, within_b: np.ndarray | None = None) -> dict[str, float]:
    """A few numbers that say what an A-against-B CKA matrix shows: the mean CKA of the pairs at the same relative
    depth (``diagonal``), the mean of all pairs (``overall``) and, given B against itself, the mean CKA between
    two different hidden states of B (``within_b``: near 1 when B's layers barely change its tokens)."""
    c = np.asarray(cross, dtype=np.float64)
    rows, cols = c.shape
    pairs = [c[i, facing_layer(i, rows, cols)] for i in range(rows)]
    out = {"diagonal": float(np.nanmean(pairs)), "overall": float(np.nanmean(c))}
    if within_b is not None:
        w = np.asarray(within_b, dtype=np.float64)
        off = w[~np.eye(len(w), dtype=bool)]
        out["within_b"] = float(np.nanmean(off)) if off.size else float("nan")
    return out
