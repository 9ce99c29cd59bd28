"""Gradient-weighted attention relevance (Chefer, Gur and Wolf 2021, "Generic Attention-model Explainability").

The rule for self-attention encoders (their Eq. 5-6 for a ViT): relevance starts as the identity,
``R = I`` ``[T, T]`` (every token is relevant to itself); for each layer, in order,

    Ā = mean over heads of (∇A ⊙ A)⁺        (∇A: gradient of the target logit w.r.t. the attention A)
    R = R + Ā @ R

and the explanation is the CLS row of ``R`` over the patch tokens. Unlike rollout, which follows every
attention weight, the gradient says which weights pushed the chosen class up; the clamp keeps only those.

:func:`relevance_rule` is the rule on arrays (numpy, float64); :func:`attention_relevance` runs the model
with autograd to get the attention maps and their gradients, then applies it. torch is imported only there.
"""

from __future__ import annotations

import contextvars
from typing import Any, Sequence

import numpy as np

from ._common import _layers, _np

# The attention_relevance() call running in this thread/context: its hooks catch only its own forward pass.
_CALL: contextvars.ContextVar[object | None] = contextvars.ContextVar("vit_explain_relevance_call", default=None)


def relevance_rule(attentions: Sequence[Any], gradients: Sequence[Any]) -> np.ndarray:
    """The relevance matrix ``R`` ``[T, T]`` from every layer's attention and its gradient (L arrays
    ``[H, T, T]`` each, first layer first): ``R = I``, then per layer ``R += mean_h((g * a).clip(0)) @ R``."""
    a_layers = _layers(attentions, "relevance_rule")
    g_layers = _layers(gradients, "relevance_rule")
    if len(a_layers) != len(g_layers) or a_layers[0].shape != g_layers[0].shape:
        raise ValueError(f"relevance_rule: {len(a_layers)} attention maps of {a_layers[0].shape} and "
                         f"{len(g_layers)} gradients of {g_layers[0].shape} do not pair up")
    shape = a_layers[0].shape
    if len(shape) != 3 or shape[-1] != shape[-2]:
        raise ValueError(f"relevance_rule: each layer must be [H, T, T], got {shape}")
    R = np.eye(shape[-1])
    for a, g in zip(a_layers, g_layers):
        weighted = np.clip(g * a, 0.0, None).mean(axis=0)  # [T, T]
        R = R + weighted @ R
    return R


def relevance_map(relevance: Any, grid: int) -> np.ndarray:
    """The CLS row of a relevance matrix over the last ``grid * grid`` tokens (the patches), as ``[g, g]``."""
    R = _np(relevance)
    n = grid * grid
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] <= n:
        raise ValueError(f"relevance_map: expected [T, T] with T > {n} (prefix tokens + {grid}x{grid} patches), "
                         f"got {R.shape}")
    return R[0, -n:].reshape(grid, grid)


def attention_relevance(model: Any, pixel_values: Any, target: int | None = None) -> np.ndarray:
    """Chefer et al.'s relevance of each patch for the ``target`` class: float64 ``[grid, grid]``.

    ``model``: a classifier (``ViTForImageClassification``; a model without a classifier has no class
    logit to explain, and is refused with a ValueError). ``pixel_values``: one picture ``[1, C, H, W]``
    (or ``[C, H, W]``). ``target``: a class index, default the predicted class. One forward pass with
    autograd on (the attention maps caught at the ``probs`` taps by per-call hooks, so other threads'
    forward passes are not affected), one backward pass to the attention maps only (no parameter's
    ``.grad`` is touched), then :func:`relevance_rule` and the CLS row over the patches.
    """
    import torch

    from ..capture import _HOOK_LOCK, Tap, tap_key
    from ..model import backbone

    if not isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        raise ValueError("attention_relevance explains a class logit: this model has no classifier")
    base = backbone(model)
    param = next(model.parameters())
    x = torch.as_tensor(pixel_values)
    x = (x[None] if x.ndim == 3 else x).to(param.device, param.dtype)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one picture [1, C, H, W], got {list(x.shape)}")

    caught: dict[int, torch.Tensor] = {}
    mine = object()

    def make_hook(index: int):
        def hook(_module, _inputs, output):
            if _CALL.get() is not mine:
                return None
            if not output.requires_grad:  # weights frozen: start the graph here
                output = output.detach().requires_grad_(True)
            caught[index] = output
            return output

        return hook

    handles = []
    with _HOOK_LOCK:
        for path, sub in base.named_modules():
            if isinstance(sub, Tap) and sub.name == "probs":
                index = int(tap_key(path, sub).split(".")[1])
                handles.append(sub.register_forward_hook(make_hook(index)))
    token = _CALL.set(mine)
    try:
        with torch.enable_grad():
            out = model(x, output_attentions=True)  # the step-by-step attention, so the probs taps run
            logits = out.logits[0]
            target = int(logits.argmax()) if target is None else int(target)
            if not 0 <= target < logits.numel():
                raise ValueError(f"target must be a class index 0 to {logits.numel() - 1}, got {target}")
            maps = [caught[i] for i in range(len(base.encoder.layer))]
            grads = torch.autograd.grad(logits[target], maps)
    finally:
        _CALL.reset(token)
        with _HOOK_LOCK:
            for handle in handles:
                handle.remove()
    R = relevance_rule([m[0].detach() for m in maps], [g[0] for g in grads])
    return relevance_map(R, base.config.grid_size)
