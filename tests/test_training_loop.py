"""The one training loop gives the losses the three loops it replaced gave, step for step.

The reference numbers in ``tests/data/`` were recorded with the code before the refactor (the shapes
recipe's ``train.train``, the pictures' ``train.train_images`` and the Training page's
``TrainingRun._train``, each its own loop), on CPU with one torch thread: the shapes recipe's first
20 steps at its own settings (seed 0, the schedule and clutter curriculum of its 8,000 steps), three
runs of the picture loop on made-up pictures (plain; RandAugment, mixing, ramp, patch dropout and
mimetic start; bf16) and 12 steps of the page's run on a tiny model. One torch thread makes the
arithmetic repeatable; the tolerance is 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_explain.imagefolder import ImageDataset, Split
from vit_explain.training import Callback, ImageFolderSource, TrainConfig, default_config, evaluate_split, train

DATA = Path(__file__).parent / "data"


class Recorder(Callback):
    def __init__(self):
        self.loss, self.accuracy = [], []

    def on_step(self, step, loss, accuracy, lr):
        self.loss.append(loss)
        self.accuracy.append(accuracy)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_shapes_recipe_gives_the_losses_recorded_before_the_refactor(one_thread):
    from vit_explain.train import parse
    from vit_explain.training.recipes import shapes_setup

    reference = json.loads((DATA / "shapes_recipe_first_losses.json").read_text())
    args = parse(["--recipe", "shapes"])  # the command line's own reading of the recipe
    model_config, source, config = shapes_setup(args)
    assert (config.steps, config.batch_size, config.lr, config.warmup_steps) == (8000, 64, 1e-3, 200)
    recorder = Recorder()
    model = train(model_config, source, config, device="cpu", stop_after_steps=reference["steps"], prefetch=True,
                  log=lambda _: None, callbacks=[recorder]).model
    np.testing.assert_allclose(recorder.loss, reference["loss"], rtol=0, atol=1e-6)
    assert recorder.accuracy == reference["accuracy"]
    assert float(model.classifier.weight.detach().double().sum()) == pytest.approx(reference["classifier_weight_sum"], abs=1e-6)


def _toy_data() -> ImageDataset:
    """Two classes (a red or a blue square on dark noise), made here exactly as when the references were recorded."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, 16, 16, 3), dtype=np.uint8)
        for i, label in enumerate(labels):
            y, x = rng.integers(0, 10, size=2)
            images[i, y : y + 6, x : x + 6] = (230, 40, 40) if label else (40, 40, 230)
        return Split(images, labels.astype(np.int64))

    return ImageDataset(split(48), split(16), ["blue", "red"], "toy", False)


@pytest.mark.parametrize("case", ["plain", "all_options", "bf16"])
def test_the_picture_loop_gives_the_losses_recorded_before_the_refactor(case, one_thread):
    reference = json.loads((DATA / "training_loop_reference_losses.json").read_text())[f"images_{case}"]
    old = dict(reference["settings"])  # the old train_images keywords, its defaults filled in below
    mimetic = old.pop("mimetic", False)
    config = TrainConfig(label_smoothing=0.1, lr_floor=0.0, attention_init="mimetic" if mimetic else "normal", **old)
    model_config = default_config(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2).replace(id2label={0: "blue", 1: "red"}, num_labels=2)
    data = _toy_data()
    recorder = Recorder()
    history = train(model_config, ImageFolderSource(data), config, device="cpu", log=lambda _: None,
                    callbacks=[recorder], check=lambda m: {"top1": evaluate_split(m, data.test, 2)["top1"]}).history
    np.testing.assert_allclose(recorder.loss, reference["loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in history], reference["epoch_loss"], rtol=0, atol=1e-6)
    assert [r["top1"] for r in history] == reference["held_out_top1"]


def test_the_page_run_gives_the_losses_recorded_before_the_refactor():
    from vit_explain import trainer
    from vit_explain.synthetic import CLASS_NAMES

    reference = json.loads((DATA / "training_loop_reference_losses.json").read_text())["page_shapes"]
    settings = trainer.TrainSettings(max_steps=12, max_seconds=600.0, snapshot_every=5)
    model = trainer.build_model(default_config(**reference["config"]), CLASS_NAMES)
    run = trainer.TrainingRun(model, trainer.ShapesData(32, settings=settings), settings, pool=trainer.SlotPool(1),
                              abandon_after_s=600.0, activity=trainer.PageActivity())  # a run on one torch thread
    run.start()
    run.join(120)
    status = run.status()
    assert status.reason == "steps", status
    np.testing.assert_allclose(status.train_loss, reference["loss"], rtol=0, atol=1e-6)
    assert status.train_accuracy == reference["accuracy"]
    assert [s.step for s in status.snapshots] == reference["snapshot_steps"]
    np.testing.assert_allclose([s.held_out_loss for s in status.snapshots], reference["held_out_loss"], rtol=0, atol=1e-6)
    assert [s.held_out_accuracy for s in status.snapshots] == reference["held_out_accuracy"]


def test_the_shapes_command_resumes_where_it_stopped(tmp_path, one_thread, capsys):
    """Stopped after 15 of 30 steps and run again, the shapes command ends with an uninterrupted run's weights."""
    from safetensors.torch import load_file

    from vit_explain.train import main

    tiny = ["--recipe", "shapes", "--steps", "30", "--batch-size", "16", "--image-size", "32", "--patch-size", "8",
            "--hidden-size", "32", "--layers", "1", "--heads", "2", "--eval-every", "0", "--eval-n", "16", "--threads", "1"]
    assert main(tiny + ["--out", str(tmp_path / "a"), "--stop-after-steps", "15"]) == 0
    assert "stopped after step 15 of 30" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["train_state.pt"]
    assert main(tiny + ["--out", str(tmp_path / "a")]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(tiny + ["--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "a" / "train_state.pt").exists()
    resumed, whole = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert torch.equal(resumed[name], whole[name]), name
