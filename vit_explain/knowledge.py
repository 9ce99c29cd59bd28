"""What a model knows, in one plain sentence, and when to warn that a picture is outside it.

A classifier can only ever answer with one of its own class names: shown a picture of something
else, it still picks the closest of them, often with high confidence. Students forget this, so the
app says it next to every prediction. The sentences are built from the model's labels, input size
and where the weights came from, never from a fixed list of checkpoints.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["knowledge_sentence", "outside_training_warning", "list_names"]

#: What the project's own bundled models were trained on (see assets/models/<name>/README.md).
BUNDLED_DATA = {
    "vit-cifar10": "photos of {size} x {size} pixels from CIFAR-10",
    "shapes": "synthetic pictures of {size} x {size} pixels, one drawn shape on a cluttered background",
}


def list_names(names: list[str], limit: int = 10) -> str:
    """'a, b and c' (at most ``limit`` names, then 'and N more')."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit:,} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def knowledge_sentence(
    id2label: Mapping[int, str] | None,
    *,
    image_size: int,
    bundled: str | None = None,
    trained: bool = True,
    has_classifier: bool = True,
) -> str:
    """One or two sentences on what the model knows and what it cannot do."""
    if not trained:
        return ("These weights are random: the model has learned nothing, so its answers are noise. It still shows "
                "every mechanism of a ViT, with untrained numbers.")
    if not has_classifier or not id2label:
        return ("This checkpoint has no classifier: it turns a picture into token vectors (features) and never names "
                "what it sees.")
    labels = [id2label[i] for i in sorted(id2label)]
    kinds = f"{len(labels):,} kinds of things" if len(labels) > 1 else "one kind of thing"
    if bundled in BUNDLED_DATA:
        seen = BUNDLED_DATA[bundled].format(size=image_size)
        text = f"This model was trained here on {seen}, and knows {kinds}: {list_names(labels)}."
    else:
        text = f"This model knows {kinds}: {list_names(labels)}."
    if len(labels) > 1:
        text += (f" A picture of anything else is still forced into one of these {len(labels):,}: the model cannot "
                 "say \"none of them\".")
    return text


def outside_training_warning(bundled: str | None, image_name: str) -> str | None:
    """A plain warning when a photo meets the shapes model (which has only ever seen drawn shapes)."""
    if bundled == "shapes" and not image_name.startswith("synthetic_"):
        return ("The shapes model has only ever seen drawn shapes on clutter, never a photo. Whatever this picture "
                "shows, the answer below is just the shape it resembles most, not what is in the picture. Pick the "
                "CIFAR-10 model in the sidebar for photos, or a `synthetic_` sample for this model.")
    return None
