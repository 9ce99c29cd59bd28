"""Training a fresh model from the command line: :func:`train`, its progress lines, and the named recipes.

:func:`train` starts a fresh model (:func:`~vit_explain.training.starts.fresh_model`), resumes
from a saved state when there is one, and runs :func:`~vit_explain.training.loop.train_loop`
with a progress line (rate and ETA) and a record at every report point (each epoch, or every
``report_every`` steps): mean training loss and accuracy since the last one, the learning rate,
time, and a held-out check. :func:`run_shapes` and :func:`run_pictures` are what
``python -m vit_explain.train`` does with its arguments (see :mod:`vit_explain.train`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..config import ViTConfig
from ..model import ViTForImageClassification
from .config import TrainConfig
from .data import DataSource, ImageFolderSource, ShapesStream
from .evaluation import EVAL_SEED, evaluate, evaluate_split, write_evaluation
from .loop import Callback, Checkpoint, StopAt, train_loop
from .starts import default_config, fresh_model
from .steps import make_optimizer

__all__ = ["RECIPES", "Progress", "Trained", "train", "shapes_setup", "run_shapes", "run_pictures"]

Log = Callable[[str], None]

#: Named recipes: their defaults reproduce the shipped models (assets/models/<name>/).
RECIPES: dict[str, dict] = {
    # The bundled shapes model: fresh synthetic batches every step (ShapesStream). What made the small
    # ViT learn in a CPU budget (each found by a run that stalled without it): objects brighter than
    # their background (see vit_explain.synthetic); clutter ramped in over the first fifth of the run;
    # position embeddings started at 2-D sine-cosine values rather than noise (about a quarter fewer
    # steps to the same accuracy); a narrow, shallow model (width 96, 4 layers) trained for more steps
    # rather than a wider, deeper one for fewer. 27 minutes wall-clock on an idle 2-core machine.
    "shapes": dict(
        out="assets/models/shapes", steps=8000, batch_size=64, lr=1e-3, weight_decay=0.05, warmup=200,
        label_smoothing=0.05, image_size=64, patch_size=8, hidden_size=96, layers=4, heads=4,
        intermediate_size=None, threads=1, eval_n=1000,
    ),
    # The CIFAR-10 model: a ViT-Lite-sized classic ViT (Hassani et al. 2021 use 7 layers of 256 for
    # CIFAR; this one is narrower to fit a 2-core CPU budget) with the standard crop + flip
    # augmentation, label smoothing 0.1, AdamW, linear warm-up then cosine decay to zero. Patch dropout
    # (half of the patches per step, every epoch) and PyTorch's plain attention kernel for the bf16 steps
    # (its backward is a third faster than the fused one on this CPU) fit 100 epochs into the 2 hours; the
    # attention weights start mimetic (Trockman & Kolter 2023), near the local patterns trained ViTs show.
    # On top of crop + flip, RandAugment (2 operations) and mixup / CutMix, both ramped up over the run to
    # magnitude 12 and 80% of the batches at the end: the same recipe without them learnt faster in its
    # first half and then memorised (training accuracy 88%, held-out 76%, from epoch 60 on); at full
    # strength from the first epoch (magnitude 9, every batch mixed) they held it back (47% held-out at
    # epoch 10, against 57%). The data path is the one the README documents for CIFAR-10.
    "cifar10": dict(
        out="assets/models/vit-cifar10", data="../shared/data/cifar10-jpeg.tar.gz", epochs=100, batch_size=128, lr=1e-3,
        weight_decay=0.05, warmup_epochs=2.0, label_smoothing=0.1, image_size=32, patch_size=4, hidden_size=192,
        layers=6, heads=3, intermediate_size=384, threads=0, precision="bf16", keep_patches=0.5, full_epochs=0,
        attention_init="mimetic", rand_augment_ops=2, rand_augment_magnitude=12, mix=0.8, augment_ramp="linear",
        eval_n=2000,
    ),
    # A second cosine cycle for the CIFAR-10 model (SGDR-style warm restart, Loshchilov & Hutter 2017):
    # it starts from the weights the "cifar10" recipe wrote (``--init-from``; by default the shipped
    # folder, which it then overwrites) because that run stopped rising only when its learning rate reached
    # zero. A lower peak (3e-4, a third of the first cycle's), a one-epoch warm-up, and the augmentation at
    # the strength the first cycle ended with, held for the whole cycle (no ramp). A new seed, so the
    # epochs' shuffles and augmentations are not the first cycle's again.
    "cifar10-cycle2": dict(
        out="assets/models/vit-cifar10", data="../shared/data/cifar10-jpeg.tar.gz", init_from="assets/models/vit-cifar10",
        seed=1, epochs=40, batch_size=128, lr=3e-4, weight_decay=0.05, warmup_epochs=1.0, label_smoothing=0.1,
        image_size=32, patch_size=4, hidden_size=192, layers=6, heads=3, intermediate_size=384, threads=0,
        precision="bf16", keep_patches=0.5, full_epochs=0, attention_init="mimetic", rand_augment_ops=2,
        rand_augment_magnitude=12, mix=0.8, augment_ramp="none", eval_n=2000,
    ),
}
# The last touch, from cycle 2's weights: cycle 2's settings but 3 short epochs at a low learning rate (5e-5,
# cosine to zero) on the pictures with only crop and flip (no RandAugment, no mixing) and every patch in every
# step, so the model's last steps see pictures like the ones it is tested on. Cycle 2 ended with a training
# accuracy of 47% on its mixed pictures against 79% held out: strongly regularised, with room to fit more.
RECIPES["cifar10-finish"] = dict(RECIPES["cifar10-cycle2"], seed=2, epochs=3, lr=5e-5, warmup_epochs=0.2,
                                 keep_patches=1.0, rand_augment_ops=0, mix=0.0)


class Progress(Callback):
    """A one-line progress report with rate and ETA: redrawn in place on a terminal, a line per ``every`` steps otherwise."""

    def __init__(self, total: int, *, every: int = 50, log: Log = print, start_step: int = 0,
                 per_epoch: int | None = None):
        self.total, self.every, self.log, self.per_epoch = total, every, log, per_epoch
        self.start_step = start_step
        self.started = time.perf_counter()
        self.tty = os.isatty(2)
        self.loss = self.accuracy = 0.0
        self.n = 0

    def eta(self, step: int) -> float:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        return elapsed / max(done, 1) * (self.total - step)

    def on_step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        self.loss, self.accuracy, self.n = self.loss + loss, self.accuracy + accuracy, self.n + 1
        where = f"epoch {(step - 1) // self.per_epoch + 1}/{self.total // self.per_epoch}  " if self.per_epoch else ""
        self.update(step, f"{where}loss {self.loss / self.n:.4f}  train acc {self.accuracy / self.n:.3f}  lr {lr:.2e}")

    def after_step(self, step: int) -> None:
        if not self.per_epoch and step % self.every == 0:  # a source without epochs: the mean since the last line
            self.on_epoch(0, step)

    def on_epoch(self, epoch: int, step: int) -> None:
        self.loss = self.accuracy = 0.0
        self.n = 0

    def update(self, step: int, text: str) -> None:
        if not (self.tty or step % self.every == 0 or step == self.total):
            return
        eta = self.eta(step)
        line = f"[{100 * step / self.total:5.1f}%] step {step}/{self.total}  {text}  ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s"
        if self.tty:
            sys.stderr.write("\r" + line[:160].ljust(160))
            sys.stderr.flush()
            if step % self.every == 0 or step == self.total:
                sys.stderr.write("\n")
        else:
            self.log(line)


class _Report(Callback):
    """One record (and log line) per report point: each epoch, or every ``every`` steps of a source without epochs."""

    def __init__(self, model, history: list[dict], *, total: int, per_epoch: int | None, every: int,
                 check: Callable[[torch.nn.Module], dict] | None, check_every: int, log: Log):
        self.model, self.history, self.total, self.per_epoch, self.every = model, history, total, per_epoch, every
        self.check, self.check_every, self.log = check, check_every, log
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.loss = self.accuracy = self.lr = 0.0
        self.n = 0

    def on_step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        self.loss, self.accuracy, self.n, self.lr = self.loss + loss, self.accuracy + accuracy, self.n + 1, lr

    def after_step(self, step: int) -> None:
        if not self.per_epoch and (step % self.every == 0 or step == self.total):
            self._report(step)

    def on_epoch(self, epoch: int, step: int) -> None:
        self._report(step)

    def _report(self, step: int) -> None:
        record: dict = dict(step=step)
        where = f"step {step}/{self.total}"
        if self.per_epoch:
            record["epoch"] = step // self.per_epoch
            where = f"epoch {record['epoch']}/{self.total // self.per_epoch}"
        record.update(loss=self.loss / max(1, self.n), train_accuracy=self.accuracy / max(1, self.n), lr=self.lr,
                      elapsed=time.perf_counter() - self.started, cpu=time.process_time() - self.cpu_started)
        line = f"{where}: loss {record['loss']:.4f}, train acc {record['train_accuracy']:.4f}"
        if self.check is not None and (step % self.check_every == 0 or step == self.total):
            checked = self.check(self.model)
            record.update(checked)
            line += ", " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                                     for k, v in checked.items())
        self.history.append(record)
        self.log(line + f"  ({record['elapsed']:.0f} s this session)")
        self.loss = self.accuracy = 0.0
        self.n = 0


class Trained(NamedTuple):
    """What :func:`train` gives back."""

    model: ViTForImageClassification  # eval mode, on the CPU
    history: list[dict]  # one record per report point, over all of the run's sessions
    steps: int  # steps done
    finished: bool  # False when stop_after_steps ended this call early (the saved state resumes it)


def train(model_config: ViTConfig, source: DataSource, config: TrainConfig, *, state_path: str | os.PathLike | None = None,
          device: str | None = None, stop_after_steps: int | None = None, report_every: int = 250,
          check: Callable[[torch.nn.Module], dict] | None = None, check_every: int | None = None, log: Log = print,
          log_every: int = 50, prefetch: bool = False, init_from: str | os.PathLike | None = None,
          callbacks: Sequence[Callback] = ()) -> Trained:
    """Train a fresh model on ``source`` as ``config`` says; returns it with its records (:class:`Trained`).

    ``init_from``: a saved model (a folder :func:`vit_explain.weights.load_checkpoint` reads) whose
    weights replace the fresh ones before the first step, for a further cycle of training; it must
    have ``model_config``'s architecture and classes, or :class:`ValueError` says what differs. A
    saved state to resume (``state_path``) wins over it.

    Records: one per epoch for a source with epochs, else one every ``report_every`` steps, each
    with ``check(model)``'s numbers every ``check_every`` steps (default: every record) and at the
    end. With ``state_path`` the run's state is saved there at every record
    (:class:`~vit_explain.training.loop.Checkpoint`) and a run started again with the same
    arguments resumes from it (the result equals an uninterrupted run's on CPU);
    ``stop_after_steps`` ends this call early, as an interruption would (the state is saved where it
    stopped, or for a source with epochs at the last epoch's end). CUDA is used when there is
    one (``device``). ``callbacks`` are called after the ones this function adds.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    probe = source.init_probe(config.seed) if config.position_init == "sincos" else None
    model = fresh_model(model_config, seed=config.seed, position_init=config.position_init,
                        attention_init=config.attention_init, probe=probe)
    if init_from is not None:
        start_from(model, init_from, log)
    model = model.to(device)
    optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = source.steps_per_epoch(config.batch_size)
    total = config.total_steps(per_epoch)
    history: list[dict] = []
    extra, callbacks = list(callbacks), []
    start = 0
    if state_path is not None:
        checkpoint = Checkpoint(state_path, model, optimizer, history, every=None if per_epoch else report_every)
        start = checkpoint.restore(device, per_epoch)
        if start:
            log(f"resumed from {state_path} after step {start}" + (f" (epoch {start // per_epoch})" if per_epoch else ""))
    if stop_after_steps is not None:
        callbacks.append(StopAt(start + stop_after_steps))
    c = model_config
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {c.num_hidden_layers} layers, width "
        f"{c.hidden_size}, {c.num_attention_heads} heads, MLP {c.intermediate_size}, {c.grid_size}x{c.grid_size} patches "
        f"of {c.patch_size}px; {describe(config, source, per_epoch)}; device {device}, {torch.get_num_threads()} threads")
    callbacks.append(Progress(total, every=log_every, log=log, start_step=start, per_epoch=per_epoch))
    check_every = check_every or (per_epoch or report_every)
    callbacks.append(_Report(model, history, total=total, per_epoch=per_epoch, every=report_every, check=check,
                             check_every=check_every, log=log))
    if state_path is not None:
        callbacks.append(checkpoint)  # after the record, so the saved history holds it
    callbacks += extra
    steps, finished = train_loop(model, optimizer, source, config, start_step=start, callbacks=callbacks,
                                 device=device, prefetch=prefetch)
    if not finished:
        if state_path is not None and steps > start and (not per_epoch or steps % per_epoch == 0):
            checkpoint.save(steps)
        where = f" (epoch {steps // per_epoch} of {total // per_epoch} done)" if per_epoch else ""
        log(f"stopped after step {steps} of {total}{where}; run the same command again to resume")
    model.eval()
    return Trained(model.cpu(), history, steps, finished)


def start_from(model: ViTForImageClassification, path: str | os.PathLike, log: Log = print) -> None:
    """Copy the weights saved at ``path`` into ``model``, refusing a checkpoint of another shape or other classes."""
    from ..weights import load_checkpoint

    saved = load_checkpoint(path)
    mine, theirs = model.config, saved.config
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
              "patch_size", "num_channels", "hidden_act", "qkv_bias")
    differ = [f"{k}: {getattr(theirs, k)} in {path}, {getattr(mine, k)} here" for k in fields
              if getattr(theirs, k) != getattr(mine, k)]
    if not isinstance(saved, ViTForImageClassification):
        differ.append(f"{path} holds no classifier head")
    elif [theirs.id2label[i] for i in range(theirs.num_labels)] != [mine.id2label[i] for i in range(mine.num_labels)]:
        differ.append(f"classes {list(theirs.id2label.values())} in {path}, {list(mine.id2label.values())} here")
    if differ:
        raise ValueError(f"cannot start from {path}: " + "; ".join(differ))
    model.load_state_dict(saved.state_dict())
    log(f"started from the weights in {path}")


