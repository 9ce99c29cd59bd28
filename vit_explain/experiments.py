"""One experiment for the Experiments page: run a model with an :class:`~vit_explain.interventions.Intervention`
and read what changed (the answer, the CLS attention and rollout, every layer skipped in turn), and say it in
one sentence."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn

from . import analysis
from .capture import trace
from .interventions import Intervention, _active, _answer_from, _batch_of_one, _Plan, has_classifier, intervene
from .model import backbone

def rearrange_patches(image: np.ndarray, order: Sequence[int], patch_size: int) -> np.ndarray:
    """A picture ``[S, S, C]`` with its patches laid out in ``order`` (patch ``j`` of the result is patch
    ``order[j]`` of ``image``, both row-major): what the model sees with ``patch_order=order``."""
    image = np.asarray(image)
    g = image.shape[0] // patch_size
    patches = rearrange(image, "(gh p1) (gw p2) c -> (gh gw) p1 p2 c", p1=patch_size, p2=patch_size)
    return np.ascontiguousarray(rearrange(patches[np.asarray(order)], "(gh gw) p1 p2 c -> (gh p1) (gw p2) c", gh=g))


def shuffled_order(num_patches: int, seed: int = 0) -> tuple[int, ...]:
    """A random permutation of the patch indices (the same for the same seed), never the identity."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_patches)
    if num_patches > 1 and np.array_equal(order, np.arange(num_patches)):
        order = np.roll(order, 1)
    return tuple(int(i) for i in order)


def run_intervention(model: nn.Module, pixel_values: Any, spec: Intervention) -> dict[str, np.ndarray]:
    """One traced forward pass with ``spec`` applied, reduced to what the Experiments page shows.

    Keys (float32 numpy, no batch axis): ``answer`` (logits [K] for a classifier, else the feature vector
    [D]), ``cls_attention`` [g, g] (the last layer's CLS attention over the patches, heads averaged,
    renormalised over the patches), ``rollout`` [g, g] (CLS row of the attention rollout through all
    layers, :func:`vit_explain.analysis.attention_rollout`), ``head_cls_attention`` [L, H, g, g] (every
    head's CLS attention over the patches), and for a classifier ``lens`` [L + 1, K] (the logit lens:
    probabilities read off the CLS token after every layer, :func:`vit_explain.analysis.logit_lens`).
    Maps are in token order: with a ``patch_order`` they are laid out like the shuffled picture.
    """
    x = _batch_of_one(model, pixel_values)
    base = backbone(model)
    g = base.config.grid_size
    with intervene(model, spec):
        t = trace(model, x, taps=())
    attentions = [a[0] for a in t.attentions]  # L x [H, T, T]
    out = {
        "answer": t.logits[0] if has_classifier(model) else (
            t.pooler_output[0] if t.pooler_output is not None else t.last_hidden_state[0, 0]),
        "cls_attention": analysis.cls_attention_map(attentions[-1], g, renormalise=True),
        "rollout": analysis.cls_rollout_map(analysis.attention_rollout(attentions), g),
        "head_cls_attention": analysis.cls_attention_map(torch.stack(attentions), g, head_fusion=None),
    }
    if has_classifier(model):
        stream = torch.stack([h[0, :1] for h in t.hidden_states])  # [L + 1, 1, D]: the CLS token only
        out["lens"] = analysis.logit_lens(stream, base.layernorm, model.classifier, top_k=1)["probs"]
    return {k: np.ascontiguousarray(np.asarray(v.detach().cpu() if torch.is_tensor(v) else v, dtype=np.float32))
            for k, v in out.items()}


