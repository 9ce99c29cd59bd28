"""What a trained model is measured on: fresh shapes (accuracy and where its rollout lands), or a held-out split.

:func:`evaluate` measures what the bundled shapes model promises (README, "The bundled models"):
its accuracy on fresh pictures, and how much of the CLS token's attention rollout (Abnar &
Zuidema, 2020; computed by :mod:`vit_explain.analysis`, as the app draws it) lands on the patches
that overlap the object. :func:`evaluate_split` gives top-1, per-class accuracy and the confusion
matrix of a held-out split, which :func:`write_evaluation` writes next to the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..analysis import attention_rollout, cls_rollout_map
from ..model import ViTForImageClassification
from ..synthetic import sample
from .data import images_to_pixel_values

__all__ = ["EVAL_SEED", "evaluate", "evaluate_split", "write_evaluation"]

#: Seed of the evaluation images; training batches use seed sequences ``[seed, step]``,
#: which never coincide with it.
EVAL_SEED = 12345


def patches_touching_boxes(boxes: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """bool ``[n, grid * grid]``: which patches (row-major) overlap each box ``x0, y0, x1, y1``."""
    grid = image_size // patch_size
    lo = np.arange(grid) * patch_size
    hi = lo + patch_size
    cols = (lo[None] < boxes[:, 2:3]) & (hi[None] > boxes[:, 0:1])  # [n, grid]
    rows = (lo[None] < boxes[:, 3:4]) & (hi[None] > boxes[:, 1:2])
    return (rows[:, :, None] & cols[:, None, :]).reshape(len(boxes), -1)


@torch.no_grad()
def evaluate(model: ViTForImageClassification, n: int = 1000, seed: int = EVAL_SEED, batch_size: int = 250) -> dict:
    """Accuracy and mean CLS-rollout mass on the object's patches, on ``n`` fresh synthetic images."""
    config = model.config
    was_training = model.training
    model.eval()
    images, labels, boxes = sample(n, seed=seed, image_size=config.image_size)
    correct, on_object = 0, 0.0
    for i in range(0, n, batch_size):
        out = model(images_to_pixel_values(images[i : i + batch_size]), output_attentions=True)
        correct += (out.logits.argmax(-1).numpy() == labels[i : i + batch_size]).sum()
        rollout = attention_rollout([a.float().numpy() for a in out.attentions])  # [b, T, T]
        mass = cls_rollout_map(rollout, config.grid_size).reshape(len(rollout), -1)  # [b, N], rows sum to 1
        touching = patches_touching_boxes(boxes[i : i + batch_size], config.image_size, config.patch_size)
        on_object += float((mass * touching).sum())
    model.train(was_training)
    return dict(accuracy=float(correct) / n, rollout_on_object=on_object / n)


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, split, num_classes: int, *, batch_size: int = 500, device: str = "cpu") -> dict:
    """Top-1 accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i in range(0, len(split), batch_size):
        x = images_to_pixel_values(split.images[i : i + batch_size]).to(device)
        predicted = model(x).logits.argmax(-1).cpu().numpy()
        np.add.at(confusion, (split.labels[i : i + batch_size], predicted), 1)
    model.train(was_training)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return dict(
        top1=float(confusion.diagonal().sum() / max(1, confusion.sum())),
        per_class=per_class.tolist(),
        confusion=confusion.tolist(),
        n=int(confusion.sum()),
    )


def write_evaluation(out: Path, metrics: dict, classes: list[str]) -> None:
    """``evaluation.json`` (classes and :func:`evaluate_split`'s numbers) and ``confusion_matrix.csv`` in ``out``."""
    (out / "evaluation.json").write_text(json.dumps({"classes": classes, **metrics}, indent=2) + "\n")
    lines = ["true \\ predicted," + ",".join(classes)]
    lines += [f"{name}," + ",".join(str(v) for v in row) for name, row in zip(classes, metrics["confusion"])]
    (out / "confusion_matrix.csv").write_text("\n".join(lines) + "\n")
