"""The Training stage's background runs, as the app's pages import them (one name, one home each).

The code lives in :mod:`vit_explain.training`: :mod:`~vit_explain.training.run` (a run in its own
thread, its settings and status), :mod:`~vit_explain.training.sharing` (slots, giving way to page
runs), :mod:`~vit_explain.training.snapshots` (what the page draws), :mod:`~vit_explain.training.page_data`
(shapes and CIFAR-10) and :mod:`~vit_explain.training.models` (size limits, starting model, download).
Nothing here imports streamlit.
"""

from __future__ import annotations

from .synthetic import CLASS_NAMES
from .training.models import (
    MAX_PARAMETERS,
    MAX_TRAIN_PATCH,
    MAX_TRAIN_TOKENS,
    build_model,
    check_trainable,
    checkpoint_zip,
    parameter_count,
)
from .training.page_data import CIFAR10_CLASSES, FolderData, ShapesData, cifar10_path
from .training.run import RunStatus, TrainingRun, TrainSettings
from .training.sharing import GIVE_WAY_S, PageActivity, SlotPool, default_slots, page_run_started, server_pool
from .training.snapshots import MAX_SNAPSHOTS, Snapshot, snapshot_bytes

__all__ = [
    "MAX_SNAPSHOTS",
    "MAX_PARAMETERS",
    "MAX_TRAIN_TOKENS",
    "MAX_TRAIN_PATCH",
    "GIVE_WAY_S",
    "TrainSettings",
    "Snapshot",
    "RunStatus",
    "SlotPool",
    "PageActivity",
    "ShapesData",
    "FolderData",
    "TrainingRun",
    "default_slots",
    "server_pool",
    "page_run_started",
    "check_trainable",
    "parameter_count",
    "build_model",
    "snapshot_bytes",
    "cifar10_path",
    "checkpoint_zip",
    "CIFAR10_CLASSES",
    "CLASS_NAMES",
]
