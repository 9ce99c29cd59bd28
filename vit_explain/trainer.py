"""Background training runs for the Training stage: one thread per run, bounded, shared fairly.

A :class:`TrainingRun` trains a small ViT in its own thread with the loop of :mod:`vit_explain.train`
(``make_optimizer``, ``learning_rate``, ``train_step``) and keeps, at a bounded number of points of
the run, a :class:`Snapshot` of everything the Training page draws: the loss and accuracy curves,
the attention of every layer and head on a fixed probe picture, the position-embedding similarity
grid, the first patch-embedding filters and the probe's top-5. Nothing here imports streamlit.

What keeps a shared server safe:

* **a server-wide slot limit** (:class:`SlotPool`): at most ``VIT_EXPLAIN_TRAINING_SLOTS`` runs train
  at once (default: one per spare core, i.e. ``cpu_count - 1``, at least 1); the others wait in a
  first-come queue and know their place in it;
* **one torch thread per run**: the worker calls ``torch.set_num_threads(1)``, which with torch's
  OpenMP back end belongs to the calling thread, and puts back the process-wide value that threads
  started later copy (:func:`_one_torch_thread_here`), so the server's other threads keep theirs
  (``tests/test_trainer.py`` checks both);
* **caps**: at most ``max_steps`` optimiser steps and ``max_seconds`` of training time per run (over
  all its resumes), and a model size limit (:func:`check_trainable`);
* **bounded memory**: at most :data:`MAX_SNAPSHOTS` snapshots per run, thinned evenly (every other one
  dropped and the interval doubled) as the run goes; :func:`snapshot_bytes` states a snapshot's size;
* **no orphans**: a run whose owner is gone (``alive()`` false and no :meth:`TrainingRun.heartbeat`
  for ``abandon_after_s`` seconds) stops by itself, frees its slot and its thread ends;
* **failures** end the run with a message (:attr:`RunStatus.message`) and free the slot;
* **other sessions first**: every page run of the app calls :func:`page_run_started`, and the runs
  pause for :data:`GIVE_WAY_S` after it, so they train in the gaps between other students' reruns.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import ViTConfig
from .model import ViTForImageClassification
from .synthetic import CLASS_NAMES, sample
from .augment import crop_and_flip
from .train import clutter_at, images_to_pixel_values, learning_rate, make_optimizer, train_step

__all__ = [
    "MAX_SNAPSHOTS",
    "MAX_PARAMETERS",
    "MAX_TRAIN_TOKENS",
    "TrainSettings",
    "Snapshot",
    "RunStatus",
    "SlotPool",
    "ShapesData",
    "FolderData",
    "TrainingRun",
    "default_slots",
    "server_pool",
    "check_trainable",
    "build_model",
    "snapshot_bytes",
    "cifar10_path",
    "checkpoint_zip",
    "CIFAR10_CLASSES",
    "CLASS_NAMES",
]

#: Snapshots kept per run at most (thinned evenly when full).
MAX_SNAPSHOTS = 40
#: Largest model the Training stage trains (parameters) and longest token sequence (a 16 x 16 grid + CLS).
MAX_PARAMETERS = 3_000_000
MAX_TRAIN_TOKENS = 257
#: Largest patch the Training stage trains (bounds the filter pictures a snapshot keeps).
MAX_TRAIN_PATCH = 32
#: Patch-embedding filter components drawn per snapshot.
FILTER_COMPONENTS = 16
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: Seed of the held-out shapes and of the probe picture (training batches use ``[seed, step]``).
HELD_OUT_SEED = 54321
PROBE_SEED = 2024


def _env_number(name: str, default: float, cast=float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def default_slots() -> int:
    """Runs allowed at once on this server: ``VIT_EXPLAIN_TRAINING_SLOTS``, else one per spare core (at least 1)."""
    return int(_env_number("VIT_EXPLAIN_TRAINING_SLOTS", max(1, (os.cpu_count() or 1) - 1), int))


def cifar10_path() -> str | None:
    """The CIFAR-10 data named by ``VIT_EXPLAIN_CIFAR10`` (a folder or a .tar/.tar.gz), if it exists."""
    raw = os.environ.get("VIT_EXPLAIN_CIFAR10", "").strip()
    return raw if raw and os.path.exists(raw) else None


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains. The defaults are the Training page's (a student's two minutes, see the README)."""

    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 30
    label_smoothing: float = 0.0
    #: the learning rate decays (cosine) over this many steps; also the step cap of the run
    max_steps: int = int(_env_number("VIT_EXPLAIN_TRAINING_MAX_STEPS", 3000, int))
    #: training seconds allowed over all of the run's resumes
    max_seconds: float = _env_number("VIT_EXPLAIN_TRAINING_MAX_SECONDS", 300.0)
    #: shapes: how busy the background is (1 is the bundled model's data; calmer lets a small model learn in minutes)
    shapes_clutter: float = 0.3
    #: shapes: the clutter ramps from 0 to ``shapes_clutter`` over this fraction of max_steps
    curriculum: float = 0.1
    seed: int = 0
    #: first snapshot interval in steps (doubles each time the snapshots are thinned)
    snapshot_every: int = 10


