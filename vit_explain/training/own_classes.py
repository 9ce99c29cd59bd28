"""Teaching a ViT the student's own classes: their pictures as a data source, the starting model, the settings.

The Training page lets a student name two to ten classes and fill each with a handful of pictures
(uploads, one zip, the webcam). This module turns those pictures into what a
:class:`~vit_explain.training.run.TrainingRun` trains on (:class:`OwnClassesData`: a few held out
per class, random augmented batches from the rest, a confusion matrix at every snapshot) and
builds the model it starts from (:func:`starting_model`): the bundled CIFAR-10 ViT with a new
classifier (transfer learning), or the same architecture from random weights.

Why the first learns from ten pictures and the second cannot (:data:`WHY_START`): the CIFAR-10
model's encoder has already learned, from 50,000 photos, to turn a picture into features (colours,
edges, textures, object parts). For new classes only the last step changes: which features mean
which of your names, a few thousand numbers. A random ViT has to learn the features too, 1.8
million numbers, from a few dozen pictures: it can only memorise them.

Nothing here imports streamlit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..augment import crop_and_flip
from ..picture_archive import CAPS, PictureCaps
from .data import Pictures, images_to_pixel_values
from .models import build_model
from .run import TrainSettings

__all__ = ["OWN_IMAGE_SIZE", "START_CHOICES", "WHY_START", "OwnClassesData", "held_out_count", "check_classes",
           "starting_model", "own_settings", "confusion_matrix", "starting_config", "pictures_from_archive"]

#: The pictures' side: the bundled CIFAR-10 model's input (its architecture is used for both starts).
OWN_IMAGE_SIZE = 32
BUNDLED_CIFAR10 = Path(__file__).resolve().parents[2] / "assets" / "models" / "vit-cifar10"
#: The share of each class's pictures held out (at least one).
HELD_OUT_FRACTION = 0.2
START_CHOICES = {
    "cifar10": "The CIFAR-10 model with a new classifier (transfer learning)",
    "random": "Random weights, same architecture (learning from nothing)",
}
WHY_START = (
    "**Why the CIFAR-10 start learns from ten pictures and the random one cannot.** The CIFAR-10 model has already "
    "seen 50,000 photos: its encoder turns any picture into a summary of colours, edges, textures and object parts. "
    "Keeping that encoder and giving it a new classifier (one output per class of yours) only asks it to learn which "
    "parts of that summary go with which of your names: a few thousand numbers, which a few pictures per class can "
    "pin down. Random weights know nothing: all 1.8 million numbers, the patch filters and the attention included, "
    "would have to be learned from your few dozen pictures. The model then memorises the training pictures (their "
    "accuracy climbs) but guesses on the held-out ones (their accuracy stays near chance)."
)


def held_out_count(n: int, fraction: float = HELD_OUT_FRACTION) -> int:
    """Pictures of a class of ``n`` held out: ``fraction`` of them, at least one, leaving at least one to train on."""
    if n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def check_classes(names: Sequence[str], counts: Sequence[int], caps: PictureCaps = CAPS) -> list[str]:
    """What stops these classes from training, one sentence each (empty: they can train)."""
    problems = []
    if len(names) < caps.min_classes:
        problems.append(f"Make at least {caps.min_classes} classes.")
    if len(names) > caps.max_classes:
        problems.append(f"Use at most {caps.max_classes} classes.")
    cleaned = [" ".join(n.split()) for n in names]
    if any(not n for n in cleaned):
        problems.append("Give every class a name.")
    if len({n.lower() for n in cleaned if n}) < len([n for n in cleaned if n]):
        problems.append("Two classes have the same name: give each its own.")
    short = [n or f"class {i + 1}" for i, (n, c) in enumerate(zip(cleaned, counts)) if c < caps.min_per_class]
    if short:
        problems.append(f"Each class needs at least {caps.min_per_class} pictures (one or more are held out to test "
                        f"the model); not enough yet in: {', '.join(short)}.")
    full = [n or f"class {i + 1}" for i, (n, c) in enumerate(zip(cleaned, counts)) if c > caps.max_per_class]
    if full:
        problems.append(f"At most {caps.max_per_class} pictures per class: too many in {', '.join(full)}.")
    if sum(counts) > caps.max_pictures:
        problems.append(f"At most {caps.max_pictures} pictures in all.")
    return problems


@torch.no_grad()
def confusion_matrix(model: torch.nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """int64 ``[k, k]``: row = the true class, column = the model's guess (the model is left as it was)."""
    was_training = model.training
    model.eval()
    try:
        guesses = torch.cat([model(pixel_values[i : i + 256]).logits.argmax(-1)
                             for i in range(0, len(labels), 256)]) if len(labels) else torch.zeros(0, dtype=torch.long)
    finally:
        model.train(was_training)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.numpy(), guesses.numpy()), 1)
    return matrix


