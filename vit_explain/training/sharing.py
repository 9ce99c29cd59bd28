"""How background training runs share a server: slots, giving way to page runs, one torch thread each.

* :class:`SlotPool`: at most ``VIT_EXPLAIN_TRAINING_SLOTS`` runs train at once (default: one per
  spare core, i.e. ``cpu_count - 1``, at least 1); the others wait in a first-come queue and know
  their place in it.
* :class:`PageActivity`: every page run of the app calls :func:`page_run_started`, and the runs
  pause for :data:`GIVE_WAY_S` after it, so they train in the gaps between other students' reruns.
* :func:`one_torch_thread_here`: a run's thread trains on one torch thread without changing what
  the server's other threads get.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import deque
from typing import Callable

import torch

__all__ = ["SlotPool", "server_pool", "default_slots", "env_number", "PageActivity", "server_activity",
           "page_run_started", "GIVE_WAY_S", "one_torch_thread_here"]


def env_number(name: str, default: float, cast=float) -> float:
    """A positive number from the environment variable ``name``, else ``default``."""
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
    return int(env_number("VIT_EXPLAIN_TRAINING_SLOTS", max(1, (os.cpu_count() or 1) - 1), int))


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


#: After any page run starts on this server, training runs pause this long (other sessions come first).
GIVE_WAY_S = 0.5


class PageActivity:
    """When a page was last drawn for someone, on ``clock``; runs pause until :data:`GIVE_WAY_S` has passed since."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._last = -float("inf")

    def page_run_started(self) -> None:
        self._last = self.clock()

    def pause_left(self) -> float:
        """Seconds a run should still wait (0 when it may train)."""
        return max(0.0, GIVE_WAY_S - (self.clock() - self._last))


_SERVER_ACTIVITY = PageActivity()


def server_activity() -> PageActivity:
    """The page runs of this server process (what :func:`page_run_started` reports to)."""
    return _SERVER_ACTIVITY


def page_run_started() -> None:
    """Tell the training runs that a page is being drawn for someone: they pause for :data:`GIVE_WAY_S`.

    The app calls it at the start of every page run (``ui.sidebar``), so a run gives the CPU to the
    other sessions' reruns first and trains in the gaps between them.
    """
    _SERVER_ACTIVITY.page_run_started()


#: torch's intra-op threads of the process at import (the server's default for its script threads).
_DEFAULT_TORCH_THREADS = torch.get_num_threads()
_THREADS_LOCK = threading.Lock()


def one_torch_thread_here() -> None:
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
