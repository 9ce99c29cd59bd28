"""Synthetic "one shape on clutter" images: the data the bundled model learns from.

Every image holds exactly one object from :data:`CLASS_NAMES` (a filled geometric shape) at a
random position, size, rotation and hue, brighter than the busy background it is painted over: a
colour gradient,
soft blobs, stripes, thin lines, small dots and pixel noise. None of the clutter can pass for a
class (the lines are one pixel wide, the dots a few pixels, the blobs have no edges), so the only
way to name the class is to find the object. That is what makes the bundled model a good teaching
subject: its attention has something definite to look at, and :func:`sample` returns the object's
bounding box so one can check that it does.

Everything is numpy and vectorised over the batch; a run is fixed by its seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "sample"]

#: The object classes, in label order (label ``i`` is ``CLASS_NAMES[i]``).
CLASS_NAMES: list[str] = [
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "heart",
    "arrow",
]
NUM_CLASSES = len(CLASS_NAMES)

# Object half-extent as a fraction of the image side: the drawn shapes span roughly
# 2 * 0.92 * scale, i.e. about a third to 60% of the side.
_SCALE_RANGE = (0.18, 0.325)
# HSV value range of the background's colours (gradient and blobs): dull and darkish, so that the
# objects, which are brighter, stand out whatever their hue.
_DULL = (0.1, 0.6)
# How much brighter (mean of R, G, B) an object is than the average of its background, at least.
_LIFT = 0.3
# Sub-pixel samples per side when drawing the object (anti-aliasing).
_SUPERSAMPLE = 2
# Images rendered together; bounds the memory of the vectorised maths.
_CHUNK = 256


# --------------------------------------------------------------------------- shapes
# Each shape is a predicate on object-frame coordinates (u to the right, v downwards), in which
# the object fits the disc of radius ~1 around the origin.


def _circle(u, v):
    return u * u + v * v <= 0.92**2


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.70


def _triangle(u, v):
    # Equilateral, circumradius 0.98: inside when the point is on the inner side of all three
    # edges, whose outward normals point away from the three corners.
    inside = np.ones(u.shape, dtype=bool)
    for angle in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6):  # corner directions (up, right, left)
        inside &= u * np.cos(angle) + v * np.sin(angle) >= -0.49
    return inside


def _star(u, v):
    # A five-pointed star: the pentagram drawn through five corners on a circle of radius 0.98.
    # Each of its five straight lines splits the plane; the star is where a point lies on the
    # centre's side of at least four of them (five: the inner pentagon, four: one of the tips).
    corners = [(-np.pi / 2 + 2 * np.pi * k / 5) for k in range(5)]
    count = np.zeros(u.shape, dtype=np.int8)
    for k in range(5):
        a, b = corners[k], corners[(k + 2) % 5]
        ax, ay = 0.98 * np.cos(a), 0.98 * np.sin(a)
        bx, by = 0.98 * np.cos(b), 0.98 * np.sin(b)
        nx, ny = by - ay, ax - bx  # a normal of the line a-b
        centre_side = np.sign(nx * (0 - ax) + ny * (0 - ay))
        count += (np.sign(nx * (u - ax) + ny * (v - ay)) == centre_side).astype(np.int8)
    return count >= 4


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.30) & (av <= 0.90)) | ((av <= 0.30) & (au <= 0.90))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 0.92**2) & (r2 >= 0.50**2)


def _heart(u, v):
    # Two round lobes with a deep notch between them, over a point: the lobes are discs of
    # radius 0.5 centred at (+-0.48, -0.3); below their centres the outline runs straight from
    # their outer edges to the tip at (0, 0.92). (v points down, so the point is at the bottom.)
    lobes = ((u - 0.48) ** 2 + (v + 0.3) ** 2 <= 0.25) | ((u + 0.48) ** 2 + (v + 0.3) ** 2 <= 0.25)
    point = (v >= -0.3) & (v <= 0.92) & (np.abs(u) <= 0.98 * (0.92 - v) / 1.22)
    return lobes | point


def _arrow(u, v):
    # A thick shaft and a head no wider than the shaft is long, pointing along +u.
    shaft = (np.abs(v) <= 0.2) & (u >= -0.92) & (u <= 0.25)
    head = (u >= 0.15) & (u <= 0.92) & (np.abs(v) <= 0.55 * (0.92 - u) / 0.77)
    return shaft | head


_SHAPES = [_circle, _square, _triangle, _star, _cross, _ring, _heart, _arrow]
assert len(_SHAPES) == NUM_CLASSES


# --------------------------------------------------------------------------- helpers


def _random_colours(rng: np.random.Generator, n: int, value=(0.25, 1.0), saturation=(0.35, 1.0)) -> np.ndarray:
    """``n`` random RGB colours in [0, 1] (any hue; HSV value and saturation in the given ranges): [n, 3]."""
    hue = rng.random(n)
    sat = rng.uniform(*saturation, n)
    val = rng.uniform(*value, n)
    # HSV -> RGB with the usual piecewise-linear hue wheel.
    k = (hue[:, None] * 6.0 + np.array([5.0, 3.0, 1.0])) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (val[:, None] * (1.0 - sat[:, None] * ramp)).astype(np.float32)


def _segment_distance(px, py, x0, y0, x1, y1):
    """Distance from pixel centres (px, py) to segments; segment params broadcast as [.., 1, 1]."""
    dx, dy = x1 - x0, y1 - y0
    t = ((px - x0) * dx + (py - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-6)
    t = np.clip(t, 0.0, 1.0)
    ex, ey = px - (x0 + t * dx), py - (y0 + t * dy)
    return np.sqrt(ex * ex + ey * ey)


def _blend(img, alpha, colour):
    """Paint ``colour`` [n, 3] with coverage ``alpha`` [n, H, W] over ``img`` [n, H, W, 3], in place."""
    diff = colour.astype(np.float32)[:, None, None, :] - img
    diff *= alpha[..., None]
    img += diff
    return img


# --------------------------------------------------------------------------- rendering


def _render_chunk(rng: np.random.Generator, n: int, size: int, clutter: float = 1.0):
    f32 = np.float32
    ys, xs = np.mgrid[0:size, 0:size].astype(f32) + f32(0.5)  # pixel centres, [H, W]
    px, py = xs[None], ys[None]

    # Background: a two-colour linear gradient in a random direction.
    c_start, c_end = _random_colours(rng, n, _DULL, (0.2, 0.9)), _random_colours(rng, n, _DULL, (0.2, 0.9))
    theta = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    t = (np.cos(theta) * (px - size / 2) + np.sin(theta) * (py - size / 2)) / size + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None]  # [n, H, W, 1]
    img = c_start[:, None, None, :] + t * (c_end - c_start)[:, None, None, :]

    # Soft blobs: wide Gaussian bumps of colour, no edges.
    for _ in range(3):
        present = (rng.random(n) < 0.7 * clutter).astype(f32)[:, None, None]
        bx, by = (rng.uniform(0, size, (2, n)).astype(f32)[..., None, None])
        sigma = rng.uniform(0.06, 0.22, n).astype(f32)[:, None, None] * size
        weight = present * 0.6 * np.exp(-((px - bx) ** 2 + (py - by) ** 2) / (2 * sigma**2))
        img = _blend(img, weight, _random_colours(rng, n, _DULL, (0.2, 0.9)))

    # Stripes: a faint sinusoidal grating in a random direction.
    present = (rng.random(n) < 0.6 * clutter).astype(f32)[:, None, None]
    phi = rng.uniform(0, np.pi, n).astype(f32)[:, None, None]
    period = rng.uniform(0.06, 0.2, n).astype(f32)[:, None, None] * size
    phase = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    wave = np.sin(2 * np.pi * (np.cos(phi) * px + np.sin(phi) * py) / period + phase)
    amp = rng.uniform(0.03, 0.12, n).astype(f32)[:, None, None] * present
    img = img + (amp * wave)[..., None]

    # Thin lines, one pixel wide, across the picture.
    for _ in range(4):
        present = (rng.random(n) < 0.6 * clutter).astype(f32)[:, None, None]
        x0, y0, x1, y1 = rng.uniform(-0.1, 1.1, (4, n)).astype(f32)[..., None, None] * size
        dist = _segment_distance(px, py, x0, y0, x1, y1)
        alpha = np.clip(1.0 - dist, 0.0, 1.0) * rng.uniform(0.5, 1.0, n).astype(f32)[:, None, None]
        img = _blend(img, alpha * present, _random_colours(rng, n))

    # Small dots (radius 0.8 to 1.6 px), up to a dozen per image, painted into the few pixels
    # around each centre rather than over the whole image.
    n_dots = 12
    present = rng.random((n, n_dots)) < rng.uniform(0.0, clutter, (n, 1))
    dx, dy = rng.uniform(0, size, (2, n, n_dots)).astype(f32)
    radius = rng.uniform(0.8, 1.6, (n, n_dots)).astype(f32)
    dot_colours = _random_colours(rng, n * n_dots).reshape(n, n_dots, 3).astype(f32)
    offsets = np.arange(-2, 3)
    oy, ox = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))  # 25 neighbours
    image_index = np.arange(n)[:, None]
    for j in range(n_dots):
        col = np.floor(dx[:, j, None]).astype(np.int64) + ox  # [n, 25]
        row = np.floor(dy[:, j, None]).astype(np.int64) + oy
        d = np.hypot(col + 0.5 - dx[:, j, None], row + 0.5 - dy[:, j, None])
        alpha = np.clip(radius[:, j, None] + 0.5 - d, 0.0, 1.0) * present[:, j, None]
        alpha = alpha * ((col >= 0) & (col < size) & (row >= 0) & (row < size))
        col, row = np.clip(col, 0, size - 1), np.clip(row, 0, size - 1)
        pixels = img[image_index, row, col]  # [n, 25, 3]
        img[image_index, row, col] = pixels + alpha[..., None].astype(f32) * (
            dot_colours[:, j, None, :] - pixels
        )

    # The object: class, scale, position, rotation, a colour that stands out from the background.
    labels = rng.integers(0, NUM_CLASSES, n)
    scale = rng.uniform(*_SCALE_RANGE, n) * size
    margin = scale * 1.0 + 1.0
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    rot = rng.uniform(0, 2 * np.pi, n)
    # Objects are brighter than their background (any hue): lift the colour, towards white if need
    # be, until its mean channel beats the background's by _LIFT. A fixed contrast polarity lets a
    # small ViT find the object from the first steps; with random polarity it sat at chance for
    # hundreds of steps.
    colour = _random_colours(rng, n, (0.8, 1.0), (0.3, 1.0))
    background_level = img.mean(axis=(1, 2, 3))
    lift = np.clip(background_level + _LIFT - colour.mean(axis=1), 0.0, None)
    colour = np.clip(colour + lift[:, None], 0.0, 1.0).astype(f32)

    # Sub-pixel sample grid for the object's coverage.
    s = _SUPERSAMPLE
    sub = (np.arange(size * s, dtype=f32) + f32(0.5)) / f32(s)
    sy, sx = np.meshgrid(sub, sub, indexing="ij")  # [sH, sW]
    coverage = np.zeros((n, size, size), dtype=f32)
    for c, shape in enumerate(_SHAPES):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        k = (lambda a: a[idx].astype(f32)[:, None, None])
        cos, sin = np.cos(k(rot)), np.sin(k(rot))
        ox, oy = sx[None] - k(cx), sy[None] - k(cy)
        u = (cos * ox + sin * oy) / k(scale)  # rotate the pixel into the object's frame
        v = (-sin * ox + cos * oy) / k(scale)
        inside = shape(u, v).astype(f32)
        coverage[idx] = inside.reshape(idx.size, size, s, size, s).mean(axis=(2, 4))

    # Light shading across the object so it is not perfectly flat.
    shade_dir = rng.uniform(0, 2 * np.pi, n)
    gx = (0.12 * np.cos(shade_dir) / scale).astype(f32)[:, None, None]
    gy = (0.12 * np.sin(shade_dir) / scale).astype(f32)[:, None, None]
    shade = 1.0 + gx * (px - cx.astype(f32)[:, None, None]) + gy * (py - cy.astype(f32)[:, None, None])
    painted = colour[:, None, None, :] * shade[..., None]  # [n, H, W, 3]
    painted -= img
    painted *= coverage[..., None]
    img += painted

    # Pixel noise over everything.
    # (uniform noise with the given standard deviation: much cheaper to draw than Gaussian)
    sigma = rng.uniform(0.01, 0.01 + 0.05 * clutter, n).astype(f32)[:, None, None, None]
    noise = rng.random(img.shape, dtype=f32)
    noise -= 0.5
    noise *= sigma * f32(np.sqrt(12.0))
    img += noise
    images = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    # Boxes: the tight pixel box of the pixels the object covers at least half.
    mask = coverage >= 0.5
    cols, rows = mask.any(axis=1), mask.any(axis=2)  # [n, W], [n, H]
    x0 = cols.argmax(axis=1)
    x1 = size - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = size - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    return images, labels.astype(np.int64), boxes, mask


def sample(n: int, seed, image_size: int = 64, *, clutter: float = 1.0, return_masks: bool = False):
    """Draw ``n`` synthetic images, each with one object from :data:`CLASS_NAMES`.

    Returns ``(images, labels, boxes)``:

    - ``images``: uint8 ``[n, image_size, image_size, 3]`` (RGB);
    - ``labels``: int64 ``[n]``, indices into :data:`CLASS_NAMES`;
    - ``boxes``: float32 ``[n, 4]`` as ``x0, y0, x1, y1`` in pixels, the tight box around the
      pixels the object covers (at least half): columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.

    ``clutter`` in [0, 1] scales how busy the background is: how often blobs, stripes, lines and
    dots appear and how strong the pixel noise is (1, the default, is the data the bundled model is
    judged on; training starts lower and ramps up). With ``return_masks=True`` a fourth array is
    returned: bool ``[n, H, W]``, the object's pixels. ``seed`` is anything
    ``numpy.random.default_rng`` accepts (an int, or a list of ints).
    The same ``(n, seed, image_size)`` always gives the same arrays.
    """
    n, image_size = int(n), int(image_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
    clutter = float(clutter)
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must be between 0 and 1, got {clutter}.")
    rng = np.random.default_rng(seed)
    parts = [
        _render_chunk(rng, min(_CHUNK, n - start), image_size, clutter) for start in range(0, n, _CHUNK)
    ]
    if not parts:
        parts = [
            (
                np.zeros((0, image_size, image_size, 3), np.uint8),
                np.zeros(0, np.int64),
                np.zeros((0, 4), np.float32),
                np.zeros((0, image_size, image_size), bool),
            )
        ]
    images, labels, boxes, masks = (np.concatenate(p) for p in zip(*parts))
    if return_masks:
        return images, labels, boxes, masks
    return images, labels, boxes