@dataclass
class Snapshot:
    """What the page draws at one point of the run (float32/float16/uint8 arrays, small)."""

    step: int
    seconds: float  # training time so far
    held_out_loss: float
    held_out_accuracy: float
    cls_attention: np.ndarray  # float32 [L, H, N]: the CLS token's attention to each patch, probe picture
    attention_distance: np.ndarray  # float32 [L, H]: mean distance (pixels) a head looks over, probe picture
    position_similarity: np.ndarray  # float16 [N, N]: cosine similarity of the patches' position embeddings
    filters: np.ndarray  # uint8 [k, C, P, P]: principal components of the patch-embedding filters, 0..255
    filter_variance: np.ndarray  # float32 [k]: share of the filters' variance each component explains
    top5: list[tuple[str, float]]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.cls_attention, self.attention_distance, self.position_similarity,
                                      self.filters, self.filter_variance)) + 64 * len(self.top5) + 64


def snapshot_bytes(config: ViTConfig, components: int = FILTER_COMPONENTS) -> int:
    """Array bytes of one snapshot for ``config`` (what :data:`MAX_SNAPSHOTS` multiplies)."""
    L, H, N, P, C = (config.num_hidden_layers, config.num_attention_heads, config.num_patches, config.patch_size,
                     config.num_channels)
    k = min(components, config.hidden_size, C * P * P)
    return 4 * L * H * N + 4 * L * H + 2 * N * N + k * P * P * C + 4 * k


@dataclass
class RunStatus:
    """A consistent copy of a run's progress, for drawing (lists are copies)."""

    run_id: str
    state: str  # "new", "queued", "loading", "running", "stopped", "failed"
    reason: str  # why it stopped: "", "stopped", "steps", "time", "abandoned", "failed"
    message: str
    step: int
    max_steps: int
    seconds: float
    max_seconds: float
    queue_position: int | None  # 1 = next to start
    steps: list[int]
    train_loss: list[float]
    train_accuracy: list[float]
    snapshots: list[Snapshot]

    @property
    def active(self) -> bool:
        return self.state in ("queued", "loading", "running")

    @property
    def can_resume(self) -> bool:
        return (self.state == "stopped" and self.reason in ("stopped", "abandoned") and self.step < self.max_steps
                and self.seconds < self.max_seconds)


