"""What if? Change the live model for one call: switch heads off, skip layers, drop the positions, shuffle patches.

::

    from vit_explain.interventions import Intervention, intervene, head_importance

    spec = Intervention(ablate_heads={3: [0, 5]},   # layer -> heads whose output is zeroed
                        skip_layers=(7,),            # layer i returns its input unchanged
                        skip_attention=(), skip_mlp=(),  # drop one residual branch of a layer
                        positions="keep",            # or "remove": no position embeddings added
                        patch_order=None)            # a permutation of the patch indices
    with intervene(model, spec):
        out = model(pixel_values)                    # trace(model, pixel_values) works inside too

How it works. Every change is made at one of the model's :class:`~vit_explain.capture.Tap` points, by a
forward *pre*-hook that replaces the tensor the tap passes on (a tap is an identity, so what it is given
is what the rest of the model sees). No weight is copied or edited:

* an ablated head: its slice of ``layer.i.context`` (``probs @ v``, heads side by side, before the output
  projection) is multiplied by 0, which is what transformers' former ``head_mask`` did (it scaled that
  head's attention probabilities by 0);
* a skipped branch: ``layer.i.attention_output`` or ``layer.i.mlp_output`` becomes zeros, so the residual
  add gives back its input exactly (layer scale of zeros is zeros); a skipped layer drops both branches,
  so its output is its input, bit for bit;
* ``positions="remove"``: the ``position_embeddings`` tap passes on zeros (nothing is added to the tokens);
* ``patch_order``: the ``patch_embeddings`` tap (and the raw ``patches``, when traced) passes on the patch
  tokens in that order, before the prefix tokens are put in front and the positions added: patch ``j`` of
  the new sequence is patch ``patch_order[j]`` of the picture, which is the same as cutting the picture
  into patches and laying them out in that order (the patch projection treats every patch on its own).

Threads. The hooks are registered for the duration of one ``intervene`` block, under the same lock as
:func:`~vit_explain.capture.trace` uses, and each one acts only when its own block is active in the
calling thread (a :class:`contextvars.ContextVar`), so many threads can run different interventions and
plain traces on one shared model at once. Pre-hooks run before any forward hook, so a ``trace`` inside
the block records the changed tensors. Blocks nest: the inner block's changes add to the outer ones.

:func:`head_importance` measures every head's effect on the answer at once; :mod:`vit_explain.experiments`
runs one spec for the Experiments page.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn

from . import analysis
from .capture import _HOOK_LOCK, Tap, tap_key
from .config import ViTConfig
from .model import backbone

POSITIONS = ("keep", "remove")

# The interventions active in this thread/context (innermost last); each hook checks for its own.
_ACTIVE: contextvars.ContextVar[tuple["_Plan", ...]] = contextvars.ContextVar("vit_explain_interventions",
                                                                               default=())


# ---------------------------------------------------------------------------------- the spec
def _index_list(value: Any, what: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{what} must be a list of whole numbers, got {value!r}") from None
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise ValueError(f"{what} must hold whole numbers, got {item!r}")
        out.append(int(item))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class Intervention:
    """One experiment on the model: what to switch off or change (all defaults: nothing).

    ``ablate_heads``: ``{layer: heads}``, heads whose output is zeroed before the output projection.
    ``skip_layers``: layers that return their input unchanged. ``skip_attention`` / ``skip_mlp``: layers
    whose attention (or MLP) branch is dropped, the other branch kept. ``positions``: ``"keep"`` or
    ``"remove"`` (no position embeddings added). ``patch_order``: a permutation of ``range(N)``; patch
    ``j`` of the new sequence is patch ``patch_order[j]`` of the picture.

    Fields are normalised on creation (sorted tuples, empty entries dropped), so two specs that mean the
    same thing are equal and hash alike. Layer, head and patch numbers are checked against a model by
    :meth:`validate` (``intervene`` calls it).
    """

    ablate_heads: Mapping[int, Iterable[int]] = field(default_factory=dict)
    skip_layers: Iterable[int] = ()
    skip_attention: Iterable[int] = ()
    skip_mlp: Iterable[int] = ()
    positions: str = "keep"
    patch_order: Sequence[int] | None = None

    def __post_init__(self) -> None:
        heads = self.ablate_heads if self.ablate_heads is not None else {}
        if not isinstance(heads, Mapping):
            raise ValueError(f"ablate_heads must map a layer to a list of heads, e.g. {{3: [0, 5]}}, got {heads!r}")
        normalised = {}
        for layer, chosen in heads.items():
            (layer,) = _index_list([layer], "ablate_heads' layers")
            chosen = tuple(sorted(set(_index_list(chosen, f"ablate_heads[{layer}]"))))
            if chosen:
                normalised[layer] = tuple(sorted(set(normalised.get(layer, ()) + chosen)))
        object.__setattr__(self, "ablate_heads", dict(sorted(normalised.items())))
        for name in ("skip_layers", "skip_attention", "skip_mlp"):
            object.__setattr__(self, name, tuple(sorted(set(_index_list(getattr(self, name), name)))))
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.patch_order is not None:
            object.__setattr__(self, "patch_order", _index_list(self.patch_order, "patch_order"))

    # ---- identity, equality
    @property
    def key(self) -> tuple:
        """A hashable tuple that says everything about the spec (equal specs have equal keys)."""
        return (tuple(self.ablate_heads.items()), self.skip_layers, self.skip_attention, self.skip_mlp,
                self.positions, self.patch_order)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Intervention) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def from_key(cls, key: tuple) -> "Intervention":
        """The spec back from its :attr:`key` (what a page keeps in a cache key)."""
        heads, skip_layers, skip_attention, skip_mlp, positions, order = key
        return cls(ablate_heads=dict(heads), skip_layers=skip_layers, skip_attention=skip_attention,
                   skip_mlp=skip_mlp, positions=positions, patch_order=order)

    @property
    def is_identity(self) -> bool:
        """True when the spec changes nothing (no hook is installed for it)."""
        order = self.patch_order
        return (not self.ablate_heads and not self.skip_layers and not self.skip_attention and not self.skip_mlp
                and self.positions == "keep" and (order is None or order == tuple(range(len(order)))))

    # ---- checks against a model
    def validate(self, config: ViTConfig) -> None:
        """Raise ValueError, saying what is valid, if a layer, head or patch does not exist in ``config``'s model."""
        L, H, N = config.num_hidden_layers, config.num_attention_heads, config.num_patches
        for layer, heads in self.ablate_heads.items():
            if not 0 <= layer < L:
                raise ValueError(f"ablate_heads: layer {layer} does not exist; this model has layers 0 to {L - 1}")
            wrong = [h for h in heads if not 0 <= h < H]
            if wrong:
                raise ValueError(f"ablate_heads[{layer}]: head {wrong[0]} does not exist; this model has heads "
                                 f"0 to {H - 1}")
        for name in ("skip_layers", "skip_attention", "skip_mlp"):
            wrong = [i for i in getattr(self, name) if not 0 <= i < L]
            if wrong:
                raise ValueError(f"{name}: layer {wrong[0]} does not exist; this model has layers 0 to {L - 1}")
        if self.patch_order is not None:
            order = self.patch_order
            if len(order) != N or sorted(order) != list(range(N)):
                missing = sorted(set(range(N)) - set(order))
                raise ValueError(
                    f"patch_order must be a permutation of the {N} patch indices 0 to {N - 1} (each exactly once); "
                    f"got {len(order)} numbers" + (f", missing {missing[:5]}" if missing else "")
                    + (", with repeats" if len(set(order)) != len(order) else "")
                    + (f", out of range {[i for i in order if not 0 <= i < N][:5]}"
                       if any(not 0 <= i < N for i in order) else ""))

    def describe(self) -> str:
        """The spec in plain words ("head 0 of layer 3 switched off; layer 5 skipped"), or "no change"."""
        parts = []
        for layer, heads in self.ablate_heads.items():
            names = ", ".join(str(h) for h in heads)
            parts.append(f"head{'s' if len(heads) > 1 else ''} {names} of layer {layer} switched off")
        for name, words in (("skip_layers", "skipped"), ("skip_attention", "without its attention"),
                            ("skip_mlp", "without its MLP")):
            layers = getattr(self, name)
            if layers:
                parts.append(f"layer{'s' if len(layers) > 1 else ''} {', '.join(str(i) for i in layers)} {words}")
        if self.positions == "remove":
            parts.append("no position embeddings")
        if self.patch_order is not None and self.patch_order != tuple(range(len(self.patch_order))):
            parts.append("patches shuffled")
        return "; ".join(parts) if parts else "no change"


