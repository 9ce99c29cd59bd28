"""The training loop: one for the command line, the recipes and the Training page.

:func:`train_loop` takes a model, its optimiser, a data source (:mod:`vit_explain.training.data`)
and a :class:`~vit_explain.training.config.TrainConfig`, and steps from ``start_step`` to the end
of the run. Everything else a caller needs is a :class:`Callback`: progress lines and records
(:mod:`vit_explain.training.recipes`), resumable state (:class:`Checkpoint`), stopping early, and
for the Training page its pauses, stop button, time cap, lock and snapshots
(:mod:`vit_explain.training.run`).

Each step: the source draws the pictures (:class:`~vit_explain.training.data.Pictures`), the
configured augmentation goes on drawing from the same random stream (:func:`prepare_batch`:
RandAugment, then the patches kept, then mixup / CutMix), the learning rate is set from the
schedule, and :func:`~vit_explain.training.steps.train_step` updates the model. A loss that is
not finite ends the run with :class:`FloatingPointError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterator, Sequence

import numpy as np
import torch

from ..augment import mix_batch, rand_augment
from .config import TrainConfig, learning_rate
from .data import DataSource, Pictures, images_to_pixel_values
from .steps import patches_to_keep, train_step

__all__ = ["Batch", "Callback", "Checkpoint", "StopAt", "prepare_batch", "train_loop"]


@dataclass
class Batch:
    """One step's tensors: pixels, labels, and the soft targets (mixed batches) and patches kept, if any."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None = None
    keep: torch.Tensor | None = None


class Callback:
    """What the loop tells, and asks, the code around it. Every method is optional: these do nothing."""

    def before_step(self, step: int) -> bool:
        """Called before step ``step`` (0-based) is drawn; True ends the run there."""
        return False

    def holding(self) -> ContextManager:
        """Held around each update and :meth:`on_step` (the Training page's lock)."""
        return contextlib.nullcontext()

    def on_step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        """After an update; ``step`` is the number of steps done, ``loss`` and ``accuracy`` the batch's before it."""

    def after_step(self, step: int) -> None:
        """After :meth:`on_step`, outside :meth:`holding`: snapshots, evaluations, progress lines."""

    def on_epoch(self, epoch: int, step: int) -> None:
        """After the last step of epoch ``epoch`` (counted from 1), for sources with epochs."""


class StopAt(Callback):
    """Ends the run before step ``step`` (an interruption on purpose: the state saved so far resumes it)."""

    def __init__(self, step: int):
        self.step = step

    def before_step(self, step: int) -> bool:
        return step >= self.step


def prepare_batch(pictures: Pictures, config: TrainConfig, *, num_patches: int, num_classes: int, ramp: float = 1.0,
                  keep_patches: bool = False, device: str | torch.device = "cpu") -> Batch:
    """The configured augmentation of a step's pictures, drawn from their random stream in a fixed order."""
    rng = pictures.rng
    images = rand_augment(pictures.images, rng, config.rand_augment_ops, config.rand_augment_magnitude * ramp)
    keep = patches_to_keep(rng, len(images), num_patches, config.keep_patches) if keep_patches else None
    pixel_values = images_to_pixel_values(images).to(device)
    labels = torch.from_numpy(np.asarray(pictures.labels, dtype=np.int64)).to(device)
    targets = None
    if config.mix > 0 and rng.random() < config.mix * ramp:
        pixel_values, targets = mix_batch(pixel_values, labels, num_classes, rng)
    return Batch(pixel_values, labels, targets, keep)


