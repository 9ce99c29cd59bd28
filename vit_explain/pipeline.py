"""From (model, image) to the float32 numpy arrays the app draws. No Streamlit here.

The app keeps two kinds of results in its caches:

* :func:`run_core`: one traced forward pass, kept small: the embedding-stage taps, every hidden
  state, every attention map, the final norm, pooler and logits (ViT-B/16 at 224: about 30 MB).
* :func:`run_layer`: the full detail of one encoder layer (q, k, v, scores, MLP activations ...),
  recomputed from that layer's input hidden state in a few milliseconds when a page asks for it;
  :func:`layer_tap` gives one of those taps for every layer.

It also holds the other model runs the pages need (the pooler's pre-activations, forward passes
on occluded pictures, occlusion sensitivity); the maths on their results is in :mod:`.analysis`.

Arrays drop the batch dimension (the app runs one image at a time).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from . import analysis
from .capture import trace, trace_layer
from .config import ViTConfig
from .model import backbone

#: Taps of the embedding stage that the core trace keeps (besides the always-kept core taps).
EMBEDDING_TAPS = ("patches", "patch_embeddings", "cls_token", "tokens_with_cls", "position_embeddings")

#: Largest sequence length the app will run: attention memory grows with the square of the tokens.
MAX_TOKENS = 1025

#: Largest attention memory (scores + probabilities of every head of every layer, float32) the app
#: will run: ViT-B/16 at 384 (577 tokens, 366 MiB) fits; ViT-B/16 at 224 with patch 8 (785 tokens,
#: 677 MiB) needs fewer layers or heads. A trace keeps these maps, and a server keeps several traces.
MAX_ATTENTION_BYTES = 384 * 2**20


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def attention_memory_bytes(config: ViTConfig, batch: int = 1) -> int:
    """Bytes the attention scores and probabilities of all layers take in float32 (what a trace keeps)."""
    return 2 * 4 * batch * config.num_hidden_layers * config.num_attention_heads * config.num_tokens**2


def check_token_budget(config: ViTConfig) -> None:
    """Refuse configurations whose attention maps would not fit comfortably in memory.

    Two limits: at most :data:`MAX_TOKENS` tokens, and at most :data:`MAX_ATTENTION_BYTES` of
    attention maps over all layers and heads. Each message says why and what to change.
    """
    if config.num_tokens > MAX_TOKENS:
        grid = int((MAX_TOKENS - 1) ** 0.5)
        raise ValueError(
            f"{config.grid_size}x{config.grid_size} patches + {config.num_prefix_tokens} prefix token"
            f"{'s' if config.num_prefix_tokens > 1 else ''} = {config.num_tokens} tokens is more than the "
            f"{MAX_TOKENS} this app allows (a {grid}x{grid} grid): each attention map has tokens^2 entries, so "
            f"memory grows with the square of the token count. Use a larger patch size or a smaller image."
        )
    needed = attention_memory_bytes(config)
    if needed > MAX_ATTENTION_BYTES:
        per_layer = attention_memory_bytes(config.replace(num_hidden_layers=1))
        max_layers = MAX_ATTENTION_BYTES // per_layer
        fix = (f"fewer layers (at most {max_layers} here) or fewer heads" if max_layers >= 1 else "fewer heads")
        raise ValueError(
            f"{config.num_hidden_layers} layers x {config.num_attention_heads} heads of {config.num_tokens}x"
            f"{config.num_tokens} attention maps need {needed / 2**20:,.0f} MB, more than the "
            f"{MAX_ATTENTION_BYTES / 2**20:,.0f} MB this app allows: memory grows with the square of the token "
            f"count. Use {fix}, a larger patch size or a smaller image."
        )


def run_core(model: nn.Module, pixel_values: torch.Tensor) -> dict[str, np.ndarray]:
    """Trace the model once; return the stage-level tensors as float32 numpy arrays.

    Keys: the embedding taps of :data:`EMBEDDING_TAPS` ([N, C*P*P], [N, D], [1, D], [T, D], [T, D]),
    ``embeddings`` [T, D], ``hidden_states`` [L+1, T, D], ``attentions`` [L, H, T, T],
    ``last_hidden_state`` [T, D], ``pooler_output`` [D] (if the model has a pooler),
    ``logits`` [K] (if it classifies) and ``pixel_values`` [C, H, W].
    """
    check_token_budget(model.config)
    t = trace(model, pixel_values, taps=EMBEDDING_TAPS)
    out = {name: _np(t.tensors[name][0]) for name in EMBEDDING_TAPS}
    out["embeddings"] = _np(t.hidden_states[0][0])
    out["hidden_states"] = _np(torch.cat(t.hidden_states))  # [L+1, T, D]
    # One copy of the attention maps at a time (they dominate memory: [L, H, T, T]): the traced
    # tensors are dropped as soon as they are stacked, and numpy shares the stacked tensor's memory.
    attentions = torch.cat(t.attentions)  # [L, H, T, T]
    for i in range(t.num_layers):
        t.tensors.pop(f"layer.{i}.probs", None)
    t.attentions = []
    out["attentions"] = _np(attentions)
    del attentions
    out["last_hidden_state"] = _np(t.last_hidden_state[0])
    if t.pooler_output is not None:
        out["pooler_output"] = _np(t.pooler_output[0])
    if t.logits is not None:
        out["logits"] = _np(t.logits[0])
    out["pixel_values"] = _np(pixel_values[0])
    return out


def run_layer(model: nn.Module, index: int, hidden_state: np.ndarray, *,
              taps: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Every tap of encoder layer ``index`` given its input [T, D]; arrays without the batch axis.

    ``taps``: keep only the taps whose short name matches one of these glob patterns.
    """
    x = torch.from_numpy(np.asarray(hidden_state, dtype=np.float32))[None]
    param = next(model.parameters())
    out = trace_layer(model, index, x.to(param.device, param.dtype), taps=taps)
    return {name: _np(value[0]) for name, value in out.items()}


