"""Pictures in the ImageFolder layout (a folder or a ``.tar``/``.tar.gz`` of one) as uint8 arrays.

The layout is the one torchvision's ``ImageFolder`` reads: one sub-folder per class, named after
it, holding that class's pictures. A data set either has ``train/`` and ``test/`` folders of that
layout (CIFAR-10 as this project keeps it: ``cifar10/train/airplane/0000.jpg``), or is one such
folder, which :func:`load_image_folder` splits deterministically (a hash of each file's path
decides, so the split never depends on the order files are listed in).

Everything is decoded once into memory: CIFAR-10's 60,000 pictures of 32 x 32 are 184 MB as
uint8, which is what makes a CPU training run feasible (no decoding per epoch).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from PIL import Image

__all__ = ["Split", "ImageDataset", "load_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Split:
    """One part of a data set: ``images`` uint8 ``[n, H, W, 3]``, ``labels`` int64 ``[n]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    """A training split, a held-out split and the class names (label ``i`` is ``classes[i]``)."""

    train: Split
    test: Split
    classes: list[str]
    source: str
    held_out_from_train: bool  # True when there was no test/ folder and the split was made here


def _entries_from_dir(root: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield PurePosixPath(path.relative_to(root).as_posix()), path.read_bytes


def _entries_from_tar(path: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    with tarfile.open(path) as archive:
        for member in archive:
            name = PurePosixPath(member.name)
            if not member.isfile() or name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("._"):
                continue
            data = archive.extractfile(member).read()  # read now: the archive is streamed
            yield name, (lambda data=data: data)


def _decode(data: bytes, image_size: int | None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _held_out(name: PurePosixPath, fraction: float) -> bool:
    digest = hashlib.sha256(str(name).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def load_image_folder(
    source: str | os.PathLike,
    *,
    image_size: int | None = None,
    held_out_fraction: float = 0.1,
    limit_per_class: int | None = None,
) -> ImageDataset:
    """Read an ImageFolder data set from a folder or a tar archive into memory.

    ``image_size`` resizes pictures that are not already that size (bilinear); without it all
    pictures must share one size. ``limit_per_class`` keeps only the first N pictures of each
    class in each split (sorted by name), for quick runs and tests.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no data at {path}: give a folder in ImageFolder layout or a .tar/.tar.gz of one")
    entries = _entries_from_tar(path) if path.is_file() else _entries_from_dir(path)

    # Group by (split, class): a file's class is its parent folder; its split is the folder above
    # that when it is called train/ or test/ (or val/, valid/, validation/).
    grouped: dict[tuple[str, str], list[tuple[PurePosixPath, np.ndarray]]] = {}
    counts: dict[tuple[str, str], int] = {}
    for name, read in entries:
        parts = name.parts
        if len(parts) < 2:
            continue  # a picture with no class folder
        label = parts[-2]
        split = parts[-3].lower() if len(parts) >= 3 else ""
        split = {"val": "test", "valid": "test", "validation": "test"}.get(split, split)
        if split not in ("train", "test"):
            split = ""
        key = (split, label)
        if limit_per_class is not None and counts.get(key, 0) >= limit_per_class:
            continue
        counts[key] = counts.get(key, 0) + 1
        grouped.setdefault(key, []).append((name, _decode(read(), image_size)))
    if not grouped:
        raise ValueError(f"{path} holds no pictures in the ImageFolder layout (<class>/<picture> or train|test/<class>/<picture>)")

    has_splits = any(split == "train" for split, _ in grouped) and any(split == "test" for split, _ in grouped)
    classes = sorted({label for _, label in grouped})
    index = {name: i for i, name in enumerate(classes)}
    parts: dict[str, list[tuple[PurePosixPath, np.ndarray, int]]] = {"train": [], "test": []}
    for (split, label), items in grouped.items():
        for name, array in items:
            if has_splits:
                target = split or "train"
            else:
                target = "test" if _held_out(name, held_out_fraction) else "train"
            parts[target].append((name, array, index[label]))

    def stack(items: list[tuple[PurePosixPath, np.ndarray, int]], what: str) -> Split:
        items.sort(key=lambda item: str(item[0]))
        shapes = {array.shape for _, array, _ in items}
        if len(shapes) > 1:
            raise ValueError(f"the {what} pictures have different sizes {sorted(shapes)[:3]}...: pass image_size= to resize them")
        images = np.stack([array for _, array, _ in items]) if items else np.zeros((0, 1, 1, 3), np.uint8)
        return Split(images, np.array([label for _, _, label in items], dtype=np.int64))

    return ImageDataset(
        train=stack(parts["train"], "training"),
        test=stack(parts["test"], "held-out"),
        classes=classes,
        source=str(path),
        held_out_from_train=not has_splits,
    )