# ------------------------------------------------------------------------------------ slots
class SlotPool:
    """At most ``slots`` holders at once; the others wait first come, first served."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._holders: set[str] = set()
        self._queue: deque[str] = deque()

    def join(self, key: str) -> None:
        """Enter the queue (no-op if already holding or queued)."""
        with self._cond:
            if key not in self._holders and key not in self._queue:
                self._queue.append(key)
            self._cond.notify_all()

    def acquire(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``key`` to reach the front with a free slot; True once it holds one."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: key in self._holders or (self._queue and self._queue[0] == key and len(self._holders) < self.slots),
                timeout=timeout,
            )
            if not ready:
                return False
            if key not in self._holders:
                self._queue.popleft()
                self._holders.add(key)
                self._cond.notify_all()
            return True

    def release(self, key: str) -> None:
        """Give back the slot, or leave the queue."""
        with self._cond:
            self._holders.discard(key)
            try:
                self._queue.remove(key)
            except ValueError:
                pass
            self._cond.notify_all()

    def position(self, key: str) -> int | None:
        """1-based place in the queue (None when holding a slot or not queued)."""
        with self._cond:
            try:
                return self._queue.index(key) + 1
            except ValueError:
                return None

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._holders)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)


@functools.cache
def server_pool() -> SlotPool:
    """The one pool of this server process (sized by :func:`default_slots` on first use)."""
    return SlotPool(default_slots())


# ------------------------------------------------------------------------------------ data
class ShapesData:
    """The synthetic shapes: a fresh batch every step, a fixed held-out set and probe picture."""

    name = "shapes"

    def __init__(self, image_size: int, held_out: int = 256, settings: TrainSettings | None = None):
        self.image_size = image_size
        self.classes = list(CLASS_NAMES)
        self._held_out_n = held_out
        self._settings = settings or TrainSettings()
        self._held = None

    def load(self) -> None:
        clutter = self._settings.shapes_clutter
        images, labels, _ = sample(self._held_out_n, seed=HELD_OUT_SEED, image_size=self.image_size, clutter=clutter)
        self._held = (images_to_pixel_values(images), torch.from_numpy(labels))
        probe, label, box = sample(1, seed=PROBE_SEED, image_size=self.image_size, clutter=clutter)
        self.probe_image, self.probe_label, self.probe_box = probe[0], int(label[0]), box[0]

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._settings
        clutter = s.shapes_clutter * clutter_at(step, s.max_steps, s.curriculum)
        images, labels, _ = sample(batch_size, seed=[seed, step], image_size=self.image_size, clutter=clutter)
        return images_to_pixel_values(images), torch.from_numpy(labels)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._held


_FOLDER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _read_folder(path: str, image_size: int, limit_per_class: int):
    from .imagefolder import load_image_folder

    return load_image_folder(path, image_size=image_size, limit_per_class=limit_per_class)


class FolderData:
    """Pictures in the ImageFolder layout (CIFAR-10 here), read once per server and kept in memory.

    Training batches are drawn at random (seed sequence ``[seed, step]``) and augmented with a
    random crop and flip; the held-out set is ``held_out`` test pictures spread evenly over the
    (class-sorted) test split; the probe is one of them.
    """

    name = "cifar10"

    def __init__(self, path: str, image_size: int, *, classes: Sequence[str] = (), limit_per_class: int = 1000,
                 held_out: int = 500):
        self.path, self.image_size = path, image_size
        self._limit, self._held_out_n = limit_per_class, held_out
        self.classes: list[str] = list(classes)  # expected class names (the model's labels); checked on load

    def load(self) -> None:
        with _FOLDER_LOCK:  # two runs asking at once read the archive once
            data = _read_folder(self.path, self.image_size, self._limit)
        self._data = data
        if self.classes and list(data.classes) != self.classes:
            raise ValueError(f"{self.path} holds the classes {data.classes}, not the expected {self.classes}")
        self.classes = list(data.classes)
        n = len(data.test)
        if n == 0 or len(data.train) == 0:
            raise ValueError(f"{self.path} has no training or no held-out pictures")
        pick = np.unique(np.linspace(0, n - 1, min(self._held_out_n, n)).round().astype(np.int64))
        self._held = (images_to_pixel_values(data.test.images[pick]), torch.from_numpy(data.test.labels[pick]))
        probe = pick[len(pick) // 3]
        self.probe_image, self.probe_label = data.test.images[probe], int(data.test.labels[probe])

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        index = rng.integers(0, len(self._data.train), size=batch_size)
        images = crop_and_flip(self._data.train.images[index], rng)
        return images_to_pixel_values(images), torch.from_numpy(self._data.train.labels[index])

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._held


# ------------------------------------------------------------------------------------ models
def parameter_count(config: ViTConfig, num_labels: int | None = None) -> int:
    """Parameters of a ViTForImageClassification with a pooler for ``config`` (and ``num_labels`` classes)."""
    k = config.num_labels if num_labels is None else num_labels
    d, m, c, p = config.hidden_size, config.intermediate_size, config.num_channels, config.patch_size
    embeddings = c * p * p * d + d + d + config.num_tokens * d
    layer = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
    head = (d * d + d) + d * k + k
    return embeddings + config.num_hidden_layers * layer + 2 * d + head


def check_trainable(config: ViTConfig, num_labels: int | None = None) -> None:
    """Refuse models too large to train on a shared CPU server; the message says what to change."""
    if config.num_tokens > MAX_TRAIN_TOKENS:
        grid = int((MAX_TRAIN_TOKENS - 1) ** 0.5)
        raise ValueError(
            f"{config.grid_size}x{config.grid_size} patches ({config.num_tokens} tokens) is more than the Training stage "
            f"allows (a {grid}x{grid} grid, {MAX_TRAIN_TOKENS} tokens): use a larger patch size or a smaller image."
        )
    if config.patch_size > MAX_TRAIN_PATCH:
        raise ValueError(f"Patches of {config.patch_size} px are larger than the Training stage takes ({MAX_TRAIN_PATCH} px "
                         f"at most): use a smaller patch size.")
    n = parameter_count(config, num_labels)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"This ViT has {n / 1e6:.1f}M parameters; the Training stage trains at most {MAX_PARAMETERS / 1e6:.0f}M on "
            f"this shared CPU server: use a smaller hidden size, fewer layers or a smaller MLP."
        )


def build_model(config: ViTConfig, classes: Sequence[str], *, base: torch.nn.Module | None = None,
                seed: int = 0) -> ViTForImageClassification:
    """The model a run starts from: fresh random weights for ``config``, or a copy of ``base``.

    ``classes`` are the data's labels. A copy of ``base`` keeps its classifier when it has as many
    classes (relabelled with the data's names), otherwise it gets a fresh classifier. Position
    embeddings start as random as the rest (no sine-cosine start), so the page shows them
    organising themselves.
    """
    id2label = dict(enumerate(classes))
    if base is None:
        config = config.replace(num_labels=len(classes), id2label=id2label)
        check_trainable(config)
        model = ViTForImageClassification(config)
        model.init_weights(seed=seed)
        return model
    if not isinstance(base, ViTForImageClassification):
        raise ValueError("These weights have no classification head to train; start from random weights instead.")
    model = copy.deepcopy(base).float()
    check_trainable(model.config, len(classes))
    if model.config.num_labels != len(classes):
        generator = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(model.config.hidden_size, len(classes))
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * model.config.initializer_range)
            head.bias.zero_()
        model.classifier = head
    model.config = model.config.replace(num_labels=len(classes), id2label=id2label)
    for attribute in ("source", "preprocess_spec"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def checkpoint_zip(model: torch.nn.Module, folder: str = "vit-trained") -> bytes:
    """The model in the Hugging Face layout (:func:`~vit_explain.weights.save_checkpoint`), zipped under ``folder/``."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    from .weights import save_checkpoint

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        written = save_checkpoint(model, Path(tmp) / folder)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(written.iterdir()):
                archive.write(path, f"{folder}/{path.name}")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ the run
#: After any page run starts on this server, training runs pause this long (other sessions come first).
GIVE_WAY_S = 0.5
_last_page_run = 0.0


def page_run_started() -> None:
    """Tell the training runs that a page is being drawn for someone: they pause for :data:`GIVE_WAY_S`.

    The app calls it at the start of every page run (``ui.sidebar``), so a run gives the CPU to the
    other sessions' reruns first and trains in the gaps between them.
    """
    global _last_page_run
    _last_page_run = time.monotonic()


def _give_way(stop: threading.Event) -> None:
    while time.monotonic() - _last_page_run < GIVE_WAY_S and not stop.is_set():
        time.sleep(0.02)


#: torch's intra-op threads of the process at import (the server's default for its script threads).
_DEFAULT_TORCH_THREADS = torch.get_num_threads()
_THREADS_LOCK = threading.Lock()


def _one_torch_thread_here() -> None:
    """One torch thread for the calling thread, without changing what the server's other threads get.

    With torch's OpenMP back end ``torch.set_num_threads`` sets the calling thread's OpenMP thread
    count, and also a process-wide value that every thread started later copies when it first
    uses torch. Streamlit runs each script run in a new thread, so left alone, one training run
    would make every page after it single-threaded. A helper thread therefore puts the
    process-wide value back at once; this thread keeps its own setting.
    """
    with _THREADS_LOCK:
        torch.get_num_threads()  # torch sets a thread up on its first use: do that now, not after the restore
        torch.set_num_threads(1)
        if _DEFAULT_TORCH_THREADS != 1:
            restore = threading.Thread(target=torch.set_num_threads, args=(_DEFAULT_TORCH_THREADS,),
                                       name="vit-explain-torch-threads")
            restore.start()
            restore.join()


def _mean_attention_distance(attentions: torch.Tensor, grid: int, patch_size: int) -> np.ndarray:
    """[L, H] mean pixel distance between a patch and the patches it attends to (CLS excluded)."""
    r, c = np.divmod(np.arange(grid * grid), grid)
    dist = torch.from_numpy(np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :]) * patch_size).float()
    n = grid * grid
    patch_to_patch = attentions[:, :, -n:, -n:]  # [L, H, N, N]: the patches come after the prefix tokens
    weights = patch_to_patch / patch_to_patch.sum(-1, keepdim=True).clamp_min(1e-12)
    return (weights * dist).sum(-1).mean(-1).numpy().astype(np.float32)