def describe(config: TrainConfig, source: DataSource, per_epoch: int | None) -> str:
    """The run's settings in one line."""
    dataset = getattr(source, "dataset", None)
    data = (f"{len(dataset.train):,} training / {len(dataset.test):,} held-out pictures, " if dataset is not None
            else "fresh synthetic pictures every step, ")
    length = (f"{config.epochs} epochs x {per_epoch} steps" if config.epochs is not None else f"{config.steps} steps")
    return (f"data: {data}{len(source.classes)} classes; {length} of {config.batch_size}, peak lr {config.lr}, "
            f"{config.precision}, seed {config.seed}"
            + (f"; {config.keep_patches:.0%} of the patches kept in all but the last {config.full_epochs} epochs"
               if config.keep_patches < 1 else "")
            + (f"; RandAugment {config.rand_augment_ops} ops at magnitude {config.rand_augment_magnitude:g}"
               if config.rand_augment_ops > 0 else "")
            + (f"; mixup/CutMix on {config.mix:.0%} of the batches" if config.mix > 0 else "")
            + ("; both ramped up linearly over the epochs"
               if config.augment_ramp and (config.rand_augment_ops > 0 or config.mix > 0) else ""))


# --------------------------------------------------------------------------- the command line's two kinds of run


def _model_config(args, classes: list[str]) -> ViTConfig:
    return default_config(
        image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, intermediate_size=args.intermediate_size,
    ).replace(id2label=dict(enumerate(classes)), num_labels=len(classes))


