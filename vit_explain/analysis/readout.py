"""Reading the class off the model: softmax, and the logit lens (the head applied after every layer).

See :mod:`vit_explain.analysis` for the conventions. torch is only touched when a caller passes
tensors or modules in.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ._common import _is_tensor, _is_torch_module, _np


def softmax(x: Any, axis: int = -1) -> np.ndarray:
    """``exp(x_i) / sum_j exp(x_j)`` along ``axis``, as float64: logits in, probabilities out.

    The maximum is subtracted first (the result is unchanged, the exponentials cannot overflow), so
    each slice along ``axis`` is positive and sums to 1. Accepts numpy arrays and torch tensors.
    """
    z = _np(x)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------------
# the logit lens
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
    probs = softmax(logits, axis=-1)
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
