"""Small helpers for the app: the top classes of a prediction, a model's vital numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..config import ViTConfig
from ..model import ViTForImageClassification

def top_k(logits: Any, id2label: Mapping[int, str] | Sequence[str] | None, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes as (label, probability), most probable first.

    ``logits`` is [K] or [1, K] (a tensor or anything torch.as_tensor takes); probabilities are
    the softmax over all K classes; ``k`` is clipped to K.
    """
    scores = torch.as_tensor(logits).detach().to(torch.float64)
    if scores.ndim == 2 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"logits must be [K] or [1, K] with K >= 1, got shape {list(scores.shape)}")
    probs = torch.softmax(scores, dim=0)
    k = max(0, min(int(k), probs.numel()))
    values, indices = torch.topk(probs, k)
    if isinstance(id2label, Mapping):
        names = {int(key): str(value) for key, value in id2label.items()}
    elif id2label is not None:
        names = dict(enumerate(map(str, id2label)))
    else:
        names = {}
    return [(names.get(int(i), f"LABEL_{int(i)}"), float(p)) for p, i in zip(values, indices)]


def describe(model: nn.Module) -> dict[str, Any]:
    """A short summary of a model for display: sizes, parameter count, head and pooler."""
    config: ViTConfig = model.config
    is_classifier = isinstance(model, ViTForImageClassification)
    base = model.vit if is_classifier else model
    return {
        "class": type(model).__name__,
        "source": getattr(model, "source", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "grid_size": config.grid_size,
        "num_tokens": config.num_tokens,
        "model_type": config.model_type,
        "prefix_tokens": config.prefix_token_names(),  # CLS first, then distillation / register tokens
        "layer_norm_eps": config.layer_norm_eps,
        "has_pooler": base.pooler is not None,
        "is_classifier": is_classifier,
        "num_labels": config.num_labels if is_classifier else 0,
    }
