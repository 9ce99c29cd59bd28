"""Training on real pictures: the ImageFolder reader, the augmentation, the loop and the command line.

The pictures are made here (two classes a small ViT tells apart in a few steps: a red or a blue
square somewhere on dark noise), written as PNG files in the ImageFolder layout, as a
folder and as a .tar.gz, so nothing depends on the CIFAR-10 archive.
"""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit_explain.imagefolder import load_image_folder
from vit_explain.augment import crop_and_flip
from vit_explain.train import main
from vit_explain.training import ImageFolderSource, TrainConfig, default_config, evaluate_split, train

CLASSES = ["blue", "red"]


def _picture(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)  # dark noise
    y, x = rng.integers(0, size - 6, size=2)
    image[y : y + 6, x : x + 6] = (230, 40, 40) if label else (40, 40, 230)
    return image


def _write_folder(root: Path, per_class: dict[str, int], seed: int = 0, split_folders: bool = True) -> None:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = (root / split / name) if split_folders else (root / name)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_picture(label, rng)).save(folder / f"{split}{i:04d}.png")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "toy"
    _write_folder(root, {"train": 96, "test": 32})
    return root


@pytest.fixture(scope="module")
def data_tar(data_dir: Path) -> Path:
    path = data_dir.parent / "toy.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(data_dir, arcname="toy")
    return path


def run_picture_loop(config, data, *, device="cpu", state_path=None, stop_after_epochs=None, log=None, **settings):
    """A run of the picture loop: TrainConfig's fields as keywords, with the picture recipe's defaults below."""
    settings = {"label_smoothing": 0.1, "lr_floor": 0.0, "warmup_epochs": 2.0, "batch_size": 128, **settings}
    source = ImageFolderSource(data)
    per_epoch = source.steps_per_epoch(settings["batch_size"])
    stop = None if stop_after_epochs is None else stop_after_epochs * per_epoch
    model, history, _, _ = train(config, source, TrainConfig(**settings), device=device, state_path=state_path,
                                 stop_after_steps=stop, log=log or (lambda _: None))
    return model, history


def _tiny_config(num_labels: int = 2):
    return default_config(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2).replace(
        id2label=dict(enumerate(CLASSES)), num_labels=num_labels
    )


# --------------------------------------------------------------------------- reading


def test_folder_and_archive_read_the_same(data_dir, data_tar):
    a, b = load_image_folder(data_dir), load_image_folder(data_tar)
    assert a.classes == b.classes == CLASSES
    assert a.train.images.shape == (192, 16, 16, 3) and a.train.images.dtype == np.uint8
    assert a.test.images.shape == (64, 16, 16, 3)
    assert np.array_equal(a.train.images, b.train.images) and np.array_equal(a.train.labels, b.train.labels)
    assert np.array_equal(a.test.labels, b.test.labels)
    assert np.bincount(a.train.labels).tolist() == [96, 96]
    assert not a.held_out_from_train
    # a label is the class folder the picture came from: "red" pictures are redder than blue
    red = a.train.images[a.train.labels == 1].mean(axis=(0, 1, 2))
    blue = a.train.images[a.train.labels == 0].mean(axis=(0, 1, 2))
    assert red[0] > red[2] + 10 and blue[2] > blue[0] + 10


def test_one_folder_is_split_deterministically(tmp_path):
    _write_folder(tmp_path / "flat", {"x": 100}, split_folders=False)
    first = load_image_folder(tmp_path / "flat", held_out_fraction=0.2)
    second = load_image_folder(tmp_path / "flat", held_out_fraction=0.2)
    assert first.held_out_from_train
    assert len(first.train) + len(first.test) == 200
    assert 20 <= len(first.test) <= 60  # about 20 %, decided by a hash of each path
    assert np.array_equal(first.test.images, second.test.images)
    # no picture is in both parts
    train_rows = {row.tobytes() for row in first.train.images}
    assert not any(row.tobytes() in train_rows for row in first.test.images)