# ---------------------------------------------------------------------------------- the hooks
@dataclass
class _Plan:
    """What one active ``intervene`` block does, by tap key. Per call, never stored on a module."""

    head_masks: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1 or B, H] of 0/1
    zero: set[str] = field(default_factory=set)  # tap keys whose tensor becomes zeros
    order: torch.Tensor | None = None  # patch permutation, applied to the patch taps
    row_scales: dict[str, torch.Tensor] = field(default_factory=dict)  # tap key -> [B]: one factor per batch row

    def changes(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """What the tap ``key`` passes on instead of ``x`` (called by a pre-hook, before the tap runs)."""
        if key in self.zero:  # a dropped branch, or the position embeddings removed
            return torch.zeros_like(x)
        if key in self.row_scales:  # one factor per picture of the batch (the layer sweep's variants)
            return x * self.row_scales[key].to(x.device, x.dtype)[:, None, None]
        if key in ("patch_embeddings", "patches"):  # [B, N, ...]: token j becomes patch order[j]
            return x[:, self.order.to(x.device)]
        layer = int(key.split(".")[1])  # layer.i.context [B, T, (h d)]: each head's slice times 1 or 0
        mask = self.head_masks[layer].to(device=x.device, dtype=x.dtype)  # [1 or B, H]
        heads = rearrange(x, "b t (h d) -> b t h d", h=mask.shape[-1])
        return rearrange(heads * mask[:, None, :, None], "b t h d -> b t (h d)")

    def keys(self) -> set[str]:
        keys = set(self.zero) | set(self.row_scales) | {f"layer.{i}.context" for i in self.head_masks}
        if self.order is not None:
            keys |= {"patch_embeddings", "patches"}
        return keys


def _plan(spec: Intervention, config: ViTConfig) -> _Plan:
    plan = _Plan()
    H = config.num_attention_heads
    for layer, heads in spec.ablate_heads.items():
        mask = torch.ones(1, H)
        mask[0, list(heads)] = 0.0
        plan.head_masks[layer] = mask
    for layer in set(spec.skip_layers) | set(spec.skip_attention):
        plan.zero.add(f"layer.{layer}.attention_output")
    for layer in set(spec.skip_layers) | set(spec.skip_mlp):
        plan.zero.add(f"layer.{layer}.mlp_output")
    if spec.positions == "remove":
        plan.zero.add("position_embeddings")
    if spec.patch_order is not None and spec.patch_order != tuple(range(len(spec.patch_order))):
        plan.order = torch.tensor(spec.patch_order, dtype=torch.long)
    return plan


@contextlib.contextmanager
def _active(model: nn.Module, plan: _Plan) -> Iterator[None]:
    """Hook the taps ``plan`` changes (pre-hooks, for this block only) and make ``plan`` active in this context."""
    wanted = plan.keys()

    def make_hook(key: str):
        def hook(_module, args):
            if any(active is plan for active in _ACTIVE.get()):  # other threads' blocks hook the same taps
                return (plan.changes(key, args[0]),) + tuple(args[1:])
            return None

        return hook

    handles = []
    if wanted:
        with _HOOK_LOCK:
            for path, sub in backbone(model).named_modules():
                if isinstance(sub, Tap):
                    key = tap_key(path, sub)
                    if key in wanted:
                        handles.append(sub.register_forward_pre_hook(make_hook(key)))
    token = _ACTIVE.set(_ACTIVE.get() + (plan,))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        if handles:
            with _HOOK_LOCK:
                for handle in handles:
                    handle.remove()


@contextlib.contextmanager
def intervene(model: nn.Module, spec: Intervention | None = None, **changes) -> Iterator[nn.Module]:
    """Run ``model`` with ``spec`` applied inside the ``with`` block (yields the model itself).

    ``spec`` may be given as keywords instead (``intervene(model, skip_layers=[2])``). The spec is
    checked against the model first (:meth:`Intervention.validate`). ``Intervention()`` installs nothing,
    so the model's numbers are bit for bit its own. See the module's docstring for what each change does.
    """
    if spec is None:
        spec = Intervention(**changes)
    elif changes:
        raise ValueError("give either an Intervention or keywords, not both")
    config = backbone(model).config
    spec.validate(config)
    with _active(model, _plan(spec, config)):
        yield model


# ---------------------------------------------------------------------------------- reading the answer
def has_classifier(model: nn.Module) -> bool:
    """True when the model ends in a linear classifier (class probabilities exist)."""
    return isinstance(getattr(model, "classifier", None), nn.Linear)


def _answer_from(model: nn.Module, index: int, hidden_state: torch.Tensor) -> torch.Tensor:
    """The model's answer computed from the input of encoder layer ``index`` on: logits [B, K] for a
    classifier, else its feature vector [B, D] (pooler output, or the normed CLS token). Mirrors the
    model's own forward pass from that point (layers ``index..L-1``, the final norm, the head)."""
    base = backbone(model)
    x = hidden_state
    for layer in base.encoder.layer[index:]:
        x, _ = layer(x)
    x = base.tap_layernorm(base.layernorm(x))
    if base is model:  # a ViTModel: pooler output, else the normed CLS
        return base.pooler(x) if base.pooler is not None else x[:, 0]
    logits = model.classifier(x[:, 0])
    if model.config.use_distillation_head:
        logits = (logits + model.distillation_classifier(x[:, 1])) / 2
    return logits


def _batch_of_one(model: nn.Module, pixel_values: Any) -> torch.Tensor:
    x = torch.as_tensor(pixel_values)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one picture [1, C, H, W] (or [C, H, W]), got {list(x.shape)}")
    param = next(model.parameters())
    return x.to(param.device, param.dtype)


def head_importance(model: nn.Module, pixel_values: Any, target: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """How much the answer suffers when each head alone is switched off: float64 ``[layers, heads]``.

    For a classifier: the drop of the ``target`` class's softmax probability (default: the class the
    model predicts), ``p(plain) - p(head switched off)``; positive means the head helped that class,
    negative that the class did better without it. For a model without a classifier: the drop of the
    cosine similarity between its final feature vector (pooler output, or the normed CLS token) and the
    plain run's, ``1 - cos``; 0 means the head changed nothing.

    Fast: one plain forward pass keeps every hidden state; for layer ``i`` the layers before it are not
    run again (its cached input is the start), and the ``H`` heads of the layer run as one batch of ``H``
    copies, copy ``h`` with head ``h`` switched off. ``progress(done, total)`` is called after each layer.
    """
    x = _batch_of_one(model, pixel_values)
    base = backbone(model)
    config = base.config
    L, H = config.num_hidden_layers, config.num_attention_heads
    classify = has_classifier(model)
    with torch.no_grad():
        plain = model(x, output_hidden_states=True)
        if classify:
            probs = torch.softmax(plain.logits.double(), -1)[0]
            target = int(probs.argmax()) if target is None else int(target)
            if not 0 <= target < probs.numel():
                raise ValueError(f"target must be a class index 0 to {probs.numel() - 1}, got {target}")
            reference = float(probs[target])
        else:
            reference = plain.pooler_output if plain.pooler_output is not None else plain.last_hidden_state[:, 0]
    plan = _Plan(head_masks={})
    masks = 1.0 - torch.eye(H)  # row h: every head but h
    out = np.zeros((L, H))
    for layer in range(L):
        plan.head_masks = {layer: masks}
        with torch.no_grad(), _active(model, plan):
            answer = _answer_from(model, layer, plain.hidden_states[layer].expand(H, -1, -1))
        if classify:
            out[layer] = reference - analysis.softmax(answer, axis=-1)[:, target]
        else:
            out[layer] = 1.0 - analysis.cosine_similarity(answer, reference[0])
        if progress is not None:
            progress(layer + 1, L)
    return out