class TrainingRun:
    """One training run in its own thread (see the module docstring for the rules it keeps).

    ``alive`` (optional) says whether the owner is still there; with it or with :meth:`heartbeat`
    the run stops once neither has been heard from for ``abandon_after_s`` seconds. ``timer`` measures
    the training time the time cap counts (wall-clock; ``time.thread_time`` counts the run's own CPU
    time, for measuring on a busy machine).
    """

    def __init__(self, model: ViTForImageClassification, data, settings: TrainSettings | None = None, *,
                 pool: SlotPool | None = None, alive: Callable[[], bool] | None = None,
                 abandon_after_s: float = 20.0, clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[], float] = time.perf_counter):
        self.run_id = uuid.uuid4().hex
        self.settings = settings or TrainSettings()
        self.data = data
        self.pool = pool or server_pool()
        self._alive = alive
        self.abandon_after_s = abandon_after_s
        self._clock = clock
        self._timer = timer
        self._lock = threading.RLock()  # guards the model between steps, and the records
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.model = model
        self.optimizer = make_optimizer(model, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        self.state, self.reason, self.message = "new", "", ""
        self.step, self.seconds = 0, 0.0
        self._steps: list[int] = []
        self._loss: list[float] = []
        self._accuracy: list[float] = []
        self._snapshots: list[Snapshot] = []
        self._snapshot_every = max(1, self.settings.snapshot_every)
        self._loaded = False
        self._last_seen = clock()
        self._last_alive_check = -math.inf

    # ---- control
    def start(self) -> None:
        """Queue the run for a slot and start its thread (also resumes a stopped run)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self.state not in ("new", "stopped"):
                return
            if self.step >= self.settings.max_steps or self.seconds >= self.settings.max_seconds:
                return
            self._stop.clear()
            self.state, self.reason, self.message = "queued", "", ""
            self._last_seen = self._clock()
            self.pool.join(self.run_id)
            self._thread = threading.Thread(target=self._work, name=f"vit-explain-training-{self.run_id[:8]}",
                                            daemon=True)
            self._thread.start()

    resume = start

    def stop(self, wait: float | None = 5.0) -> None:
        """Ask the run to stop after its current step; waits up to ``wait`` s for the thread to end."""
        self._stop.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def heartbeat(self) -> None:
        """The owner is still there (call it whenever the owner's page runs)."""
        self._last_seen = self._clock()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # ---- reading
    def status(self) -> RunStatus:
        with self._lock:
            return RunStatus(
                run_id=self.run_id, state=self.state, reason=self.reason, message=self.message, step=self.step,
                max_steps=self.settings.max_steps, seconds=self.seconds, max_seconds=self.settings.max_seconds,
                queue_position=self.pool.position(self.run_id) if self.state == "queued" else None,
                steps=list(self._steps), train_loss=list(self._loss), train_accuracy=list(self._accuracy),
                snapshots=list(self._snapshots),
            )

    def trained_model(self) -> ViTForImageClassification:
        """A copy of the model as it is now (eval mode), safe to hand to other pages."""
        with self._lock:
            model = copy.deepcopy(self.model)
        return model.eval()

    def snapshot_memory(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s in self._snapshots)

    # ---- the worker
    def _wanted(self) -> bool:
        """False once the owner has been silent for abandon_after_s (asks ``alive`` at most twice a second)."""
        now = self._clock()
        if self._alive is not None and now - self._last_alive_check >= 0.5:
            self._last_alive_check = now
            try:
                if self._alive():
                    self._last_seen = now
            except Exception:  # noqa: BLE001 - a broken probe counts as silence
                pass
        return now - self._last_seen <= self.abandon_after_s

    def _finish(self, state: str, reason: str, message: str = "") -> None:
        with self._lock:
            self.state, self.reason, self.message = state, reason, message

    def _work(self) -> None:
        _one_torch_thread_here()
        try:
            while not self.pool.acquire(self.run_id, timeout=0.25):
                if self._stop.is_set():
                    return self._finish("stopped", "stopped", "Stopped before it started.")
                if not self._wanted():
                    return self._finish("stopped", "abandoned", "Its page was closed while it waited.")
            with self._lock:
                self.state = "loading" if not self._loaded else "running"
            if not self._loaded:
                self.data.load()
                self._loaded = True
                with self._lock:
                    self.state = "running"
                if self.step == 0 and not self._snapshots:
                    self._take_snapshot()
            self._train()
        except Exception as exc:  # noqa: BLE001 - any failure becomes a message for the page
            self._finish("failed", "failed", f"Training failed: {type(exc).__name__}: {exc}")
        finally:
            self.pool.release(self.run_id)

    def _train(self) -> None:
        s = self.settings
        torch.manual_seed(s.seed + self.step)
        while True:
            if self._stop.is_set():
                return self._end("stopped", "stopped", f"Stopped at step {self.step}.")
            if not self._wanted():
                return self._end("stopped", "abandoned", "Stopped: its page was closed.")
            if self.step >= s.max_steps:
                return self._end("stopped", "steps", f"Reached the cap of {s.max_steps:,} steps.")
            if self.seconds >= s.max_seconds:
                return self._end("stopped", "time", f"Reached the cap of {s.max_seconds:.0f} s of training.")
            _give_way(self._stop)  # pauses do not count as training time
            started = self._timer()  # called in the worker: thread_time counts this thread
            pixel_values, labels = self.data.batch(self.step, s.batch_size, s.seed)
            with self._lock:
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(self.step, s.max_steps, s.lr, s.warmup)
                loss, accuracy = train_step(self.model, self.optimizer, pixel_values, labels,
                                            label_smoothing=s.label_smoothing)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at step {self.step}: try a smaller learning rate")
                self.step += 1
                self._steps.append(self.step)
                self._loss.append(loss)
                self._accuracy.append(accuracy)
            if self.step % self._snapshot_every == 0:
                self._take_snapshot()
            with self._lock:
                self.seconds += self._timer() - started

    def _end(self, state: str, reason: str, message: str) -> None:
        if not self._snapshots or self._snapshots[-1].step != self.step:
            self._take_snapshot()
        self._finish(state, reason, message)

    @torch.no_grad()
    def _take_snapshot(self) -> None:
        model = self.model
        config = model.config
        was_training = model.training
        model.eval()
        try:
            x, y = self.data.held_out()
            losses, correct = [], 0
            for i in range(0, len(y), 256):
                logits = model(x[i : i + 256]).logits
                losses.append(F.cross_entropy(logits, y[i : i + 256], reduction="sum").item())
                correct += int((logits.argmax(-1) == y[i : i + 256]).sum())
            probe = images_to_pixel_values(self.data.probe_image[None])
            out = model(probe, output_attentions=True)
            attentions = torch.cat(out.attentions).float()  # [L, H, T, T]
            from .analysis import cosine_matrix, patch_filter_pca
            from .weights import top_k

            n = config.num_patches  # the patches are the last n tokens, after CLS (and any other prefix token)
            weight = model.vit.embeddings.patch_embeddings.projection.weight
            components, variance = patch_filter_pca(weight.detach().float().numpy(), k=FILTER_COMPONENTS)
            snap = Snapshot(
                step=self.step,
                seconds=self.seconds,
                held_out_loss=sum(losses) / max(1, len(y)),
                held_out_accuracy=correct / max(1, len(y)),
                cls_attention=attentions[:, :, 0, -n:].numpy().astype(np.float32),
                attention_distance=_mean_attention_distance(attentions, config.grid_size, config.patch_size),
                position_similarity=cosine_matrix(
                    model.vit.embeddings.position_embeddings[0, -n:].detach().float().numpy()
                ).astype(np.float16),
                filters=np.rint(np.clip(components, 0, 1) * 255).astype(np.uint8),
                filter_variance=np.asarray(variance, dtype=np.float32),
                top5=top_k(out.logits[0], config.id2label, k=5),
            )
        finally:
            model.train(was_training)
        with self._lock:
            if len(self._snapshots) >= MAX_SNAPSHOTS:
                self._thin()
            self._snapshots.append(snap)

    def _thin(self) -> None:
        """Keep every other snapshot (the first always) and double the interval: the kept ones stay evenly spaced."""
        self._snapshot_every *= 2
        kept = [s for s in self._snapshots if s.step % self._snapshot_every == 0]
        if self._snapshots and (not kept or kept[0] is not self._snapshots[0]):
            kept.insert(0, self._snapshots[0])
        if len(kept) >= MAX_SNAPSHOTS:  # off-grid ones (stops) kept too many: fall back to every other
            kept = self._snapshots[::2]
        self._snapshots = kept