def layer_sweep(model: nn.Module, pixel_values: Any, target: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """The answer when each layer, or only its attention, or only its MLP, is skipped: ``3 * L`` runs.

    Returns ``"score"``, float64 ``[3, L]`` (rows: whole layer skipped, attention only, MLP only): the
    ``target`` class's probability (default: the predicted class) for a classifier, else the cosine
    similarity of the feature vector with the plain run's; ``"plain"``, the same number without any change
    (0-d); and ``"target"`` (0-d, -1 without a classifier). Layers before the skipped one are not run
    again (their cached output is the start) and the three variants of a layer run as one batch of 3.
    """
    x = _batch_of_one(model, pixel_values)
    L = backbone(model).config.num_hidden_layers
    classify = has_classifier(model)
    with torch.no_grad():
        plain = model(x, output_hidden_states=True)
        if classify:
            probs = analysis.softmax(plain.logits[0])
            target = int(np.argmax(probs)) if target is None else int(target)
            reference = float(probs[target])
        else:
            target, reference = -1, 1.0
            feature = plain.pooler_output if plain.pooler_output is not None else plain.last_hidden_state[:, 0]
    # copy 0 loses both branches (the whole layer), copy 1 only the attention, copy 2 only the MLP
    keep_attention, keep_mlp = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    score = np.zeros((3, L))
    for layer in range(L):
        plan = _Plan(row_scales={f"layer.{layer}.attention_output": keep_attention,
                                 f"layer.{layer}.mlp_output": keep_mlp})
        with torch.no_grad(), _active(model, plan):
            answer = _answer_from(model, layer, plain.hidden_states[layer].expand(3, -1, -1))
        if classify:
            score[:, layer] = analysis.softmax(answer, axis=-1)[:, target]
        else:
            score[:, layer] = analysis.cosine_similarity(answer, feature[0])
        if progress is not None:
            progress(layer + 1, L)
    return {"score": score, "plain": np.asarray(reference), "target": np.asarray(target)}


def intervened_answer(model: nn.Module, pixel_values: Any, spec: Intervention) -> np.ndarray:
    """The model's answer with ``spec`` applied, from a plain forward pass (no trace): float64 logits [K]
    for a classifier, else the feature vector [D] (pooler output, or the normed CLS token)."""
    x = _batch_of_one(model, pixel_values)
    with intervene(model, spec), torch.no_grad():
        out = model(x)
    if has_classifier(model):
        answer = out.logits
    else:
        answer = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
    return answer[0].detach().cpu().double().numpy()


def unshuffle_map(values: np.ndarray, order: Sequence[int] | None) -> np.ndarray:
    """A ``[..., g, g]`` map in the shuffled token order put back where each patch came from in the picture
    (``order`` as in ``patch_order``: token ``j`` showed patch ``order[j]``). ``None``: unchanged."""
    values = np.asarray(values)
    if order is None:
        return values
    g = values.shape[-1]
    flat = values.reshape(values.shape[:-2] + (g * g,))
    back = np.empty_like(flat)
    back[..., np.asarray(order)] = flat
    return back.reshape(values.shape)


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f} points".replace("-", "\u2212")


def describe_effect(before: np.ndarray, after: np.ndarray, what: str, *, labels: Mapping | None = None,
                    classifier: bool = True) -> str:
    """One sentence that states the measured effect of an experiment in plain words (markdown).

    ``before`` / ``after``: the answers without and with the change (logits [K] for a classifier, else
    feature vectors [D]); ``what``: the change as the subject of the sentence ("Switching off head 2 of
    layer 5"); ``labels``: class names by index.
    """
    if not classifier:
        similarity = float(analysis.cosine_similarity(after, before))
        if similarity > 0.999995:
            return (f"{what} leaves the feature vector where it was (cosine similarity to the original "
                    f"{similarity:.5f}).")
        return (f"{what} moves the feature vector: its cosine similarity to the original is {similarity:.4f} "
                "(1 would mean unchanged).")

    def name(i: int) -> str:
        labels_ = labels or {}
        return str(labels_.get(int(i), labels_.get(str(int(i)), f"class {int(i)}")))

    p0, p1 = analysis.softmax(before), analysis.softmax(after)
    top0, top1 = int(np.argmax(p0)), int(np.argmax(p1))
    delta = float(p1[top0] - p0[top0])
    largest = float(np.abs(p1 - p0).max())
    if largest < 5e-7:  # under float32's rounding of the probabilities: the same answer
        size = ("not by a single digit" if largest == 0 else
                f"the largest change is {100 * largest:.5f} points, rounding in the computer's last digits")
        return (f"{what} leaves every probability where it was ({size}): p(**{name(top0)}**) stays "
                f"{p0[top0]:.4%} and the prediction stays **{name(top0)}**.")
    if abs(delta) < 0.0005:
        change = f"leaves p(**{name(top0)}**) at {p1[top0]:.1%} (a change under 0.05 points)"
    else:
        verb = "lowers" if delta < 0 else "raises"
        change = f"{verb} p(**{name(top0)}**) from {p0[top0]:.1%} to {p1[top0]:.1%} ({_points(delta)})"
    if top1 == top0:
        return f"{what} {change}; the prediction stays **{name(top0)}**."
    return f"{what} {change}: the prediction becomes **{name(top1)}** ({p1[top1]:.1%})."