def test_limit_resize_and_errors(data_dir, tmp_path):
    small = load_image_folder(data_dir, limit_per_class=5, image_size=8)
    assert small.train.images.shape == (10, 8, 8, 3) and small.test.images.shape == (10, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="no data at"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="ImageFolder layout"):
        load_image_folder(tmp_path / "empty")


# --------------------------------------------------------------------------- augmentation


def test_augment_crops_and_flips_windows_of_the_padded_picture():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 12, 12, 3), dtype=np.uint8)
    out = crop_and_flip(images, np.random.default_rng(1), pad=2)
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    flips = 0
    for i in range(len(images)):
        windows = [padded[i, y : y + 12, x : x + 12] for y in range(5) for x in range(5)]
        plain = any(np.array_equal(out[i], w) for w in windows)
        flipped = any(np.array_equal(out[i], w[:, ::-1]) for w in windows)
        assert plain or flipped, f"picture {i} is not a (flipped) crop"
        flips += flipped and not plain
    assert 15 <= flips <= 49  # about half are flipped
    assert not np.array_equal(out, images)  # something moved
    # no padding: only flips
    same = crop_and_flip(images, np.random.default_rng(1), pad=0)
    assert all(np.array_equal(s, o) or np.array_equal(s, o[:, ::-1]) for s, o in zip(same, images))


# --------------------------------------------------------------------------- the loop


def test_training_learns_and_resumes_exactly(data_dir, tmp_path):
    data = load_image_folder(data_dir)
    config = _tiny_config()
    untrained = evaluate_split(_fresh(config), data.test, 2)
    kwargs = dict(epochs=6, batch_size=32, lr=3e-3, warmup_epochs=1, seed=5, device="cpu")
    model, history = run_picture_loop(config, data, **kwargs)
    assert [r["epoch"] for r in history] == list(range(1, 7))
    assert history[-1]["loss"] < history[0]["loss"] - 0.1
    trained = evaluate_split(model, data.test, 2)
    assert trained["top1"] >= 0.85 and trained["top1"] >= untrained["top1"] + 0.25
    assert sum(map(sum, trained["confusion"])) == len(data.test)
    assert trained["per_class"] == pytest.approx(
        [row[i] / sum(row) for i, row in enumerate(trained["confusion"])]
    )

    # interrupted after 2 epochs, then started again with the same arguments: the same weights
    state = tmp_path / "state.pt"
    partial, partial_history = run_picture_loop(config, data, state_path=state, stop_after_epochs=2, **kwargs)
    assert len(partial_history) == 2 and state.exists()
    resumed, resumed_history = run_picture_loop(config, data, state_path=state, **kwargs)
    assert [r["epoch"] for r in resumed_history] == list(range(1, 7))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _fresh(config):
    from vit_explain import ViTForImageClassification

    model = ViTForImageClassification(config)
    model.init_weights(seed=5)
    return model.eval()


def test_command_line_writes_a_checkpoint_transformers_reads(data_tar, tmp_path, capsys):
    out = tmp_path / "model"
    threads = torch.get_num_threads()  # the command sets torch's process-wide thread count: put it back after
    try:
        code = _run_main(out, data_tar)
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    _check_outputs(out, tmp_path, capsys)


def _run_main(out, data_tar):
    return main([
        "--recipe", "cifar10", "--data", str(data_tar), "--out", str(out), "--epochs", "2", "--image-size", "16",
        "--patch-size", "4", "--hidden-size", "32", "--layers", "1", "--heads", "2", "--intermediate-size", "64",
        "--batch-size", "64", "--threads", "1", "--log-every", "2",
    ])


