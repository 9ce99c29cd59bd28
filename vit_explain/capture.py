"""Hooks in, tensors out: run a ViT once and keep every intermediate tensor it makes.

The model marks each interesting point of its forward pass with a :class:`Tap`, an identity
module that a forward hook can listen to. :func:`trace` hooks the taps, runs the model once and
hands back a :class:`Trace`. The hooks are removed before ``trace`` returns (even when the
forward pass raises), and the tensors of each call live in that call's own recorder, reached
through a :class:`contextvars.ContextVar`, so many threads can trace one shared model at once.

Tap names (``i`` is the layer index, 0-based). T = S + N tokens: S = ``config.num_prefix_tokens``
prefix tokens (CLS first; then DeiT's distillation token; then register tokens) followed by the N
patches, so the patches are always the last N tokens::

    patches                 [B, N, C*P*P]  raw pixels of each patch, flattened (c, p1, p2)
    patch_embeddings        [B, N, D]      patches after the linear projection (the strided conv)
    cls_token               [B, 1, D]      the learned CLS token, one per image
    tokens_with_cls         [B, T, D]      CLS (and any other prefix tokens) before the patch embeddings
    position_embeddings     [1, T, D]      the position embeddings added, on this image's grid (resized
                                           when trained on another; a zero row for each register token)
    embeddings              [B, T, D]      tokens + position embeddings = hidden_states[0]
    layer.i.layernorm_before  [B, T, D]    pre-norm before attention
    layer.i.q / .k / .v       [B, H, T, d] queries, keys, values split into heads (d = D / H)
    layer.i.scores            [B, H, T, T] q.k / sqrt(d), before the softmax
    layer.i.probs             [B, H, T, T] softmax(scores): each row sums to 1 = attentions[i]
    layer.i.context           [B, T, D]    probs @ v, heads concatenated again
    layer.i.attention_output  [B, T, D]    context after the output projection (ViTSelfOutput), before layer scale
    layer.i.residual          [B, T, D]    first residual: layer input + attention output
    layer.i.layernorm_after   [B, T, D]    pre-norm before the MLP
    layer.i.mlp_pre_act       [B, T, M]    first MLP projection, before the activation
    layer.i.mlp_post_act      [B, T, M]    after the activation (GELU by default)
    layer.i.mlp_output        [B, T, D]    second MLP projection, back to D (before layer scale, if any)
    layer.i.output            [B, T, D]    residual + MLP output = hidden_states[i + 1]
    layernorm               [B, T, D]      final layer norm = last_hidden_state
    pooler                  [B, D]         tanh(dense(CLS)) (models with a pooler)
    logits                  [B, K]         classifier output (distilled DeiT: mean of its two heads)
"""

from __future__ import annotations

import contextvars
import fnmatch
import re
import threading
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

# The recorder of the trace() call running in this thread/context, or None.
_ACTIVE: contextvars.ContextVar["_Recorder | None"] = contextvars.ContextVar(
    "vit_explain_active_trace", default=None
)
# Registering and removing hooks touches dicts that other threads iterate: do it under a lock.
_HOOK_LOCK = threading.Lock()
_LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)\.")
_KEY_RE = re.compile(r"layer\.(\d+)\.(.+)")

#: Taps that trace() always keeps, because hidden_states and attentions are built from them.
CORE_TAPS = ("embeddings", "output", "probs", "layernorm", "pooler", "logits")


class Tap(nn.Module):
    """An identity module marking a named tensor in the forward pass; trace() hooks it."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return repr(self.name)


def is_tracing() -> bool:
    """True inside a trace() call in this thread: the model then takes its step-by-step path."""
    return _ACTIVE.get() is not None


def tap_key(module_path: str, tap: Tap) -> str:
    """The public name of a tap: ``layer.{i}.{name}`` inside the encoder, else ``name``."""
    match = _LAYER_RE.search(module_path + ".")
    return f"layer.{match.group(1)}.{tap.name}" if match else tap.name


class _Recorder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}


@dataclass
class Trace:
    """Everything one forward pass made. Tensors are detached, on the model's device."""

    hidden_states: list[torch.Tensor]
    attentions: list[torch.Tensor | None]
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None
    logits: torch.Tensor | None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.attentions)

    def layer(self, index: int) -> dict[str, torch.Tensor]:
        """The taps of one encoder layer, keyed by their short names (``q``, ``probs`` ...)."""
        prefix = f"layer.{index}."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def to_numpy(self) -> dict[str, "object"]:
        """Every tensor as a float32 numpy array, keyed by tap name (for caching or ``np.savez``)."""
        return {k: v.detach().float().cpu().numpy() for k, v in self.tensors.items()}


