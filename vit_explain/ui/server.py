"""Process settings for a server that many sessions share; app.py calls :func:`tune_server` once.

Importing this module (or anything in the package) changes nothing in the process: a test or a
script that imports the UI helpers keeps Python's and the C library's defaults.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time

#: At most one full garbage collection this often, for the whole server (see :func:`collect_now_and_then`).
COLLECT_EVERY_S = 3.0
_collect_lock = threading.Lock()
_last_collect = 0.0
_tuned = False


def tune_server() -> None:
    """Freeze the objects that exist after the imports and make freed tensor memory go back to the system.

    Streamlit's per-run messages (chart specs, pictures) form reference cycles, so they wait for
    Python's cyclic collector, which runs by object counts, not bytes: ``benchmarks/budgets.py``'s
    memory probe grew by 700 MB over 12 pictures that way, all of it garbage. Script runs therefore
    start with a full collection (:func:`collect_now_and_then`), and freezing what exists after the
    imports (torch, plotly, pandas: ~270k objects) keeps each collection short. Idempotent.
    """
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.freeze()
    _hand_large_frees_back_to_the_os()


def collect_now_and_then() -> None:
    """A full collection, at most one every :data:`COLLECT_EVERY_S` seconds for the whole server.

    It stops every other thread while it runs: collecting on each run of 12 busy sessions took 10% of
    the server's time in ``benchmarks/load_test.py``, hence the spacing."""
    global _last_collect
    if not _tuned:
        return  # only on a server tuned by app.py (tests and scripts keep their own collector habits)
    if time.monotonic() - _last_collect < COLLECT_EVERY_S or not _collect_lock.acquire(blocking=False):
        return
    try:
        gc.collect()
        _last_collect = time.monotonic()
    finally:
        _collect_lock.release()


def _hand_large_frees_back_to_the_os() -> None:
    """Make glibc's malloc give freed tensors' memory back to the system at once.

    By default glibc raises its mmap threshold each time a large block is freed, so later tensors of
    a few MB (one layer's attention maps) come from the heap and their memory stays with the process
    after they are freed: a ViT-B/16 trace at 384 px left 400 MB behind per picture. A fixed
    threshold (256 KB) turns that adaptation off. Other C libraries: nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(256 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