def _check_outputs(out, tmp_path, capsys):
    printed = capsys.readouterr().out
    assert "ETA" in printed and "held-out top-1 on all 64 pictures" in printed
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "evaluation.json", "confusion_matrix.csv"} <= names
    assert "train_state.pt" not in names  # the resumable state is removed once the run is complete
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["classes"] == CLASSES and evaluation["n"] == 64
    csv = (out / "confusion_matrix.csv").read_text().splitlines()
    assert csv[0].endswith("blue,red") and len(csv) == 3

    transformers = pytest.importorskip("transformers")
    from vit_explain.preprocess import load_image, to_pixel_values
    from vit_explain.weights import load_checkpoint

    ours = load_checkpoint(out)
    theirs = transformers.ViTForImageClassification.from_pretrained(str(out)).eval()
    processor = transformers.ViTImageProcessor.from_pretrained(str(out))
    picture = Image.fromarray(_picture(1, np.random.default_rng(9)))
    path = tmp_path / "p.png"
    picture.save(path)
    x_ours = to_pixel_values(load_image(path), ours.preprocess_spec)
    x_theirs = processor(images=picture, return_tensors="pt")["pixel_values"]
    assert torch.allclose(x_ours, x_theirs, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(ours(x_ours).logits, theirs(x_theirs).logits, atol=1e-5)
    assert theirs.config.id2label == {0: "blue", 1: "red"}


def test_bf16_autocasts_the_products_keeps_float32_weights_and_still_learns(data_dir):
    from vit_explain import ViTForImageClassification
    from vit_explain.training import make_optimizer, train_step

    data = load_image_folder(data_dir)
    config = _tiny_config()
    model = _fresh(config)
    seen = []
    model.vit.encoder.layer[0].intermediate.dense.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y = torch.tensor([0, 1] * 4)
    optimizer = make_optimizer(model)
    for precision in ("bf16", "fp32"):
        loss, _ = train_step(model, optimizer, x, y, precision=precision)
        assert np.isfinite(loss)
    assert seen == [torch.bfloat16, torch.float32]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="precision"):
        train_step(model, optimizer, x, y, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        run_picture_loop(config, data, epochs=1, precision="half")

    kwargs = dict(epochs=6, batch_size=32, lr=3e-3, warmup_epochs=1, seed=5, device="cpu")
    model, _ = run_picture_loop(config, data, precision="bf16", **kwargs)
    assert isinstance(model, ViTForImageClassification)
    assert evaluate_split(model, data.test, 2)["top1"] >= 0.85


# --------------------------------------------------------------------------- patch dropout


def test_forward_keeping_every_patch_is_the_model_and_a_subset_is_those_tokens_alone():
    from vit_explain.training import forward_keeping

    config = _tiny_config()  # 16 px, patch 4: 16 patches
    model = _fresh(config)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        everything = forward_keeping(model, x, torch.arange(16).repeat(3, 1))
        assert torch.allclose(everything, model(x).logits, atol=1e-6)
        # keeping patches (2, 5, 9) of picture 0 = running the encoder on CLS and exactly those three tokens
        keep = torch.tensor([[2, 5, 9], [0, 1, 15], [3, 4, 7]])
        logits = forward_keeping(model, x, keep)
        tokens = model.vit.embeddings(x[:1])
        by_hand = model.vit.encoder(tokens[:, [0, 3, 6, 10]])[0]
        by_hand = model.classifier(model.vit.layernorm(by_hand)[:, 0])
        assert torch.allclose(logits[:1], by_hand, atol=1e-6)
        assert not torch.allclose(logits, everything, atol=1e-3)  # fewer patches, other logits


def test_patches_to_keep_draws_distinct_sorted_patches_per_picture():
    from vit_explain.training import patches_to_keep

    rng = np.random.default_rng(0)
    keep = patches_to_keep(rng, 500, 64, 0.5)
    assert keep.shape == (500, 32) and keep.dtype == torch.int64
    rows = keep.numpy()
    assert (np.diff(rows, axis=1) > 0).all() and rows.min() >= 0 and rows.max() <= 63
    counts = np.bincount(rows.ravel(), minlength=64)  # every patch kept about half the time
    assert counts.min() > 180 and counts.max() < 320, counts
    assert len({tuple(r) for r in rows}) == 500
    assert patches_to_keep(rng, 4, 64, 1.0) is None
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            patches_to_keep(rng, 4, 64, bad)


def test_training_with_half_the_patches_learns_is_deterministic_and_ends_on_all_patches(data_dir, monkeypatch):
    import vit_explain.training.loop as train_module  # the loop calls these

    data = load_image_folder(data_dir)
    config = _tiny_config()
    kwargs = dict(epochs=6, batch_size=32, lr=3e-3, warmup_epochs=1, seed=5, device="cpu",
                  keep_patches=0.5, full_epochs=1)
    seen, original = [], train_module.train_step

    def spy(*args, keep_patches=None, **kw):
        seen.append(None if keep_patches is None else tuple(keep_patches.shape))
        return original(*args, keep_patches=keep_patches, **kw)

    monkeypatch.setattr(train_module, "train_step", spy)
    model, history = run_picture_loop(config, data, **kwargs)
    steps = len(seen) // 6
    assert set(seen[: 5 * steps]) == {(32, 8)} and set(seen[5 * steps :]) == {None}  # 8 of 16 patches, then all
    assert history[-1]["loss"] < history[0]["loss"] - 0.1
    assert evaluate_split(model, data.test, 2)["top1"] >= 0.85
    again, _ = run_picture_loop(config, data, **kwargs)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="fraction"):
        run_picture_loop(config, data, epochs=1, keep_patches=0.0)


