"""Background training runs for the Training stage: one thread per run, bounded, shared fairly.

A :class:`TrainingRun` trains a small ViT in its own thread with the one training loop
(:func:`~vit_explain.training.loop.train_loop`) and keeps, at a bounded number of points of the
run, a :class:`~vit_explain.training.snapshots.Snapshot` of everything the Training page draws.
Nothing here imports streamlit.

What keeps a shared server safe:

* **a server-wide slot limit** (:class:`~vit_explain.training.sharing.SlotPool`): the runs beyond
  it wait in a first-come queue and know their place in it;
* **one torch thread per run** (:func:`~vit_explain.training.sharing.one_torch_thread_here`), the
  server's other threads keeping theirs (``tests/test_trainer.py`` checks both);
* **caps**: at most ``max_steps`` optimiser steps and ``max_seconds`` of training time per run (over
  all its resumes), and a model size limit (:func:`~vit_explain.training.models.check_trainable`);
* **bounded memory**: at most ``max_snapshots`` snapshots per run, thinned evenly (every other one
  dropped and the interval doubled) as the run goes;
* **no orphans**: a run whose owner is gone (``alive()`` false and no :meth:`TrainingRun.heartbeat`
  for ``abandon_after_s`` seconds) stops by itself, frees its slot and its thread ends;
* **failures** (bad data, a loss that is no longer finite, memory) end the run with a message
  (:attr:`RunStatus.message`), are logged on the server, and free the slot; an error in the code
  itself marks the run failed and goes on up to the thread's exception hook;
* **other sessions first**: runs pause for ``GIVE_WAY_S`` after every page run of the app
  (:class:`~vit_explain.training.sharing.PageActivity`), so they train in the gaps between other
  students' reruns.

Time is read from injectable clocks: ``clock`` (owner silence, and the pauses through
``activity``) and ``timer`` (the training time the time cap counts), so tests drive them.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from ..model import ViTForImageClassification
from .config import TrainConfig
from .loop import Callback, train_loop
from .sharing import PageActivity, SlotPool, env_number, one_torch_thread_here, server_activity, server_pool
from .snapshots import MAX_SNAPSHOTS, Snapshot, take_snapshot, thin
from .steps import make_optimizer

__all__ = ["TrainSettings", "RunStatus", "TrainingRun", "FAILURES"]

log = logging.getLogger(__name__)

#: What ends a run with a message for the page: unusable data (ValueError, OSError), a loss that is no
#: longer finite (FloatingPointError), memory, torch's own errors (RuntimeError). Anything else is a bug.
FAILURES = (ValueError, OSError, ArithmeticError, MemoryError, RuntimeError)


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains on the page. The defaults are a student's two minutes (see the README)."""

    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 30
    label_smoothing: float = 0.0
    #: the learning rate decays (cosine) over this many steps; also the step cap of the run
    max_steps: int = int(env_number("VIT_EXPLAIN_TRAINING_MAX_STEPS", 3000, int))
    #: training seconds allowed over all of the run's resumes
    max_seconds: float = env_number("VIT_EXPLAIN_TRAINING_MAX_SECONDS", 300.0)
    #: shapes: how busy the background is (1 is the bundled model's data; calmer lets a small model learn in minutes)
    shapes_clutter: float = 0.3
    #: shapes: the clutter ramps from 0 to ``shapes_clutter`` over this fraction of max_steps
    curriculum: float = 0.1
    seed: int = 0
    #: first snapshot interval in steps (doubles each time the snapshots are thinned)
    snapshot_every: int = 10

    def train_config(self) -> TrainConfig:
        """The loop's settings for a run of these settings."""
        return TrainConfig(steps=self.max_steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           warmup_steps=self.warmup, label_smoothing=self.label_smoothing, seed=self.seed)


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


