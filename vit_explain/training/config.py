"""How a training run trains (:class:`TrainConfig`), and the learning-rate schedule.

One config for every run: the command line and its recipes (:mod:`vit_explain.training.recipes`)
and the Training page (:mod:`vit_explain.training.run`) all hand one to
:func:`vit_explain.training.loop.train_loop`. Bad values are refused when the config is made,
before any picture is read or any step is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..augment import check_settings

__all__ = ["PRECISIONS", "POSITION_INITS", "ATTENTION_INITS", "TrainConfig", "learning_rate"]

PRECISIONS = ("fp32", "bf16")
POSITION_INITS = ("sincos", "random")
ATTENTION_INITS = ("normal", "mimetic")


def use_bf16(precision: str) -> bool:
    """True for ``"bf16"``; refuses anything but :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return precision == "bf16"


def check_keep_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"the fraction of patches kept must be in (0, 1], not {fraction}")


def learning_rate(step: int, total_steps: int, peak: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run.

    Length: ``steps`` optimiser steps, or ``epochs`` passes over a data source that has epochs (a
    finite training split); exactly one of the two. Schedule: AdamW (``weight_decay`` on the
    matrices only), the learning rate warming up linearly over ``warmup_steps`` steps (or
    ``warmup_epochs`` epochs, when given) and then decaying along a cosine to ``lr_floor * lr``.
    Each step: cross-entropy with ``label_smoothing``, gradients clipped to ``clip_norm``,
    ``precision`` ``"bf16"`` autocasting the forward pass (weights stay float32).

    Augmentation, on top of whatever the data source draws (crop and flip for photos): with
    ``rand_augment_ops`` > 0 that many RandAugment operations of strength
    ``rand_augment_magnitude`` per picture; with probability ``mix`` a batch is mixed up or
    CutMixed; ``augment_ramp`` grows both linearly over the run (the epoch's share of the epochs,
    or the step's share of the steps). ``keep_patches`` < 1 trains on that fraction of each
    picture's patch tokens (patch dropout), except in the last ``full_epochs`` epochs.

    ``position_init`` and ``attention_init`` say how a fresh model starts
    (:func:`vit_explain.training.starts.fresh_model`); the Training page brings its own model.
    ``seed`` fixes the run: data order, augmentation and starting weights.
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    lr_floor: float = 0.02
    weight_decay: float = 0.05
    warmup_steps: int = 0
    warmup_epochs: float | None = None
    label_smoothing: float = 0.0
    clip_norm: float | None = 1.0
    precision: str = "fp32"
    keep_patches: float = 1.0
    full_epochs: int = 0
    rand_augment_ops: int = 0
    rand_augment_magnitude: float = 9.0
    mix: float = 0.0
    augment_ramp: bool = False
    position_init: str = "sincos"
    attention_init: str = "normal"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give the run's length as steps or as epochs (exactly one of them)")
        if (self.steps or self.epochs) < 1:
            raise ValueError(f"a run needs at least one step or epoch, not {self.steps or self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        use_bf16(self.precision)
        check_keep_fraction(self.keep_patches)
        check_settings(self.rand_augment_magnitude, self.mix)  # not at the epoch the ramp passes 30
        if self.full_epochs and self.epochs is None:
            raise ValueError("full_epochs counts epochs: give the run's length in epochs")
        if self.position_init not in POSITION_INITS:
            raise ValueError(f"position_init must be one of {POSITION_INITS}, not {self.position_init!r}")
        if self.attention_init not in ATTENTION_INITS:
            raise ValueError(f"attention_init must be one of {ATTENTION_INITS}, not {self.attention_init!r}")

    # ---- what the numbers come to for a data source with ``steps_per_epoch`` steps an epoch (None: no epochs)
    def total_steps(self, steps_per_epoch: int | None) -> int:
        if self.steps is not None:
            return self.steps
        if not steps_per_epoch:
            raise ValueError("this data source has no epochs (a fresh batch every step): give the length in steps")
        return self.epochs * steps_per_epoch

    def warmup(self, steps_per_epoch: int | None) -> int:
        if self.warmup_epochs is None:
            return self.warmup_steps
        if not steps_per_epoch:
            raise ValueError("warmup_epochs needs a data source with epochs: give warmup_steps")
        return max(1, int(self.warmup_epochs * steps_per_epoch))

    def ramp(self, step: int, steps_per_epoch: int | None) -> float:
        """How much of the augmentation strength applies at ``step`` (1 without ``augment_ramp``)."""
        if not self.augment_ramp:
            return 1.0
        if self.epochs is not None:
            return (step // steps_per_epoch + 1) / self.epochs
        return (step + 1) / self.steps

    def keeps_patches(self, step: int, steps_per_epoch: int | None) -> bool:
        """Whether patch dropout applies at ``step`` (not in the last ``full_epochs`` epochs)."""
        if self.keep_patches >= 1:
            return False
        return self.epochs is None or step // steps_per_epoch < self.epochs - self.full_epochs
