"""The guided lesson: its steps, and the right answer to each of its questions, computed from the live run.

No Streamlit here (the page is ``pages/lesson.py``). A question's answer is never written into the
lesson's text: each one is computed here from the model and the picture in use (the config, the
attention maps, the logits, the logit lens, interventions on the model), so the lesson stays right for
any upload and any checkpoint. Every function takes plain arrays, configs or a model and returns
numbers, and the unit tests (``tests/test_lesson.py``) check each against a direct computation.

A step is either shown (a live view and a few sentences) or asked (the student predicts, then the view
reveals the answer). :func:`lesson_steps` leaves out the class questions for a model without a
classifier and the intervention questions when :mod:`vit_explain.interventions` cannot be used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from . import analysis


# ---------------------------------------------------------------------------------- the steps
@dataclass(frozen=True)
class Step:
    """One step of the lesson: ``id`` (a short name, stable across models), its title, the stage page that
    says more, whether it asks a question first, and what it needs from the model."""

    id: str
    title: str
    page: str
    asks: bool = False
    needs_classifier: bool = False
    needs_interventions: bool = False


STEPS: tuple[Step, ...] = (
    Step("picture", "The picture the model sees", "pages/overview.py"),
    Step("tokens", "Cut into patches: how many tokens?", "pages/patching.py", asks=True),
    Step("width", "From pixels to a vector", "pages/patching.py", asks=True),
    Step("position", "The CLS token and the positions", "pages/embeddings.py"),
    Step("attention", "Self-attention: tokens look at tokens", "pages/attention.py"),
    Step("look", "Where does the CLS token look at the end?", "pages/attention.py", asks=True),
    Step("depth", "Attention, layer after layer", "pages/layers.py"),
    Step("mlp", "The MLP: every token on its own", "pages/mlp.py"),
    Step("winner", "Which class will win?", "pages/prediction.py", asks=True, needs_classifier=True),
    Step("lens", "When does the answer appear?", "pages/prediction.py", asks=True, needs_classifier=True),
    Step("head", "Which head matters most?", "pages/experiments.py", asks=True, needs_interventions=True),
    Step("shuffle", "Shuffle the patches", "pages/experiments.py", asks=True, needs_interventions=True),
    Step("score", "Your score", "pages/overview.py"),
)


def lesson_steps(*, classifier: bool, interventions: bool = True) -> list[Step]:
    """The steps for a model: without a classifier the class questions are left out, without the
    interventions API the two experiment questions."""
    return [s for s in STEPS if (classifier or not s.needs_classifier) and (interventions or not s.needs_interventions)]


def skipped_steps(*, classifier: bool, interventions: bool = True) -> list[Step]:
    """The steps :func:`lesson_steps` leaves out for this model (to say why on the page)."""
    kept = {s.id for s in lesson_steps(classifier=classifier, interventions=interventions)}
    return [s for s in STEPS if s.id not in kept]


def step_index(steps: Sequence[Step], step_id: str) -> int:
    """Where the step ``step_id`` is in ``steps`` (ValueError if it is not there)."""
    for i, step in enumerate(steps):
        if step.id == step_id:
            return i
    raise ValueError(f"no step {step_id!r} in this lesson")


# ---------------------------------------------------------------------------------- the questions
def token_count(config) -> int:
    """How many tokens the encoder sees: the ``g x g`` patches plus the prefix tokens (CLS, a distillation
    token, registers), from the config alone."""
    return int(config.grid_size ** 2 + config.num_prefix_tokens)


def width_options(config) -> list[int]:
    """Choices for "how many numbers per token after the patch projection?": the right one (the hidden
    size D) among other numbers of the same model that a student may confuse with it (pixels per patch,
    pixel values per patch, the MLP width, the token count), each once, smallest first."""
    C, P = config.num_channels, config.patch_size
    candidates = {P * P, C * P * P, config.hidden_size, config.intermediate_size, token_count(config)}
    return sorted(int(c) for c in candidates)


def width_answer(config) -> int:
    """The numbers per token after the patch projection: the hidden size D."""
    return int(config.hidden_size)


def cls_patch_map(attentions_last: np.ndarray, grid: int, num_prefix: int) -> np.ndarray:
    """Where the CLS token looks in the last layer: its attention over the patches, mean of the heads,
    renormalised to sum to 1 over the patches, ``[g, g]`` float64."""
    return analysis.cls_attention_map(attentions_last, grid, num_prefix, renormalise=True)


def patch_rank(values: np.ndarray, patch: int) -> int:
    """The rank of ``patch`` in a ``[g, g]`` (or flat) map: 1 for the largest value; ties share the better rank."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not 0 <= int(patch) < flat.size:
        raise ValueError(f"patch {patch} is not one of the {flat.size} patches")
    return int(np.sum(flat > flat[int(patch)])) + 1