def _common(args) -> dict:
    """The TrainConfig fields the command line sets the same way for every kind of run."""
    return dict(batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                label_smoothing=args.label_smoothing, precision=args.precision or "fp32",
                keep_patches=args.keep_patches if args.keep_patches is not None else 1.0,
                rand_augment_ops=args.rand_augment_ops or 0,
                rand_augment_magnitude=args.rand_augment_magnitude if args.rand_augment_magnitude is not None else 9.0,
                mix=args.mix or 0.0, augment_ramp=args.augment_ramp == "linear", position_init=args.position_init,
                attention_init=args.attention_init or "normal", seed=args.seed if args.seed is not None else 0)


def _finish(model, out: Path, state: Path) -> None:
    """The weights in the Hugging Face layout (the weights package writes them), and no resumable state left."""
    from ..weights import save_checkpoint

    save_checkpoint(model, out)
    state.unlink(missing_ok=True)


def shapes_setup(args) -> tuple[ViTConfig, ShapesStream, TrainConfig]:
    """The model, data and settings of a shapes run from the command line's arguments."""
    source = ShapesStream(args.image_size, curriculum=args.curriculum)
    config = TrainConfig(steps=args.steps, warmup_steps=args.warmup, **_common(args))
    return _model_config(args, source.classes), source, config