def _draws(source: DataSource, config: TrainConfig, start: int, total: int, prefetch: bool) -> Iterator[Pictures]:
    """Each step's pictures; with ``prefetch``, drawn one step ahead in a helper thread (numpy mostly frees the GIL)."""
    if not prefetch:
        for step in range(start, total):
            yield source.pictures(step, config)
        return
    if getattr(source, "sequential", True):
        raise ValueError("drawing ahead needs a source whose steps draw from streams of their own")
    ready: queue.Queue = queue.Queue(maxsize=2)
    done = threading.Event()

    def produce() -> None:
        for step in range(start, total):
            try:
                item: object = source.pictures(step, config)
            except Exception as exc:  # handed to the loop's thread, which raises it
                item = exc
            while not done.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if done.is_set() or isinstance(item, Exception):
                return

    thread = threading.Thread(target=produce, name="vit-explain-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(start, total):
            item = ready.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        done.set()
        thread.join()


def train_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer, source: DataSource, config: TrainConfig, *,
               start_step: int = 0, callbacks: Sequence[Callback] = (), device: str | torch.device = "cpu",
               prefetch: bool = False) -> tuple[int, bool]:
    """Train from ``start_step`` until the run's last step or until a callback ends it.

    Returns ``(steps done, finished)``: ``finished`` is False when a callback's
    :meth:`~Callback.before_step` ended the run early. ``prefetch`` draws each step's pictures
    while the previous step trains (for sources whose steps draw from streams of their own).
    """
    per_epoch = source.steps_per_epoch(config.batch_size)
    total, warmup = config.total_steps(per_epoch), config.warmup(per_epoch)
    num_patches, num_classes = model.config.num_patches, len(source.classes)
    torch.manual_seed(config.seed + start_step)
    draws = _draws(source, config, start_step, total, prefetch)
    step = start_step
    try:
        while True:
            if any(callback.before_step(step) for callback in callbacks):
                return step, False
            if step >= total:
                return step, True
            batch = prepare_batch(next(draws), config, num_patches=num_patches, num_classes=num_classes,
                                  ramp=config.ramp(step, per_epoch), keep_patches=config.keeps_patches(step, per_epoch),
                                  device=device)
            lr = learning_rate(step, total, config.lr, warmup, config.lr_floor)
            with contextlib.ExitStack() as held:
                for callback in callbacks:
                    held.enter_context(callback.holding())
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, accuracy = train_step(model, optimizer, batch.pixel_values, batch.labels,
                                            label_smoothing=config.label_smoothing, clip_norm=config.clip_norm,
                                            precision=config.precision, keep_patches=batch.keep, targets=batch.targets)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at step {step}: try a smaller learning rate")
                step += 1
                for callback in callbacks:
                    callback.on_step(step, loss, accuracy, lr)
            for callback in callbacks:
                callback.after_step(step)
            if per_epoch and step % per_epoch == 0:
                for callback in callbacks:
                    callback.on_epoch(step // per_epoch, step)
    finally:
        draws.close()


class Checkpoint(Callback):
    """The run's resumable state in one file: the model, the optimiser, the steps done and the records so far.

    Saved at the end of every epoch (sources with epochs) or every ``every`` steps, written beside
    its name and then renamed, so an interruption never leaves half a file. :meth:`restore` reads it
    back: running the same command again resumes the run, and on CPU ends with the same weights as
    an uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 history: list[dict], *, every: int | None = None):
        self.path, self.model, self.optimizer, self.history, self.every = Path(path), model, optimizer, history, every

    def restore(self, device: str | torch.device, steps_per_epoch: int | None) -> int:
        """Load the saved state, if any, into the model, optimiser and history; returns the steps done (0 without)."""
        if not self.path.exists():
            return 0
        state = torch.load(self.path, map_location=device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history[:] = json.loads(state["history"])
        if "step" in state:
            return int(state["step"])
        return int(state["epoch"]) * steps_per_epoch  # written before the loop counted steps: at an epoch's end

    def save(self, step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step,
                 "history": json.dumps(self.history)}
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def after_step(self, step: int) -> None:
        if self.every and step % self.every == 0:
            self.save(step)

    def on_epoch(self, epoch: int, step: int) -> None:
        if not self.every:
            self.save(step)