class _PageHooks(Callback):
    """What the loop does for a page's run: caps, stop button, owner's absence, pauses, lock, records, snapshots."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.ended: tuple[str, str, str] | None = None  # (state, reason, message) when a hook ended the run
        self.started = 0.0

    def before_step(self, step: int) -> bool:
        run, s = self.run, self.run.settings
        if run._stop.is_set():
            self.ended = ("stopped", "stopped", f"Stopped at step {step}.")
        elif not run._wanted():
            self.ended = ("stopped", "abandoned", "Stopped: its page was closed.")
        elif step >= s.max_steps:
            self.ended = ("stopped", "steps", f"Reached the cap of {s.max_steps:,} steps.")
        elif run.seconds >= s.max_seconds:
            self.ended = ("stopped", "time", f"Reached the cap of {s.max_seconds:.0f} s of training.")
        else:
            run._give_way()  # pauses do not count as training time
            self.started = run._timer()  # called in the worker: thread_time counts this thread
            return False
        return True

    def holding(self):
        return self.run._changed

    def on_step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        run = self.run  # the lock is held (holding)
        run.step = step
        run._steps.append(step)
        run._loss.append(loss)
        run._accuracy.append(accuracy)
        run._changed.notify_all()

    def after_step(self, step: int) -> None:
        run = self.run
        if step % run._snapshot_every == 0:
            run._take_snapshot()
        with run._changed:
            run.seconds += run._timer() - self.started


class TrainingRun:
    """One training run in its own thread (see the module docstring for the rules it keeps).

    ``alive`` (optional) says whether the owner is still there; with it or with :meth:`heartbeat`
    the run stops once neither has been heard from for ``abandon_after_s`` seconds of ``clock``.
    ``timer`` measures the training time the time cap counts (wall-clock; ``time.thread_time``
    counts the run's own CPU time, for measuring on a busy machine). ``activity`` tells when pages
    were drawn (default: this server's page runs).
    """

    def __init__(self, model: ViTForImageClassification, data, settings: TrainSettings | None = None, *,
                 pool: SlotPool | None = None, alive: Callable[[], bool] | None = None,
                 abandon_after_s: float = 20.0, clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[], float] = time.perf_counter, activity: PageActivity | None = None,
                 max_snapshots: int = MAX_SNAPSHOTS):
        self.run_id = uuid.uuid4().hex
        self.settings = settings or TrainSettings()
        self.train_config = self.settings.train_config()
        self.data = data
        self.pool = pool or server_pool()
        self.activity = activity or server_activity()
        self._alive = alive
        self.abandon_after_s = abandon_after_s
        self._clock = clock
        self._timer = timer
        self.max_snapshots = max_snapshots
        self._lock = threading.RLock()  # guards the model between steps, and the records
        self._changed = threading.Condition(self._lock)  # notified whenever the status changes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.model = model
        self.optimizer = make_optimizer(model, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        self.state, self.reason, self.message = "new", "", ""
        self.step, self.seconds = 0, 0.0
        self.giving_way = False  # pausing for other sessions' page runs right now
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
            self._set("queued", "", "")
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

    def wait_until(self, predicate: Callable[[RunStatus], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(self.status())`` holds (checked at every change of the run); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.status()), timeout)

    def trained_model(self) -> ViTForImageClassification:
        """A copy of the model as it is now (eval mode), safe to hand to other pages."""
        with self._lock:
            model = copy.deepcopy(self.model)
        return model.eval()

    def snapshot_memory(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s in self._snapshots)

    # ---- the worker
    def _set(self, state: str, reason: str | None = None, message: str | None = None) -> None:
        with self._changed:
            self.state = state
            if reason is not None:
                self.reason, self.message = reason, message or ""
            self._changed.notify_all()

    def _wanted(self) -> bool:
        """False once the owner has been silent for abandon_after_s (asks ``alive`` at most twice a second)."""
        now = self._clock()
        if self._alive is not None and now - self._last_alive_check >= 0.5:
            self._last_alive_check = now
            try:
                if self._alive():
                    self._last_seen = now
            except Exception:  # noqa: BLE001 - the server's session list, asked while it shuts down: silence
                log.warning("the owner probe of training run %s failed; counted as silence", self.run_id, exc_info=True)
        return now - self._last_seen <= self.abandon_after_s

    def _give_way(self) -> None:
        """Wait while pages are being drawn for others (see :class:`~vit_explain.training.sharing.PageActivity`)."""
        while not self._stop.is_set():
            left = self.activity.pause_left()
            if left <= 0:
                break
            if not self.giving_way:
                with self._changed:
                    self.giving_way = True
                    self._changed.notify_all()
            self._stop.wait(min(left, 0.05))
        if self.giving_way:
            with self._changed:
                self.giving_way = False
                self._changed.notify_all()

    def _work(self) -> None:
        one_torch_thread_here()
        try:
            while not self.pool.acquire(self.run_id, timeout=0.25):
                if self._stop.is_set():
                    return self._set("stopped", "stopped", "Stopped before it started.")
                if not self._wanted():
                    return self._set("stopped", "abandoned", "Its page was closed while it waited.")
            self._set("loading" if not self._loaded else "running")
            if not self._loaded:
                self.data.load()
                self._loaded = True
                self._set("running")
                if self.step == 0 and not self._snapshots:
                    self._take_snapshot()
            hooks = _PageHooks(self)
            train_loop(self.model, self.optimizer, self.data, self.train_config, start_step=self.step, callbacks=[hooks])
            s = self.settings
            self._end(*(hooks.ended or ("stopped", "steps", f"Reached the cap of {s.max_steps:,} steps.")))
        except FAILURES as exc:
            log.exception("training run %s failed at step %d", self.run_id, self.step)
            self._set("failed", "failed", f"Training failed: {type(exc).__name__}: {exc}")
        finally:
            if self.state in ("queued", "loading", "running"):  # an error in the code itself, on its way up
                self._set("failed", "failed", "Training stopped by an error in the app; it is in the server's log.")
            self.pool.release(self.run_id)

    def _end(self, state: str, reason: str, message: str) -> None:
        if not self._snapshots or self._snapshots[-1].step != self.step:
            self._take_snapshot()
        self._set(state, reason, message)

    def _take_snapshot(self) -> None:
        snap = take_snapshot(self.model, self.data, self.step, self.seconds)
        extra = getattr(self.data, "snapshot_extra", None)  # e.g. the own classes' confusion matrix
        snap.extra = extra(self.model) if extra is not None else {}
        with self._changed:
            if len(self._snapshots) >= self.max_snapshots:
                self._snapshots, self._snapshot_every = thin(self._snapshots, self._snapshot_every, self.max_snapshots)
            self._snapshots.append(snap)
            self._changed.notify_all()