def test_training_with_rand_augment_and_mixing_learns_from_soft_labels_and_resumes_exactly(data_dir, tmp_path, monkeypatch):
    import vit_explain.training.loop as train_module  # the loop calls these

    data = load_image_folder(data_dir)
    config = _tiny_config()
    kwargs = dict(epochs=6, batch_size=32, lr=3e-3, warmup_epochs=1, seed=5, device="cpu",
                  rand_augment_ops=2, rand_augment_magnitude=9, mix=1.0)
    targets_seen, original = [], train_module.train_step

    def spy(*args, targets=None, **kw):
        targets_seen.append(targets)
        return original(*args, targets=targets, **kw)

    monkeypatch.setattr(train_module, "train_step", spy)
    model, history = run_picture_loop(config, data, **kwargs)
    assert all(t is not None and t.shape == (32, 2) for t in targets_seen)  # every batch mixed (mix=1)
    assert all(torch.allclose(t.sum(-1), torch.ones(32)) for t in targets_seen)
    assert any(((t > 0.05) & (t < 0.95)).any() for t in targets_seen)  # soft, not one-hot
    assert history[-1]["loss"] < history[0]["loss"] - 0.05
    assert evaluate_split(model, data.test, 2)["top1"] >= 0.8

    state = tmp_path / "state.pt"
    run_picture_loop(config, data, state_path=state, stop_after_epochs=3, **kwargs)
    resumed, _ = run_picture_loop(config, data, state_path=state, **kwargs)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_augmentation_ramp_grows_the_strength_epoch_by_epoch_to_the_given_values(data_dir, monkeypatch):
    import vit_explain.training.loop as train_module  # the loop calls these

    data = load_image_folder(data_dir)
    magnitudes, mixed, original = [], [], train_module.rand_augment

    def spy_augment(images, rng, n, magnitude):
        magnitudes.append(magnitude)
        return original(images, rng, n, magnitude)

    def spy_step(*args, targets=None, **kw):
        mixed.append(targets is not None)
        return 0.0, 0.0

    monkeypatch.setattr(train_module, "rand_augment", spy_augment)
    monkeypatch.setattr(train_module, "train_step", spy_step)
    run_picture_loop(_tiny_config(), data, epochs=4, batch_size=32, seed=5, device="cpu",
                 rand_augment_ops=2, rand_augment_magnitude=12, mix=1.0, augment_ramp=True)
    steps = len(magnitudes) // 4
    assert magnitudes == pytest.approx([3.0] * steps + [6.0] * steps + [9.0] * steps + [12.0] * steps)
    assert all(mixed[-steps:])  # the last epoch mixes every batch
    assert sum(mixed[:steps]) < steps  # the first mixes about a quarter of them
    with pytest.raises(ValueError, match="magnitude"):  # refused at the start, not when the ramp gets there
        run_picture_loop(_tiny_config(), data, epochs=4, rand_augment_ops=2, rand_augment_magnitude=40,
                     augment_ramp=True)


# --------------------------------------------------------------------------- mimetic start, training kernel


