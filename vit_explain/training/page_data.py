"""The Training page's data: the shapes, or CIFAR-10 when the server names it, with a held-out set and a probe.

Each is a data source of :mod:`vit_explain.training.data` (batches drawn by step, so a run
resumes from any step) that also holds what the page measures its snapshots on: ``held_out()``
(pixel values and labels) and one probe picture (``probe_image``, ``probe_label``).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Sequence

import numpy as np
import torch

from ..synthetic import sample
from .data import ImageFolderSource, Pictures, ShapesStream, images_to_pixel_values

__all__ = ["ShapesData", "FolderData", "cifar10_path", "CIFAR10_CLASSES", "HELD_OUT_SEED", "PROBE_SEED"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: Seed of the held-out shapes and of the probe picture (training batches use ``[seed, step]``).
HELD_OUT_SEED = 54321
PROBE_SEED = 2024


def cifar10_path() -> str | None:
    """The CIFAR-10 data named by ``VIT_EXPLAIN_CIFAR10`` (a folder or a .tar/.tar.gz), if it exists."""
    raw = os.environ.get("VIT_EXPLAIN_CIFAR10", "").strip()
    return raw if raw and os.path.exists(raw) else None


class ShapesData(ShapesStream):
    """The synthetic shapes on the page's calmer background: a fresh batch every step, a fixed held-out set and probe.

    ``clutter`` is the background's busiest (1 is the bundled model's data), reached after the first
    ``curriculum`` of the run.
    """

    def __init__(self, image_size: int, held_out: int = 256, *, clutter: float = 0.3, curriculum: float = 0.1,
                 settings=None):
        if settings is not None:  # the page's TrainSettings
            clutter, curriculum = settings.shapes_clutter, settings.curriculum
        super().__init__(image_size, clutter=clutter, curriculum=curriculum)
        self._held_out_n = held_out
        self._held = None

    def load(self) -> None:
        images, labels, _ = sample(self._held_out_n, seed=HELD_OUT_SEED, image_size=self.image_size, clutter=self.clutter)
        self._held = (images_to_pixel_values(images), torch.from_numpy(labels))
        probe, label, box = sample(1, seed=PROBE_SEED, image_size=self.image_size, clutter=self.clutter)
        self.probe_image, self.probe_label, self.probe_box = probe[0], int(label[0]), box[0]

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._held


_FOLDER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _read_folder(path: str, image_size: int, limit_per_class: int):
    from ..imagefolder import load_image_folder

    return load_image_folder(path, image_size=image_size, limit_per_class=limit_per_class)


class FolderData:
    """Pictures in the ImageFolder layout (CIFAR-10 here), read once per server and kept in memory.

    Training batches are drawn at random (seed sequence ``[seed, step]``) and augmented with a
    random crop and flip (:class:`~vit_explain.training.data.ImageFolderSource`, ``order="random"``);
    the held-out set is ``held_out`` test pictures spread evenly over the (class-sorted) test split;
    the probe is one of them.
    """

    name = "cifar10"
    sequential = False

    def __init__(self, path: str, image_size: int, *, classes: Sequence[str] = (), limit_per_class: int = 1000,
                 held_out: int = 500):
        self.path, self.image_size = path, image_size
        self._limit, self._held_out_n = limit_per_class, held_out
        self.classes: list[str] = list(classes)  # expected class names (the model's labels); checked on load
        self._source: ImageFolderSource | None = None

    def load(self) -> None:
        with _FOLDER_LOCK:  # two runs asking at once read the archive once
            data = _read_folder(self.path, self.image_size, self._limit)
        if self.classes and list(data.classes) != self.classes:
            raise ValueError(f"{self.path} holds the classes {data.classes}, not the expected {self.classes}")
        self.classes = list(data.classes)
        n = len(data.test)
        if n == 0 or len(data.train) == 0:
            raise ValueError(f"{self.path} has no training or no held-out pictures")
        self._source = ImageFolderSource(data, order="random")
        pick = np.unique(np.linspace(0, n - 1, min(self._held_out_n, n)).round().astype(np.int64))
        self._held = (images_to_pixel_values(data.test.images[pick]), torch.from_numpy(data.test.labels[pick]))
        probe = pick[len(pick) // 3]
        self.probe_image, self.probe_label = data.test.images[probe], int(data.test.labels[probe])

    def steps_per_epoch(self, batch_size: int) -> None:
        return None

    def pictures(self, step: int, config) -> Pictures:
        return self._source.pictures(step, config)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._held
