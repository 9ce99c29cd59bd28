"""The synthetic shapes data set: determinism, shapes, boxes that really hold the object."""

import numpy as np
import pytest

from vit_explain.synthetic import CLASS_NAMES, NUM_CLASSES, sample

N = 400


@pytest.fixture(scope="module")
def batch():
    return sample(N, seed=7, return_masks=True)


def test_class_list():
    assert NUM_CLASSES == len(CLASS_NAMES) >= 6
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_shapes_and_dtypes(batch):
    images, labels, boxes, masks = batch
    assert images.shape == (N, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert boxes.shape == (N, 4) and boxes.dtype == np.float32
    assert masks.shape == (N, 64, 64) and masks.dtype == bool
    three = sample(3, seed=1, image_size=96)
    assert len(three) == 3
    assert three[0].shape == (3, 96, 96, 3)
    assert sample(0, seed=1)[0].shape == (0, 64, 64, 3)


def test_deterministic_for_a_seed():
    a = sample(40, seed=123)
    b = sample(40, seed=123)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_differ():
    a_img, a_lab, a_box = sample(40, seed=1)
    b_img, b_lab, b_box = sample(40, seed=2)
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_box, b_box)
    assert (a_lab != b_lab).any()


def test_every_class_appears_roughly_evenly(batch):
    counts = np.bincount(batch[1], minlength=NUM_CLASSES)
    assert counts.min() >= N / NUM_CLASSES / 2
    assert batch[1].min() >= 0 and batch[1].max() < NUM_CLASSES


def test_boxes_inside_image_and_tight_around_the_mask(batch):
    images, labels, boxes, masks = batch
    size = images.shape[1]
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= size).all() and (y1 <= size).all()
    assert (x1 > x0).all() and (y1 > y0).all()
    for i in range(N):
        ys, xs = np.nonzero(masks[i])
        assert xs.size > 0
        # every object pixel is inside the box, and the box touches the object on all four sides
        assert xs.min() == x0[i] and xs.max() == x1[i] - 1
        assert ys.min() == y0[i] and ys.max() == y1[i] - 1


def test_objects_are_large_and_spread_out(batch):
    images, _, boxes, _ = batch
    size = images.shape[1]
    longest = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / size
    assert longest.min() >= 0.2 and longest.max() <= 0.7
    assert longest.mean() > 0.35
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 / size
    assert centres.std(axis=0).min() > 0.08  # positions vary in both directions
    assert centres.min() < 0.3 and centres.max() > 0.7


def test_mask_pixels_are_the_painted_object(batch):
    """Inside the mask the colour is nearly flat and differs from the surroundings.

    If the mask (hence the box) were misplaced it would cover clutter: high variance and no
    contrast with the pixels just outside the box.
    """
    images, _, boxes, masks = batch
    img = images.astype(np.float32)
    spreads, contrasts = [], []
    for i in range(N):
        inside = img[i][masks[i]]  # [P, 3]
        x0, y0, x1, y1 = boxes[i].astype(int)
        frame = np.zeros(masks[i].shape, bool)
        frame[max(y0 - 3, 0) : y1 + 3, max(x0 - 3, 0) : x1 + 3] = True
        frame[y0:y1, x0:x1] = False
        outside = img[i][frame]
        spreads.append(inside.std(axis=0).mean())
        contrasts.append(np.linalg.norm(inside.mean(0) - outside.mean(0)) if outside.size else 255)
    assert np.median(spreads) < 22
    assert np.median(contrasts) > 60


def test_fill_ratio_matches_the_named_shape(batch):
    """A disc fills pi/4 of its box whatever the rotation; a ring much less; a cross in between."""
    _, labels, boxes, masks = batch
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    fill = masks.sum(axis=(1, 2)) / area
    by_name = {name: fill[labels == c] for c, name in enumerate(CLASS_NAMES)}
    assert np.median(by_name["circle"]) == pytest.approx(np.pi / 4, abs=0.05)
    assert np.median(by_name["ring"]) == pytest.approx(np.pi / 4 * (1 - (0.50 / 0.92) ** 2), abs=0.07)
    assert by_name["circle"].min() > by_name["ring"].max()
    assert np.median(by_name["triangle"]) < np.median(by_name["circle"])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample(-1, seed=0)
    with pytest.raises(ValueError):
        sample(2, seed=0, image_size=8)


def test_the_shipped_synthetic_samples_come_from_this_generator():
    """assets/samples/synthetic_*.png are pictures of sample(300, seed=2026) (see LICENSES.md).

    They also pin the generator's output: if this fails, the generator changed, and the bundled
    model (trained on it) should be retrained and the samples redrawn.
    """
    from pathlib import Path

    from PIL import Image

    samples = Path(__file__).resolve().parents[1] / "assets" / "samples"
    images, labels, _ = sample(300, seed=2026)
    for name, index in [("star", 8), ("heart", 2), ("arrow", 127)]:
        assert CLASS_NAMES[labels[index]] == name
        np.testing.assert_array_equal(np.asarray(Image.open(samples / f"synthetic_{name}.png")), images[index])