def _selector(layers: set[int] | None, taps: tuple[str, ...] | None):
    """The test trace() applies to each tap key: core taps always (per-layer ones of the chosen layers,
    every layer's output), other taps if their layer is chosen and their name matches a ``taps`` glob."""
    wanted = None if taps is None else re.compile("|".join(fnmatch.translate(p) for p in taps) or "(?!)")

    def keep(key: str) -> bool:
        match = _KEY_RE.match(key)
        layer, short = (int(match.group(1)), match.group(2)) if match else (None, key)
        if layer is not None and layers is not None and layer not in layers:
            return short == "output"  # hidden_states stay complete
        if short in CORE_TAPS:
            return True
        return wanted is None or bool(wanted.match(key) or wanted.match(short))

    return keep


def trace(
    model: nn.Module,
    pixel_values: torch.Tensor,
    *,
    layers: Iterable[int] | None = None,
    taps: Iterable[str] | None = None,
) -> Trace:
    """Run ``model`` once on ``pixel_values`` [B, C, H, W] and return every tapped tensor.

    ``layers`` keeps the per-layer taps of those layers only (``attentions[i]`` is None for the
    others); ``taps`` keeps only taps whose name matches one of these glob patterns (``"q"``,
    ``"layer.3.*"``, ``"mlp_*"``). ``hidden_states`` are always complete.
    """
    layer_set = None if layers is None else {int(i) for i in layers}
    tap_patterns = None if taps is None else tuple(taps)
    tensors = _record(model, lambda: model(pixel_values), _selector(layer_set, tap_patterns))
    num_layers = len(getattr(_base_model(model).encoder, "layer"))
    hidden_states = [tensors["embeddings"]] + [tensors[f"layer.{i}.output"] for i in range(num_layers)]
    attentions = [tensors.get(f"layer.{i}.probs") for i in range(num_layers)]
    return Trace(
        hidden_states=hidden_states,
        attentions=attentions,
        last_hidden_state=tensors["layernorm"],
        pooler_output=tensors.get("pooler"),
        logits=tensors.get("logits"),
        tensors=tensors,
    )


def trace_layer(
    model: nn.Module, index: int, hidden_state: torch.Tensor, *, taps: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Run encoder layer ``index`` alone on its input ``hidden_state`` [B, T, D] and return its taps.

    Keys are the short tap names (``q``, ``probs``, ``mlp_pre_act`` ...). Given
    ``trace(model, x).hidden_states[index]`` this reproduces that trace's ``layer(index)`` without
    running (or keeping) the other layers: the app uses it to show one layer in full detail.
    ``taps`` keeps only the taps whose short name matches one of these glob patterns.
    """
    layer = _base_model(model).encoder.layer[index]
    if taps is None:
        return _record(layer, lambda: layer(hidden_state), lambda key: True)
    wanted = re.compile("|".join(fnmatch.translate(p) for p in taps) or "(?!)")
    return _record(layer, lambda: layer(hidden_state), lambda key: bool(wanted.match(key)))


def _record(module: nn.Module, run, keep) -> dict[str, torch.Tensor]:
    """Hook the taps of ``module`` whose key ``keep`` accepts, call ``run()``, unhook, return the tensors."""
    recorder = _Recorder()

    def make_hook(key: str):
        def hook(_module, _inputs, output):
            # Other threads' trace() calls hook the same modules; only our own call records here.
            # Under no_grad only a parameter seen by a tap (position_embeddings) still requires grad.
            if _ACTIVE.get() is recorder:
                recorder.tensors[key] = output.detach() if output.requires_grad else output

        return hook

    handles = []
    with _HOOK_LOCK:
        for path, sub in module.named_modules():
            if isinstance(sub, Tap):
                key = tap_key(path, sub)
                if keep(key):
                    handles.append(sub.register_forward_hook(make_hook(key)))
    token = _ACTIVE.set(recorder)
    try:
        with torch.no_grad():
            run()
    finally:
        _ACTIVE.reset(token)
        with _HOOK_LOCK:
            for handle in handles:
                handle.remove()
    return recorder.tensors


def _base_model(model: nn.Module) -> nn.Module:
    from .model import backbone  # here, not at the top: model.py imports this module

    return backbone(model)