def _mean_self_and_neighbour_attention(model, x) -> tuple[float, float]:
    """Mean attention a patch pays itself and its 4-neighbours, over all layers' heads, patches only."""
    with torch.no_grad():
        probs = torch.stack(model(x, output_attentions=True).attentions)  # [L, B, H, T, T]
    patches = probs[..., 1:, 1:]
    g = model.config.grid_size
    rows, cols = np.divmod(np.arange(g * g), g)
    near = torch.from_numpy((np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])) == 1)
    return patches.diagonal(dim1=-2, dim2=-1).mean().item(), patches[..., near].mean().item()


def test_mimetic_start_makes_attention_local_and_value_output_a_negative_identity():
    from vit_explain.training import init_mimetic_attention, init_sincos_positions

    config = default_config(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    normal = _fresh(config)
    init_sincos_positions(normal, x)
    mimetic = _fresh(config)
    init_mimetic_attention(mimetic, seed=1)
    init_sincos_positions(mimetic, x)
    assert mimetic.state_dict().keys() == normal.state_dict().keys()  # same model, same checkpoint keys
    uniform = 1 / (config.num_patches + 1)
    self_normal, near_normal = _mean_self_and_neighbour_attention(normal, x)
    self_mimetic, near_mimetic = _mean_self_and_neighbour_attention(mimetic, x)
    assert abs(self_normal - uniform) < 0.2 * uniform  # from noise: about uniform attention
    assert self_mimetic > 5 * uniform  # a token looks at itself most,
    assert near_mimetic > 1.15 * near_normal  # and at its neighbours (alike in position) more than from noise
    d = config.hidden_size
    for layer in mimetic.vit.encoder.layer:
        attn, out = layer.attention.attention, layer.attention.output.dense
        vo = attn.value.weight.T @ out.weight.T  # what x W_v^T W_o^T multiplies x by
        noise = vo + 0.4 * torch.eye(d)
        assert abs(vo.diagonal().mean().item() + 0.4) < 0.05
        assert 0.8 < noise.std().item() * d**0.5 / 0.4 < 1.2  # 0.4 Z, Z of entries N(0, 1/d)
        for h in range(config.num_attention_heads):  # each head's q-k product: rank head_dim, mostly its diagonal
            rows = slice(h * config.head_dim, (h + 1) * config.head_dim)
            qk = attn.query.weight[rows].T @ attn.key.weight[rows]
            assert torch.linalg.matrix_rank(qk).item() == config.head_dim
            assert qk.diagonal().mean().item() > 3 * (qk - torch.diag(qk.diagonal())).abs().mean().item()
        assert all(b.abs().max() == 0 for b in (attn.query.bias, attn.key.bias, attn.value.bias, out.bias))
    again = _fresh(config)
    init_mimetic_attention(again, seed=1)
    init_sincos_positions(again, x)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), mimetic.state_dict().values()))


