"""The shipped shapes model (assets/models/shapes) and the training code that made it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_explain import ViTForImageClassification
from vit_explain.synthetic import CLASS_NAMES, sample
from vit_explain.train import (
    EVAL_SEED,
    cls_rollout,
    default_config,
    evaluate,
    images_to_pixel_values,
    learning_rate,
    load_model,
    make_optimizer,
    train_step,
)

MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "models" / "shapes"
# Fresh images: neither the training batches (seed sequences [seed, step]) nor the release check (12345).
TEST_SEED = 424242


@pytest.fixture(scope="module")
def ours():
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def fresh():
    return sample(200, seed=TEST_SEED)


# --------------------------------------------------------------------------- the files


def test_checkpoint_files_are_small_and_complete():
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 10 * 2**20
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "vit"
    assert config["architectures"] == ["ViTForImageClassification"]
    assert [config["id2label"][str(i)] for i in range(len(CLASS_NAMES))] == CLASS_NAMES
    assert config["image_size"] // config["patch_size"] >= 8  # at least an 8x8 patch grid
    pre = json.loads((MODEL_DIR / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": config["image_size"], "width": config["image_size"]}
    assert pre["resample"] == 2 and pre["do_rescale"] and pre["do_normalize"]
    assert pre["rescale_factor"] == pytest.approx(1 / 255)
    assert pre["image_mean"] == [0.5, 0.5, 0.5] and pre["image_std"] == [0.5, 0.5, 0.5]


def test_same_logits_as_transformers(ours, fresh):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.ViTForImageClassification.from_pretrained(str(MODEL_DIR)).eval()
    assert theirs.config.id2label == dict(enumerate(CLASS_NAMES))
    x = images_to_pixel_values(fresh[0][:16])
    with torch.no_grad():
        a = ours(x).logits
        b = theirs(pixel_values=x).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_our_normalisation_is_the_checkpoints_image_processor(fresh):
    transformers = pytest.importorskip("transformers")
    processor = transformers.ViTImageProcessorPil.from_pretrained(str(MODEL_DIR))
    images = fresh[0][:4]
    theirs = processor(images=list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(images_to_pixel_values(images), theirs, atol=1e-6, rtol=0)


def test_the_project_loader_reads_it_too(ours, fresh):
    from vit_explain.weights import load_checkpoint

    other = load_checkpoint(str(MODEL_DIR))
    x = images_to_pixel_values(fresh[0][:8])
    with torch.no_grad():
        torch.testing.assert_close(other(x).logits, ours(x).logits)


# --------------------------------------------------------------------------- what it promises


@pytest.mark.parametrize("seed", [EVAL_SEED, TEST_SEED])
def test_accuracy_and_rollout_on_1000_fresh_images(ours, seed):
    """The issue's promise, measured as it states it: 1,000 fresh pictures, >= 97% and >= half the rollout.

    Measured here (python -m vit_explain.train --evaluate assets/models/shapes, ~3 s): seed 12345 98.9% and
    0.616, seed 424242 99.6% and 0.618. 8 classes, so chance is 12.5%; a uniform rollout puts
    about 0.3 of its mass on the object's patches.
    """
    metrics = evaluate(ours, n=1000, seed=seed)
    assert metrics["accuracy"] >= 0.97
    assert metrics["rollout_on_object"] >= 0.5


def test_rollout_beats_the_uniform_baseline(ours, fresh):
    """The object's patches get far more than their share of the rollout (the share is ~0.3)."""
    images, _, boxes = fresh
    with torch.no_grad():
        out = ours(images_to_pixel_values(images), output_attentions=True)
    mass = cls_rollout(out.attentions)  # [200, 64]
    grid = ours.config.image_size // ours.config.patch_size
    edges = np.arange(grid + 1) * ours.config.patch_size
    share, got, peak_on_object = [], [], []
    for m, (x0, y0, x1, y1) in zip(mass.numpy(), boxes):
        cols = (edges[:-1] < x1) & (edges[1:] > x0)
        rows = (edges[:-1] < y1) & (edges[1:] > y0)
        touching = (rows[:, None] & cols[None, :]).ravel()  # row-major, like the tokens
        share.append(touching.mean())
        got.append(m[touching].sum())
        peak_on_object.append(touching[m.argmax()])
    assert np.mean(got) > 1.4 * np.mean(share)
    # the single most attended patch lies on the object in most images
    assert np.mean(peak_on_object) > 0.7


# --------------------------------------------------------------------------- the training code


def test_cls_rollout_multiplies_layers_in_order():
    # Three tokens: CLS, p1, p2. Layer 1: p1 looks only at p2. Layer 2: CLS looks only at p1.
    layer1 = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 1]])
    layer2 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1]])
    as_probs = lambda a: a[None, None].repeat(1, 2, 1, 1)  # [B=1, H=2, T, T]  # noqa: E731
    rollout = cls_rollout([as_probs(layer1), as_probs(layer2)])
    # CLS keeps half of itself and passes half to p1, which (after layer 1) is half p1, half p2.
    torch.testing.assert_close(rollout, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(cls_rollout([as_probs(layer2)]), torch.tensor([[1.0, 0.0]]))


def test_cls_rollout_agrees_with_the_analysis_module(ours, fresh):
    """The app draws rollout with vit_explain.analysis; the release check must measure the same thing."""
    from vit_explain.analysis import attention_rollout, cls_rollout_map

    with torch.no_grad():
        out = ours(images_to_pixel_values(fresh[0][:4]), output_attentions=True)
    grid = ours.config.image_size // ours.config.patch_size
    theirs = cls_rollout_map(attention_rollout([a.numpy() for a in out.attentions]), grid)
    np.testing.assert_allclose(cls_rollout(out.attentions).numpy(), theirs.reshape(4, -1), atol=1e-5)


def test_learning_rate_warms_up_then_decays():
    lrs = [learning_rate(s, 100, 1e-3, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.05 * 1e-3


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    config = default_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    model = ViTForImageClassification(config)
    optimizer = make_optimizer(model, lr=2e-3)
    images, labels, _ = sample(32, seed=5, image_size=32)
    x, y = images_to_pixel_values(images), torch.from_numpy(labels)

    def loss_now():
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x).logits, y).item()

    before = loss_now()
    for _ in range(5):
        loss, accuracy = train_step(model, optimizer, x, y)
        assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert loss_now() < before - 0.05


def test_training_is_deterministic_for_a_seed():
    from vit_explain.train import train

    config = default_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    runs = [train(config, steps=3, batch_size=8, warmup=1, seed=3, log_every=0)[0] for _ in range(2)]
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    other = train(config, steps=3, batch_size=8, warmup=1, seed=4, log_every=0)[0]
    assert not torch.equal(other.classifier.weight, runs[0].classifier.weight)
