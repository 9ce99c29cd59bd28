"""Training small ViTs: one loop for the command line, its recipes and the app's Training page.

One module per concern:

* ``config``: :class:`TrainConfig` (how a run trains) and the learning-rate schedule;
* ``data``: data sources, the synthetic shapes stream and a folder of pictures;
* ``steps``: one optimiser step (bf16, patch dropout, mixed targets) and the optimiser;
* ``loop``: :func:`train_loop`, its :class:`Callback` hooks and the resumable :class:`Checkpoint`;
* ``starts``: the shipped models' architecture and a fresh model's starting weights;
* ``evaluation``: what a trained model is measured on;
* ``recipes``: :func:`train` (a fresh model, resumable, with progress lines) and the named recipes
  of ``python -m vit_explain.train``;
* for the Training page: ``run`` (:class:`TrainingRun`, a run in a background thread), ``sharing``
  (slots, giving way to page runs, one torch thread), ``snapshots`` (what the page draws),
  ``page_data`` (its data sets) and ``models`` (size limits, the starting model, the download).

This package re-exports the public names.
"""

from __future__ import annotations

from .config import PRECISIONS, TrainConfig, learning_rate
from .data import ImageFolderSource, Pictures, ShapesStream, clutter_at, images_to_pixel_values
from .evaluation import EVAL_SEED, evaluate, evaluate_split, write_evaluation
from .loop import Batch, Callback, Checkpoint, StopAt, prepare_batch, train_loop
from .recipes import RECIPES, train
from .starts import default_config, fresh_model, init_mimetic_attention, init_sincos_positions
from .steps import forward_keeping, make_optimizer, patches_to_keep, train_step

__all__ = [
    "PRECISIONS", "TrainConfig", "learning_rate",
    "ImageFolderSource", "Pictures", "ShapesStream", "clutter_at", "images_to_pixel_values",
    "EVAL_SEED", "evaluate", "evaluate_split", "write_evaluation",
    "Batch", "Callback", "Checkpoint", "StopAt", "prepare_batch", "train_loop",
    "RECIPES", "train",
    "default_config", "fresh_model", "init_mimetic_attention", "init_sincos_positions",
    "forward_keeping", "make_optimizer", "patches_to_keep", "train_step",
]
