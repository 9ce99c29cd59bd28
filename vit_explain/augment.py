"""Training-time augmentation of pictures: crop and flip, RandAugment, and mixup / CutMix.

Every random choice is drawn from a :class:`numpy.random.Generator` that the caller passes in, so
a training run is reproducible from its seed and resumes exactly after an interruption.

- :func:`crop_and_flip`: the standard CIFAR augmentation (He et al. 2016, section 4.2).
- :func:`rand_augment`: ``n`` photometric or geometric operations per picture, picked at random
  from a fixed list, all at one strength ``magnitude`` on a 0-30 scale (Cubuk et al. 2020,
  "RandAugment"); written here with Pillow's ImageOps / ImageEnhance / affine transforms.
- :func:`mix_batch`: blend each picture with another one of the batch, either as a whole (mixup,
  Zhang et al. 2018) or by pasting a rectangle of it (CutMix, Yun et al. 2019), and mix the two
  labels in proportion; DeiT (Touvron et al. 2021) switches between the two at random per batch.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

#: Grey used where a geometric operation uncovers pixels outside the picture.
FILL = (128, 128, 128)


def crop_and_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop after reflect-padding by ``pad`` pixels, and a random horizontal flip (uint8 ``[N, H, W, 3]`` in and out)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


# --------------------------------------------------------------------------- RandAugment

MAX_MAGNITUDE = 30


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR, fillcolor=FILL)


def _enhance(kind):
    # strength s in [0, 1] moves the factor 1 -> 1 +- 0.9 s (0.1 = nearly grey / flat / dark / blurred)
    return lambda img, s, sign: kind(img).enhance(1.0 + sign * 0.9 * s)


#: Each operation takes (picture, strength in [0, 1], sign +-1) and returns a picture of the same size.
OPERATIONS = {
    "identity": lambda img, s, sign: img,
    "autocontrast": lambda img, s, sign: ImageOps.autocontrast(img),
    "equalize": lambda img, s, sign: ImageOps.equalize(img),
    "rotate": lambda img, s, sign: img.rotate(sign * 30.0 * s, resample=Image.Resampling.BILINEAR, fillcolor=FILL),
    "solarize": lambda img, s, sign: ImageOps.solarize(img, threshold=int(round(256 * (1.0 - s)))),
    "posterize": lambda img, s, sign: ImageOps.posterize(img, 8 - int(round(4 * s))),
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": lambda img, s, sign: _affine(img, (1, sign * 0.3 * s, 0, 0, 1, 0)),
    "shear_y": lambda img, s, sign: _affine(img, (1, 0, 0, sign * 0.3 * s, 1, 0)),
    "translate_x": lambda img, s, sign: _affine(img, (1, 0, sign * 0.45 * s * img.size[0], 0, 1, 0)),
    "translate_y": lambda img, s, sign: _affine(img, (1, 0, 0, 0, 1, sign * 0.45 * s * img.size[1])),
}
_NAMES = tuple(OPERATIONS)


def check_settings(magnitude: float, mix: float) -> None:
    """Refuse a RandAugment magnitude outside 0-30 or a share of mixed batches outside 0-1 (before any work)."""
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f"magnitude must be between 0 and {MAX_MAGNITUDE}, not {magnitude}")
    if not 0 <= mix <= 1:
        raise ValueError(f"the share of mixed batches must be between 0 and 1, not {mix}")


def rand_augment(images: np.ndarray, rng: np.random.Generator, n: int = 2, magnitude: float = 9) -> np.ndarray:
    """Apply ``n`` operations drawn at random (with repeats) from :data:`OPERATIONS` to each picture.

    ``magnitude`` (0-30) sets every operation's strength: at 9, for instance, rotations of 9 degrees,
    shifts of 13.5% of the side, contrast factors 0.73 or 1.27. uint8 ``[N, H, W, 3]`` in and out.
    """
    if n <= 0:
        return images
    check_settings(magnitude, 0.0)
    strength = magnitude / MAX_MAGNITUDE
    picks = rng.integers(0, len(_NAMES), size=(len(images), n))
    signs = np.where(rng.random((len(images), n)) < 0.5, -1.0, 1.0)
    out = np.empty_like(images)
    for i, picture in enumerate(images):
        img = Image.fromarray(picture)
        for op, sign in zip(picks[i], signs[i]):
            img = OPERATIONS[_NAMES[op]](img, strength, sign)
        out[i] = np.asarray(img)
    return out


# --------------------------------------------------------------------------- mixup / CutMix


def mix_batch(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rng: np.random.Generator,
    *,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    cutmix_share: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each picture of a batch with its mirror in the batch (picture i with picture B-1-i).

    With probability ``cutmix_share`` the batch is CutMixed: a rectangle covering about ``1 - lam`` of
    the area (lam ~ Beta(cutmix_alpha, cutmix_alpha)) is pasted from the partner, and lam is then set
    to the share actually kept; otherwise it is mixed up: ``lam * x + (1 - lam) * partner`` with
    lam ~ Beta(mixup_alpha, mixup_alpha). Returns the mixed pixels and the soft targets
    ``lam * onehot(y) + (1 - lam) * onehot(partner's y)`` (``[B, num_classes]``, rows sum to 1).
    """
    b, _, h, w = pixel_values.shape
    partner = torch.arange(b - 1, -1, -1, device=pixel_values.device)
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(pixel_values.dtype)
    if rng.random() < cutmix_share:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        cut_h, cut_w = int(round(h * np.sqrt(1.0 - lam))), int(round(w * np.sqrt(1.0 - lam)))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        mixed = pixel_values.clone()
        mixed[:, :, y0:y1, x0:x1] = pixel_values[partner, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        mixed = lam * pixel_values + (1.0 - lam) * pixel_values[partner]
    return mixed, lam * onehot + (1.0 - lam) * onehot[partner]