class OwnClassesData:
    """The student's pictures as a data source for a :class:`~vit_explain.training.run.TrainingRun`.

    ``pictures`` maps each class name to its pictures (uint8 ``[H, W, 3]``, already
    ``image_size`` square). :meth:`load` holds out :func:`held_out_count` pictures per class
    (chosen at random with ``seed``); the rest are drawn at random for each step (seed sequence
    ``[run seed, step]``), cropped after a reflect pad and flipped. The probe is the first held-out
    picture; every snapshot gets a confusion matrix of the held-out pictures (:meth:`snapshot_extra`).
    """

    name = "own"
    sequential = False

    def __init__(self, pictures: Mapping[str, Sequence[np.ndarray]], image_size: int = OWN_IMAGE_SIZE, *,
                 seed: int = 0, caps: PictureCaps = CAPS):
        names = list(pictures)
        problems = check_classes(names, [len(v) for v in pictures.values()], caps)
        if problems:
            raise ValueError(" ".join(problems))
        self.classes = [" ".join(n.split()) for n in names]
        self.image_size = image_size
        self._pictures = [np.stack([np.asarray(p, dtype=np.uint8) for p in items]) for items in pictures.values()]
        for items in self._pictures:
            if items.shape[1:] != (image_size, image_size, 3):
                raise ValueError(f"the pictures must be {image_size} x {image_size} RGB, not {items.shape[1:]}")
        self.seed = seed
        self._train: tuple[np.ndarray, np.ndarray] | None = None
        self._held: tuple[torch.Tensor, torch.Tensor] | None = None

    def load(self) -> None:
        rng = np.random.default_rng([self.seed, 7])
        train_x, train_y, held_x, held_y = [], [], [], []
        for label, items in enumerate(self._pictures):
            order = rng.permutation(len(items))
            k = held_out_count(len(items))
            held_x.append(items[order[:k]])
            held_y += [label] * k
            train_x.append(items[order[k:]])
            train_y += [label] * (len(items) - k)
        self._train = (np.concatenate(train_x), np.asarray(train_y, dtype=np.int64))
        self.held_images = np.concatenate(held_x)
        self._held = (images_to_pixel_values(self.held_images), torch.tensor(held_y, dtype=torch.long))
        self.probe_image, self.probe_label = self.held_images[0], int(held_y[0])

    @property
    def train_count(self) -> int:
        return len(self._train[1]) if self._train is not None else 0

    def steps_per_epoch(self, batch_size: int) -> None:
        return None

    def pictures(self, step: int, config) -> Pictures:
        images, labels = self._train
        rng = np.random.default_rng([config.seed, step])
        index = rng.integers(0, len(labels), size=config.batch_size)
        pad = max(1, self.image_size // 8)
        return Pictures(crop_and_flip(images[index], rng, pad=pad), labels[index], rng)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._held

    def snapshot_extra(self, model: torch.nn.Module) -> dict:
        """What a snapshot keeps besides the usual: the held-out confusion matrix."""
        x, y = self._held
        return {"confusion": confusion_matrix(model, x, y, len(self.classes))}


@functools.lru_cache(maxsize=1)
def _cifar10_model():
    from ..weights import load_checkpoint

    return load_checkpoint(BUNDLED_CIFAR10)


def starting_config():
    """The architecture of both starts: the bundled CIFAR-10 model's (its config)."""
    return _cifar10_model().config


def starting_model(classes: Sequence[str], start: str, *, seed: int = 0):
    """The model a run on the student's classes starts from.

    ``"cifar10"``: a copy of the bundled CIFAR-10 ViT whose encoder is kept (frozen: only the new
    classifier trains, so a few pictures cannot wear away what the encoder learned) and whose
    classifier is new (``len(classes)`` outputs, small random weights), even for ten classes. ``"random"``: the
    same architecture with every weight random.
    """
    base = _cifar10_model()
    if start == "cifar10":
        model = build_model(base.config, classes, base=base, seed=seed, new_head=True)
        for name, param in model.named_parameters():  # the encoder stays as the 50,000 photos made it
            param.requires_grad_(name.startswith("classifier."))
        return model
    if start == "random":
        return build_model(base.config, classes, seed=seed)
    raise ValueError(f"start must be one of {list(START_CHOICES)}, not {start!r}")


def own_settings(start: str, base: TrainSettings | None = None) -> TrainSettings:
    """How a run on the student's classes trains: gently when fine-tuning, and with a short schedule.

    A run is capped at 600 steps (the learning rate decays over them): with a few dozen pictures
    more steps only memorise them further.
    """
    import dataclasses

    base = base or TrainSettings()
    steps = min(base.max_steps, 600)
    if start == "cifar10":
        return dataclasses.replace(base, lr=3e-3, warmup=10, max_steps=steps, weight_decay=0.05)
    return dataclasses.replace(base, lr=1e-3, warmup=20, max_steps=steps)


def pictures_from_archive(path: str, classes: Sequence[str], per_class: int, *, split: str = "train",
                          skip: int = 0, size: int = OWN_IMAGE_SIZE) -> dict[str, list[np.ndarray]]:
    """``per_class`` pictures of each of ``classes`` from a .tar/.tar.gz in the ImageFolder layout
    (``<root>/<split>/<class>/<name>.jpg``), after the first ``skip`` of each, read in memory (benchmarks, tests)."""
    import tarfile

    wanted = {c: [] for c in classes}
    seen = {c: 0 for c in classes}
    with tarfile.open(path) as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] != split or parts[-2] not in wanted:
                continue
            label = parts[-2]
            seen[label] += 1
            if seen[label] <= skip or len(wanted[label]) >= per_class:
                continue
            from ..picture_archive import picture_to_array

            wanted[label].append(picture_to_array(archive.extractfile(member).read(), size))
            if all(len(v) >= per_class for v in wanted.values()):
                break
    return wanted
