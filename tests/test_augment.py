"""RandAugment and mixup / CutMix (vit_explain.augment): what each operation does to the pixels,
and that the mixed labels say exactly how much of each picture a mixed picture holds."""

import numpy as np
import pytest
import torch
from PIL import Image

from vit_explain.augment import OPERATIONS, check_settings, mix_batch, rand_augment

#: The two operations that have no strength: they always rescale the picture's histogram.
WITHOUT_STRENGTH = {"autocontrast", "equalize"}


def _pictures(n: int = 6, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(set(OPERATIONS) - WITHOUT_STRENGTH))
def test_every_operation_at_strength_zero_leaves_the_picture_alone(name):
    picture = Image.fromarray(_pictures(1)[0])
    for sign in (-1.0, 1.0):
        out = np.asarray(OPERATIONS[name](picture, 0.0, sign))
        assert np.array_equal(out, np.asarray(picture)), (name, sign)


@pytest.mark.parametrize("name", sorted(set(OPERATIONS) - {"identity"}))
def test_every_operation_changes_a_picture_at_full_strength(name):
    picture = Image.fromarray(_pictures(1, seed=3)[0] // 2 + 40)  # room for contrast/brightness both ways
    out = np.asarray(OPERATIONS[name](picture, 1.0, 1.0))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, np.asarray(picture)), name


def test_translation_shifts_by_the_stated_share_of_the_side_and_fills_grey():
    picture = _pictures(1, size=20)[0]
    strength = 4 / (0.45 * 20)  # a shift of exactly 4 pixels
    left = np.asarray(OPERATIONS["translate_x"](Image.fromarray(picture), strength, 1.0))
    near = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max() <= 1  # noqa: E731  (bilinear rounding)
    assert near(left[:, :16], picture[:, 4:])
    assert (left[:, 16:] == 128).all()
    up = np.asarray(OPERATIONS["translate_y"](Image.fromarray(picture), strength, -1.0))
    assert near(up[4:], picture[:16])
    assert (up[:4] == 128).all()


def test_contrast_and_brightness_move_by_the_stated_factor():
    grey = np.full((8, 8, 3), 100, np.uint8)
    darker = np.asarray(OPERATIONS["brightness"](Image.fromarray(grey), 0.5, -1.0))
    assert (darker == round(100 * (1 - 0.45))).all()
    solarized = np.asarray(OPERATIONS["solarize"](Image.fromarray(np.full((4, 4, 3), 200, np.uint8)), 0.5, 1.0))
    assert (solarized == 255 - 200).all()  # 200 is above the threshold 128, so it is inverted


def test_rand_augment_is_reproducible_from_the_generator_and_keeps_shape():
    images = _pictures(32)
    a = rand_augment(images, np.random.default_rng(7), n=2, magnitude=9)
    b = rand_augment(images, np.random.default_rng(7), n=2, magnitude=9)
    c = rand_augment(images, np.random.default_rng(8), n=2, magnitude=9)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    changed = sum(not np.array_equal(x, y) for x, y in zip(a, images))
    assert changed >= 28  # two draws of identity in a row happen for about 1 picture in 200
    assert rand_augment(images, np.random.default_rng(7), n=0) is images
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(images, np.random.default_rng(7), magnitude=31)
    with pytest.raises(ValueError, match="mixed batches"):
        check_settings(9, 1.5)


def _constant_batch(labels):
    """Picture i is filled with the value i + 1, so every mixed pixel tells where it came from."""
    b = len(labels)
    x = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 8, 8).contiguous()
    return x, torch.tensor(labels)


def test_mixup_blends_pixels_and_labels_in_the_same_proportion():
    x, y = _constant_batch([0, 1, 2, 3])
    mixed, targets = mix_batch(x, y, 5, np.random.default_rng(0), cutmix_share=0.0)
    assert targets.shape == (4, 5) and torch.allclose(targets.sum(-1), torch.ones(4))
    for i in range(4):
        partner = 3 - i
        lam = targets[i, y[i]].item()
        assert 0 < lam < 1 and targets[i, y[partner]].item() == pytest.approx(1 - lam)
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[partner])


def test_cutmix_pastes_one_rectangle_and_the_label_weight_is_its_area():
    x, y = _constant_batch([4, 1, 1, 0, 2])
    for seed in range(20):
        mixed, targets = mix_batch(x, y, 5, np.random.default_rng(seed), cutmix_share=1.0)
        for i in range(5):
            partner = 4 - i
            from_partner = (mixed[i, 0] == partner + 1).float()
            kept = 1 - from_partner.mean().item() if partner != i else 1.0
            assert ((mixed[i, 0] == i + 1) | (mixed[i, 0] == partner + 1)).all()
            if y[partner] != y[i]:
                assert targets[i, y[i]].item() == pytest.approx(kept)
            rows, cols = torch.nonzero(from_partner, as_tuple=True)
            if len(rows) and partner != i:  # the pasted pixels fill their bounding box: one rectangle
                box = from_partner[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                assert box.all()
        assert torch.allclose(targets.sum(-1), torch.ones(5))