def patch_distance(a: int, b: int, grid: int) -> float:
    """How far apart two patches are, in patch widths (straight line between their centres)."""
    ra, ca = divmod(int(a), grid)
    rb, cb = divmod(int(b), grid)
    return float(math.hypot(ra - rb, ca - cb))


def good_rank(num_patches: int) -> int:
    """A clicked patch counts as right when its rank is at most this: the top 5 % of the patches (at least 1)."""
    return max(1, int(round(0.05 * num_patches)))


def winner(logits: np.ndarray) -> int:
    """The class the model predicts (the largest logit; the lower index on a tie)."""
    return int(analysis.top_indices(logits, 1)[0])


def settled_depth(top1: Sequence[int]) -> int:
    """After how many layers the final answer appears and stays: the smallest ``s`` such that the top
    class read off the CLS token after ``s`` layers (``top1[s]``; ``top1[0]`` is the embeddings) is the
    final one at every depth from ``s`` on. 0: it is already there before any layer."""
    top1 = [int(t) for t in top1]
    if not top1:
        raise ValueError("settled_depth needs the top class of at least one stage")
    final = top1[-1]
    s = len(top1) - 1
    while s > 0 and top1[s - 1] == final:
        s -= 1
    return s


def most_harmful_head(drops: np.ndarray) -> tuple[int, int]:
    """(layer, head) whose knock-out lowers the answer most (``drops`` ``[L, H]`` from ``head_importance``)."""
    drops = np.asarray(drops, dtype=np.float64)
    layer, head = np.unravel_index(int(analysis.top_indices(drops, 1)[0]), drops.shape)
    return int(layer), int(head)


def head_rank(drops: np.ndarray, layer: int, head: int) -> int:
    """The rank of a head among all ``L x H`` by how much its knock-out hurts (1 = hurts most)."""
    drops = np.asarray(drops, dtype=np.float64)
    return int(np.sum(drops > drops[int(layer), int(head)])) + 1


def head_is_close(drops: np.ndarray, layer: int, head: int) -> bool:
    """A guessed head counts as right when knocking it out costs at least half as much as the worst one
    (and costs something): several heads often matter nearly equally."""
    drops = np.asarray(drops, dtype=np.float64)
    worst = float(drops.max())
    mine = float(drops[int(layer), int(head)])
    return worst > 0 and mine > 0 and mine >= 0.5 * worst


#: Below these, two answers count as the same: a change of probability under 0.1 points (classifier) or a
#: cosine similarity above 0.9999 (feature vector) is float rounding, not the model seeing something new.
SAME_PROBABILITY = 1e-3
SAME_DIRECTION = 1e-4


def answers_differ(before: np.ndarray, after: np.ndarray, *, classifier: bool) -> bool:
    """Did the model's answer change? ``before``/``after``: logits (classifier) or feature vectors."""
    if classifier:
        return bool(np.abs(analysis.softmax(after) - analysis.softmax(before)).max() > SAME_PROBABILITY)
    similarity = float(analysis.cosine_similarity(np.asarray(after, np.float64), np.asarray(before, np.float64)))
    return bool(1.0 - similarity > SAME_DIRECTION)