def layer_tap(model: nn.Module, hidden_states: np.ndarray, name: str) -> np.ndarray:
    """One tap of every encoder layer, each layer run on its own input: [L, ...] float32.

    ``hidden_states`` [L+1, T, D] (``run_core``'s); layer ``i`` is run on ``hidden_states[i]``
    and its tap ``name`` (a short name of the capture module's list, e.g. ``"residual"``) kept.
    """
    num_layers = len(backbone(model).encoder.layer)
    return np.stack([run_layer(model, i, hidden_states[i], taps=(name,))[name] for i in range(num_layers)])


def display_image(pixel_values: np.ndarray, mean, std) -> np.ndarray:
    """Undo the normalisation: [C, H, W] model input -> uint8 [H, W, 3] picture the model saw."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    rgb = (pixel_values * std + mean) * 255.0
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


def enlarge(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """A small picture repeated pixel by pixel (nearest neighbour) to at least ``min_side``: crisp squares, not a blur."""
    factor = max(1, -(-min_side // max(image.shape[0], 1)))
    if factor == 1:
        return image
    return np.ascontiguousarray(image.repeat(factor, axis=0).repeat(factor, axis=1))


def final_norm_and_head(model: nn.Module):
    """The final LayerNorm and the classifier (or None) of a model, for views that re-apply them."""
    head = getattr(model, "classifier", None)
    return backbone(model).layernorm, head


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameter counts per module group (embeddings, each layer, final norm, pooler, head)."""
    base = backbone(model)
    counts = {"ViTEmbeddings": sum(p.numel() for p in base.embeddings.parameters())}
    for i, layer in enumerate(base.encoder.layer):
        counts[f"ViTLayer {i}"] = sum(p.numel() for p in layer.parameters())
    counts["LayerNorm"] = sum(p.numel() for p in base.layernorm.parameters())
    if base.pooler is not None:
        counts["ViTPooler"] = sum(p.numel() for p in base.pooler.parameters())
    head = getattr(model, "classifier", None)
    if head is not None:
        counts["classifier"] = sum(p.numel() for p in head.parameters())
    return counts


