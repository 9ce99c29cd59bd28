"""Data sources for the training loop: the synthetic shapes stream and a folder of pictures.

A data source hands the loop the pictures of one step (:meth:`pictures`, a :class:`Pictures`:
uint8 pictures, their labels and the step's random stream, which the loop's augmentation goes on
drawing from) and says how many steps an epoch has (:meth:`steps_per_epoch`; None for a stream
with no epochs). ``classes`` are its label names; :meth:`init_probe` gives the pictures a fresh
model's sine-cosine position start is scaled on. Every draw comes from a seed sequence built from
the run's seed, so a run is fixed by its seed and resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ..augment import crop_and_flip
from ..synthetic import CLASS_NAMES, sample

if TYPE_CHECKING:
    from ..imagefolder import ImageDataset
    from .config import TrainConfig

__all__ = ["Pictures", "DataSource", "ShapesStream", "ImageFolderSource", "images_to_pixel_values", "clutter_at"]

#: The shapes batch that measures the patch embeddings' spread for the sine-cosine start: a "step" no run reaches.
PROBE_STEP = 2**32 - 1


def images_to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> float ``[n, 3, H, W]`` the ViT way: ``(x / 255 - 0.5) / 0.5``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - 0.5) / 0.5


@dataclass
class Pictures:
    """What a data source draws for one step."""

    images: np.ndarray  # uint8 [B, H, W, 3]
    labels: np.ndarray  # int64 [B]
    rng: np.random.Generator  # the step's random stream; the loop's augmentation draws from it next


class DataSource(Protocol):
    classes: list[str]

    def steps_per_epoch(self, batch_size: int) -> int | None: ...

    def pictures(self, step: int, config: TrainConfig) -> Pictures: ...


def clutter_at(step: int, total_steps: int, curriculum: float) -> float:
    """Background clutter for a step: rises linearly from 0 to 1 over the first ``curriculum`` of the run."""
    if curriculum <= 0:
        return 1.0
    return min(1.0, step / (curriculum * total_steps))


class ShapesStream:
    """The synthetic shapes (:func:`vit_explain.synthetic.sample`): a fresh batch every step, never repeated.

    Step ``i`` of a run seeded ``s`` draws its pictures from the seed sequence ``[s, i]`` (its
    augmentation, if any, from ``[s, i, 1]``); the background's clutter rises from 0 to ``clutter``
    over the first ``curriculum`` of the run (:func:`clutter_at`).
    """

    name = "shapes"
    sequential = False  # any step can be drawn alone (so batches can be drawn ahead, or from any step on)

    def __init__(self, image_size: int = 64, *, clutter: float = 1.0, curriculum: float = 0.0):
        self.image_size = image_size
        self.clutter, self.curriculum = clutter, curriculum
        self.classes = list(CLASS_NAMES)

    def steps_per_epoch(self, batch_size: int) -> None:
        return None

    def pictures(self, step: int, config: TrainConfig) -> Pictures:
        clutter = self.clutter * clutter_at(step, config.total_steps(None), self.curriculum)
        images, labels, _ = sample(config.batch_size, seed=[config.seed, step], image_size=self.image_size,
                                   clutter=clutter)
        return Pictures(images, labels, np.random.default_rng([config.seed, step, 1]))

    def init_probe(self, seed: int) -> torch.Tensor:
        images, _, _ = sample(64, seed=[seed, PROBE_STEP], image_size=self.image_size)
        return images_to_pixel_values(images)


class ImageFolderSource:
    """The training split of an :class:`~vit_explain.imagefolder.ImageDataset`, held in memory.

    ``order="epochs"``: epoch ``e`` visits every picture once, in an order drawn from the seed
    sequence ``[seed, e]``, and its augmentation draws from ``[seed, e, 1]`` (one stream for the
    whole epoch, so the steps of an epoch are drawn in order, and a run resumes at an epoch's start).
    ``order="random"``: step ``i`` draws ``batch_size`` pictures at random (with repeats) from
    ``[seed, i]``, with no epochs. Either way the pictures are cropped after a 4-pixel reflect pad
    and flipped at random (:func:`~vit_explain.augment.crop_and_flip`) when ``crop_flip``.
    """

    name = "pictures"

    def __init__(self, dataset: ImageDataset, *, order: str = "epochs", crop_flip: bool = True):
        if order not in ("epochs", "random"):
            raise ValueError(f"order must be 'epochs' or 'random', not {order!r}")
        if len(dataset.train) == 0:
            raise ValueError(f"{dataset.source} has no training pictures")
        self.dataset, self.order, self.crop_flip = dataset, order, crop_flip
        self.classes = list(dataset.classes)
        self.sequential = order == "epochs"
        self._epoch: tuple[int, int, np.ndarray, np.random.Generator] | None = None  # (epoch, next step, order, rng)

    def steps_per_epoch(self, batch_size: int) -> int | None:
        return math.ceil(len(self.dataset.train) / batch_size) if self.order == "epochs" else None

    def pictures(self, step: int, config: TrainConfig) -> Pictures:
        train, batch_size = self.dataset.train, config.batch_size
        if self.order == "random":
            rng = np.random.default_rng([config.seed, step])
            index = rng.integers(0, len(train), size=batch_size)
        else:
            epoch, i = divmod(step, self.steps_per_epoch(batch_size))
            if i == 0:
                order = np.random.default_rng([config.seed, epoch]).permutation(len(train))
                self._epoch = (epoch, 0, order, np.random.default_rng([config.seed, epoch, 1]))
            if self._epoch is None or self._epoch[:2] != (epoch, i):
                raise ValueError(f"the steps of an epoch are drawn in order from its start: step {step} came out of turn")
            _, _, order, rng = self._epoch
            self._epoch = (epoch, i + 1, order, rng)
            index = order[i * batch_size : (i + 1) * batch_size]
        images = train.images[index]
        if self.crop_flip:
            images = crop_and_flip(images, rng)
        return Pictures(images, train.labels[index], rng)

    def init_probe(self, seed: int) -> torch.Tensor:
        train = self.dataset.train
        pick = np.random.default_rng([seed, 2**31]).choice(len(train), size=min(256, len(train)), replace=False)
        return images_to_pixel_values(train.images[pick])