def test_bf16_training_steps_use_the_plain_attention_kernel_on_cpu_with_the_same_numbers():
    from torch.profiler import ProfilerActivity, profile

    from vit_explain.training import train_step

    config = _tiny_config()
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y = torch.tensor([0, 1] * 4)

    def kernels_and_grads(precision):
        model = _fresh(config)
        with profile(activities=[ProfilerActivity.CPU]) as prof:  # lr 0: the step leaves its gradients to read
            loss, _ = train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, clip_norm=None,
                                 precision=precision)
        fused = any("flash_attention" in event.key for event in prof.key_averages())
        return fused, loss, [p.grad.clone() for p in model.parameters()]

    fused_bf16, loss_bf16, grads_bf16 = kernels_and_grads("bf16")
    fused_fp32, loss_fp32, grads_fp32 = kernels_and_grads("fp32")
    assert not fused_bf16 and fused_fp32  # float32 (the shapes recipe) keeps PyTorch's fused kernel
    # the same bf16 step with the fused kernel: the same loss and gradients, to bf16's precision
    reference = _fresh(config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = reference(x).logits
    expected = torch.nn.functional.cross_entropy(logits.float(), y)
    expected.backward()
    assert abs(loss_bf16 - expected.item()) < 1e-2 and abs(loss_bf16 - loss_fp32) < 2e-2
    theirs = torch.cat([p.grad.flatten() for p in reference.parameters()])
    ours = torch.cat([g.flatten() for g in grads_bf16])
    assert (ours - theirs).norm() < 0.05 * theirs.norm()  # bf16 rounding, not another function
    assert (torch.cat([g.flatten() for g in grads_fp32]) - theirs).norm() < 0.1 * theirs.norm()


def test_a_second_cycle_starts_from_saved_weights_and_refuses_another_shape(data_dir, data_tar, tmp_path, capsys):
    """``--init-from``: the run's first steps start from the saved model (its held-out accuracy, not a fresh
    model's), a saved model of another architecture or other classes is refused by name, and an interrupted
    second cycle resumes from its own state rather than starting over from the saved weights."""
    from vit_explain.training.recipes import start_from
    from vit_explain.weights import save_checkpoint

    data = load_image_folder(data_dir)
    config = _tiny_config()
    first, _ = run_picture_loop(config, data, epochs=6, batch_size=32, lr=3e-3, warmup_epochs=1, seed=5)
    first_dir = tmp_path / "first"
    save_checkpoint(first, first_dir)
    first_acc = evaluate_split(first, data.test, 2)["top1"]
    assert first_acc >= 0.85

    # zero steps of a second cycle (stopped before its first step) give the saved weights exactly
    started = _fresh(config)
    start_from(started, first_dir, log=lambda _: None)
    for (name, a), b in zip(first.state_dict().items(), started.state_dict().values()):
        assert torch.equal(a, b), name
    # a second cycle at a low learning rate keeps what the first learnt; the same cycle from fresh weights does not
    kwargs = dict(epochs=1, batch_size=32, lr=1e-4, warmup_epochs=0.5, seed=6)
    source = ImageFolderSource(data)
    lines = []
    second = train(config, source, TrainConfig(label_smoothing=0.1, lr_floor=0.0, **kwargs), init_from=first_dir,
                   log=lines.append).model
    fresh = train(config, source, TrainConfig(label_smoothing=0.1, lr_floor=0.0, **kwargs), log=lambda _: None).model
    assert any(f"started from the weights in {first_dir}" in line for line in lines)
    assert evaluate_split(second, data.test, 2)["top1"] >= first_acc - 0.05
    assert evaluate_split(fresh, data.test, 2)["top1"] < first_acc - 0.2

    # another architecture, or other classes: refused, naming what differs
    wider = _fresh(config.replace(hidden_size=48, intermediate_size=192))
    with pytest.raises(ValueError, match=r"hidden_size: 32 in .*, 48 here"):
        start_from(wider, first_dir)
    renamed = _fresh(config.replace(id2label={0: "cat", 1: "dog"}))
    with pytest.raises(ValueError, match="classes"):
        start_from(renamed, first_dir)

    # the command line: an interrupted second cycle resumes from its own state, not from --init-from again
    out = tmp_path / "second"
    argv = ["--recipe", "cifar10-cycle2", "--data", str(data_tar), "--init-from", str(first_dir), "--out", str(out),
            "--epochs", "3", "--image-size", "16", "--patch-size", "4", "--hidden-size", "32", "--layers", "2",
            "--heads", "2", "--intermediate-size", "128", "--batch-size", "32", "--threads", "1", "--log-every", "100",
            "--precision", "fp32", "--rand-augment-ops", "0", "--mix", "0", "--keep-patches", "1"]
    threads = torch.get_num_threads()
    try:
        assert main(argv + ["--stop-after-epochs", "1"]) == 0
        assert (out / "train_state.pt").exists() and not (out / "model.safetensors").exists()
        capsys.readouterr()
        assert main(argv) == 0
        assert "resumed from" in capsys.readouterr().out  # the state's epoch 1, not the saved weights' start again
        uninterrupted = tmp_path / "uninterrupted"
        assert main([a if a != str(out) else str(uninterrupted) for a in argv]) == 0
    finally:
        torch.set_num_threads(threads)
    from vit_explain.weights import load_checkpoint

    a, b = load_checkpoint(out).state_dict(), load_checkpoint(uninterrupted).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