# ------------------------------------------------------------------------------ the last stage
def pooler_pre_activation(model: nn.Module, cls: np.ndarray) -> np.ndarray:
    """The pooler's ``dense(CLS)`` before its tanh: [D] float32 (``pooler_output = tanh`` of it).

    ``cls``: the normed CLS token ``last_hidden_state[0]`` [D]. The model must have a pooler.
    """
    dense = backbone(model).pooler.dense
    x = torch.from_numpy(np.asarray(cls, dtype=np.float32))[None]
    with torch.no_grad():
        z = dense(x.to(dense.weight.device, dense.weight.dtype))
    return _np(z[0])


def image_feature(outputs) -> torch.Tensor:
    """The image's feature vector for models without a classifier: pooler output, else the normed CLS [B, D]."""
    return outputs.pooler_output if outputs.pooler_output is not None else outputs.last_hidden_state[:, 0]


def model_answer(outputs) -> torch.Tensor:
    """What a model gives for each image: its logits [B, K], or (no classifier) its feature vector [B, D]."""
    return outputs.logits if outputs.logits is not None else image_feature(outputs)


def occlusion_fill(model: nn.Module, fill: str = "grey"):
    """The value hidden patches are filled with, in the normalised units the model sees.

    ``"grey"``: 0, the mean colour after normalisation; ``"black"``: pixel value 0, i.e.
    ``(0 - mean) / std`` per channel with the model's preprocessing (ViT's 0.5, 0.5 by default).
    """
    if fill == "grey":
        return 0.0
    if fill != "black":
        raise ValueError(f"fill must be 'grey' or 'black', got {fill!r}")
    spec = getattr(model, "preprocess_spec", None)
    mean = np.asarray(getattr(spec, "image_mean", (0.5, 0.5, 0.5)), dtype=np.float64)
    std = np.asarray(getattr(spec, "image_std", (0.5, 0.5, 0.5)), dtype=np.float64)
    return tuple(float(v) for v in (0.0 - mean) / std)


def _input(model: nn.Module, pixel_values: np.ndarray) -> torch.Tensor:
    """One picture [C, H, W] as a batch of one on the model's device and dtype."""
    param = next(model.parameters())
    return torch.from_numpy(np.asarray(pixel_values, dtype=np.float32))[None].to(param.device, param.dtype)


def occluded_output(model: nn.Module, pixel_values: np.ndarray, masked: Iterable[int], fill: str = "grey") -> np.ndarray:
    """:func:`model_answer` of one plain forward pass (no trace) on the picture with patches hidden: [K] float32.

    ``pixel_values`` [C, H, W] as the model sees it; ``masked``: row-major patch indices to fill
    with :func:`occlusion_fill` (none: the model's answer on the picture itself).
    """
    config = model.config
    x = _input(model, pixel_values)
    cells = [divmod(int(i), config.grid_size) for i in masked]
    if cells:
        x = analysis.apply_occlusion(x, cells, config.patch_size, fill=occlusion_fill(model, fill))
    with torch.no_grad():
        return _np(model_answer(model(x))[0])


def occlusion_sensitivity_map(model: nn.Module, pixel_values: np.ndarray, target: int | None, *, batch: int = 16,
                              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """How much hiding each patch (mean grey) lowers the model's answer: [g, g] float32.

    With a ``target`` class: the drop of its softmax probability. Without one (models with no
    classifier): the drop of the cosine similarity between the feature vector and the original
    picture's. Positive: the patch helped. :func:`vit_explain.analysis.occlusion_sensitivity` runs
    the ``g*g`` forward passes, ``batch`` at a time, calling ``progress(done, total)``.
    """
    x = _input(model, pixel_values)
    if target is not None:
        def predict(images: torch.Tensor) -> np.ndarray:
            return analysis.softmax(model(images).logits, axis=-1)
    else:
        with torch.no_grad():
            reference = _np(image_feature(model(x))[0])

        def predict(images: torch.Tensor) -> np.ndarray:
            return analysis.cosine_similarity(image_feature(model(images)), reference)[:, None]
    result = analysis.occlusion_sensitivity(predict, x, model.config.patch_size, target if target is not None else 0,
                                            batch=batch, fill=0.0, progress=progress)
    return result.astype(np.float32)