def model_answer(model, pixel_values: Any, spec=None) -> np.ndarray:
    """The model's answer for one picture, float64: its logits for a classifier, else its feature vector
    (the pooler output, or the normed CLS token). ``spec``: an :class:`~vit_explain.interventions.Intervention`
    applied for this one pass (None: the model as it is)."""
    import torch

    from .interventions import Intervention, intervene

    x = torch.as_tensor(pixel_values)
    x = x[None] if x.ndim == 3 else x
    param = next(model.parameters())
    with intervene(model, spec if spec is not None else Intervention()), torch.no_grad():
        out = model(x.to(param.device, param.dtype))
    if has_classifier(model):
        answer = out.logits
    else:
        answer = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]
    return answer[0].detach().cpu().double().numpy()


def has_classifier(model) -> bool:
    """True when the model ends in a linear classifier (one score per class)."""
    from torch import nn

    return isinstance(getattr(model, "classifier", None), nn.Linear)


def shuffled_order(num_patches: int, seed: int = 0) -> tuple[int, ...]:
    """A random order of the patch indices (the same for the same seed), never the original order."""
    order = np.random.default_rng(seed).permutation(num_patches)
    if num_patches > 1 and np.array_equal(order, np.arange(num_patches)):
        order = np.roll(order, 1)
    return tuple(int(i) for i in order)


def shuffle_picture(image: np.ndarray, order: Sequence[int], patch_size: int) -> np.ndarray:
    """The picture ``[S, S, C]`` with its patches laid out in ``order`` (place ``j`` shows patch ``order[j]``,
    both row by row): what the model reads with ``Intervention(patch_order=order)``."""
    image = np.asarray(image)
    P = int(patch_size)
    g = image.shape[0] // P
    tiles = image.reshape(g, P, g, P, -1).transpose(0, 2, 1, 3, 4).reshape(g * g, P, P, -1)[np.asarray(order)]
    return np.ascontiguousarray(tiles.reshape(g, g, P, P, -1).transpose(0, 2, 1, 3, 4).reshape(image.shape))


def shuffle_experiment(model, pixel_values: Any, *, seed: int = 0) -> dict[str, Any]:
    """The model's answer for the picture and for its patches shuffled, without and with position embeddings.

    Returns float64 arrays ``plain``/``shuffled`` (no position embeddings) and ``plain_pos``/``shuffled_pos``
    (the model as it is): logits for a classifier, else feature vectors; ``order`` (the permutation used);
    ``classifier``; and the answers to the question: ``changes`` (does shuffling change the answer without
    positions?) and ``changes_with_positions``.
    """
    from .interventions import Intervention

    order = shuffled_order(model.config.num_patches, seed=seed)
    plain = model_answer(model, pixel_values, Intervention(positions="remove"))
    shuffled = model_answer(model, pixel_values, Intervention(positions="remove", patch_order=order))
    plain_pos = model_answer(model, pixel_values)
    shuffled_pos = model_answer(model, pixel_values, Intervention(patch_order=order))
    classifier = has_classifier(model)
    return {
        "plain": plain, "shuffled": shuffled, "plain_pos": plain_pos, "shuffled_pos": shuffled_pos,
        "order": tuple(order), "classifier": classifier,
        "changes": answers_differ(plain, shuffled, classifier=classifier),
        "changes_with_positions": answers_differ(plain_pos, shuffled_pos, classifier=classifier),
    }


# ---------------------------------------------------------------------------------- the score
@dataclass(frozen=True)
class Answer:
    """What a student answered to one question, for one run (``key``: the run's key, any hashable), with the
    right answer of that run (``correct``) so the score can say both after the picture has changed."""

    key: Any
    guess: Any  # None: the student asked to see the answer without guessing
    right: bool | None  # None: not graded yet (the answer takes a long computation, done when the step is drawn)
    correct: Any = None


def score(answers: Mapping[str, Answer], steps: Sequence[Step]) -> tuple[int, int, int]:
    """(right, answered, questions) over the question steps of this lesson (each counted once: its latest answer)."""
    asked = [s.id for s in steps if s.asks]
    given = [answers[i] for i in asked if i in answers and answers[i].guess is not None]
    return sum(1 for a in given if a.right), len(given), len(asked)