def run_shapes(args, log: Log) -> int:
    """The shapes recipe (or its arguments changed): train, save, measure on fresh pictures."""
    model_config, source, config = shapes_setup(args)
    out, started = Path(args.out), time.perf_counter()
    state = out / "train_state.pt"
    model, history, _, finished = train(
        model_config, source, config, state_path=state, device=args.device,
        stop_after_steps=args.stop_after_steps, report_every=args.eval_every or 250, log=log, log_every=args.log_every,
        check=(lambda m: {f"val_{k}": v for k, v in evaluate(m, n=256, seed=EVAL_SEED + 1).items()})
        if args.eval_every else None, prefetch=True,
    )
    if not finished:
        return 0
    _finish(model, out, state)
    metrics = evaluate(model, n=args.eval_n)
    log(f"trained in {(time.perf_counter() - started) / 60:.1f} min (this session); saved to {out}")
    log(f"evaluation on {args.eval_n} fresh images (seed {EVAL_SEED}): accuracy {metrics['accuracy']:.4f}, "
        f"rollout on object {metrics['rollout_on_object']:.4f}")
    return 0


def run_pictures(args, log: Log) -> int:
    """Pictures in the ImageFolder layout: train, save, and write the held-out evaluation next to the weights."""
    from ..imagefolder import load_image_folder

    started = time.perf_counter()
    data = load_image_folder(args.data, image_size=args.image_size, limit_per_class=args.limit_per_class)
    log(f"read {len(data.train):,} + {len(data.test):,} pictures from {data.source} in {time.perf_counter() - started:.1f} s")
    config = TrainConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, lr_floor=0.0,
                         full_epochs=args.full_epochs or 0, **_common(args))
    source = ImageFolderSource(data)
    per_epoch = source.steps_per_epoch(config.batch_size)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / "train_state.pt"
    check_split = data.test
    if args.eval_n and args.eval_n < len(data.test):
        pick = np.sort(np.random.default_rng([config.seed, 2**31 + 1]).choice(len(data.test), size=args.eval_n,
                                                                               replace=False))
        check_split = type(data.test)(data.test.images[pick], data.test.labels[pick])

    def check(model) -> dict:
        held_out = evaluate_split(model, check_split, len(data.classes), device=device)
        return {"held_out_top1": held_out["top1"], "held_out_n": held_out["n"]}

    stop = None if args.stop_after_epochs is None else args.stop_after_epochs * per_epoch
    model, history, _, finished = train(_model_config(args, data.classes), source, config, state_path=state,
                                        device=device, stop_after_steps=stop, check=check, log=log,
                                        log_every=args.log_every, init_from=getattr(args, "init_from", None))
    if not finished:
        return 0
    _finish(model, out, state)
    metrics = evaluate_split(model, data.test, len(data.classes))
    write_evaluation(out, metrics, data.classes)
    log(f"trained in {history[-1]['elapsed'] / 60:.1f} min (this session); saved to {out}")
    log(f"held-out top-1 on all {metrics['n']:,} pictures: {metrics['top1']:.4f}")
    for name, acc in zip(data.classes, metrics["per_class"]):
        log(f"  {name:12s} {acc:.3f}")
    return 0
