"""A student's own classes: the held-out split, the checks, the starting models, and transfer learning beating
random weights on a few CIFAR-10 pictures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import cifar10_archive
from vit_explain.training.data import images_to_pixel_values
from vit_explain.training.loop import train_loop
from vit_explain.training.own_classes import (
    OwnClassesData,
    check_classes,
    held_out_count,
    own_settings,
    pictures_from_archive,
    starting_model,
)
from vit_explain.training.run import TrainingRun
from vit_explain.training.sharing import PageActivity, SlotPool
from vit_explain.training.steps import make_optimizer

CIFAR10 = cifar10_archive()
CLASSES = ["airplane", "frog", "truck"]


def coloured(colour, n=6, size=32, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16)
    return [np.clip(base + rng.integers(-20, 21, size=(size, size, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def test_held_out_count_keeps_one_to_test_and_one_to_train():
    assert [held_out_count(n) for n in (1, 2, 3, 5, 10, 60)] == [0, 1, 1, 1, 2, 12]


def test_check_classes_names_what_is_missing():
    assert check_classes(["a", "b"], [5, 5]) == []
    assert any("at least 2 classes" in p for p in check_classes(["a"], [5]))
    assert any("at most 10" in p for p in check_classes([str(i) for i in range(11)], [5] * 11))
    assert any("name" in p for p in check_classes(["a", " "], [5, 5]))
    assert any("same name" in p for p in check_classes(["Cat", "cat "], [5, 5]))
    assert any("too many in b" in p for p in check_classes(["a", "b"], [5, 61]))
    assert any("300 pictures in all" in p for p in check_classes([str(i) for i in range(6)], [55] * 6))
    problems = check_classes(["mug", "pen"], [5, 2])
    assert any("pen" in p and "at least 5" in p and "mug" not in p for p in problems)


def test_the_data_holds_out_pictures_and_draws_augmented_batches():
    data = OwnClassesData({"red": coloured((200, 20, 20), 10), "blue": coloured((20, 20, 200), 5)})
    data.load()
    x, y = data.held_out()
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 0, 1]  # 2 of 10, 1 of 5
    assert data.train_count == 12
    config = own_settings("cifar10").train_config()
    first, again = data.pictures(3, config), data.pictures(3, config)
    assert first.images.shape == (config.batch_size, 32, 32, 3) and np.array_equal(first.images, again.images)
    assert set(first.labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="at least 5 pictures"):
        OwnClassesData({"red": coloured((200, 0, 0), 10), "blue": coloured((0, 0, 200), 3)})


def test_the_starting_models():
    tuned = starting_model(["a", "b", "c"], "cifar10")
    assert tuned.classifier.out_features == 3 and tuned.config.id2label == {0: "a", 1: "b", 2: "c"}
    trainable = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}  # the encoder is kept as it is
    from vit_explain.training.own_classes import _cifar10_model

    base = _cifar10_model()
    assert torch.equal(tuned.vit.embeddings.patch_embeddings.projection.weight,
                       base.vit.embeddings.patch_embeddings.projection.weight)
    ten = starting_model([str(i) for i in range(10)], "cifar10")  # a new head even for ten classes
    assert not torch.equal(ten.classifier.weight, base.classifier.weight)
    fresh = starting_model(["a", "b"], "random")
    assert all(p.requires_grad for p in fresh.parameters())
    assert not torch.equal(fresh.vit.embeddings.patch_embeddings.projection.weight,
                           base.vit.embeddings.patch_embeddings.projection.weight)
    with pytest.raises(ValueError):
        starting_model(["a", "b"], "imagenet")


def test_a_run_on_own_classes_keeps_a_confusion_matrix_per_snapshot():
    data = OwnClassesData({"red": coloured((200, 20, 20)), "green": coloured((20, 200, 20)),
                           "blue": coloured((20, 20, 200))})
    settings = dataclasses.replace(own_settings("cifar10"), max_steps=6, snapshot_every=3, batch_size=8)
    run = TrainingRun(starting_model(data.classes, "cifar10"), data, settings, pool=SlotPool(1), alive=lambda: True,
                      activity=PageActivity())
    run.start()
    run.join(120)
    status = run.status()
    assert status.state == "stopped" and status.step == 6, status.message
    for snap in status.snapshots:
        matrix = snap.extra["confusion"]
        assert matrix.shape == (3, 3) and matrix.sum() == 3 and matrix.sum(axis=1).tolist() == [1, 1, 1]
    assert status.snapshots[-1].held_out_accuracy == np.trace(status.snapshots[-1].extra["confusion"]) / 3


@pytest.mark.skipif(CIFAR10 is None, reason="the CIFAR-10 archive is not here (README, The bundled models; "
                                            "VIT_EXPLAIN_CIFAR10): this test needs its airplanes, frogs and trucks")
def test_fine_tuning_the_cifar10_model_beats_random_weights_after_the_same_steps():
    pictures = pictures_from_archive(str(CIFAR10), CLASSES, 8, split="train")
    test = pictures_from_archive(str(CIFAR10), CLASSES, 30, split="test")
    x = torch.cat([images_to_pixel_values(np.stack(test[c])) for c in CLASSES])
    y = torch.cat([torch.full((30,), i) for i in range(3)])
    accuracy = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a page's run trains (put back below)
    try:
        accuracy.update(_train_both(pictures, x, y))
    finally:
        torch.set_num_threads(threads)
    assert accuracy["cifar10"] >= 0.75, accuracy
    assert accuracy["cifar10"] > accuracy["random"] + 0.2, accuracy


def _train_both(pictures, x, y) -> dict[str, float]:
    accuracy = {}
    for start in ("cifar10", "random"):
        data = OwnClassesData(pictures)
        data.load()
        model = starting_model(data.classes, start)
        settings = dataclasses.replace(own_settings(start), max_steps=30, batch_size=16)
        optimizer = make_optimizer(model, lr=settings.lr, weight_decay=settings.weight_decay)
        train_loop(model, optimizer, data, settings.train_config())
        model.eval()
        with torch.no_grad():
            accuracy[start] = (model(x).logits.argmax(-1) == y).float().mean().item()
    return accuracy
