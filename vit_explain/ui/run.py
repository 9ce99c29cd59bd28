"""The current forward pass (:class:`Run`), its cache key, and the one way pages cache what they derive from it.

The forward pass lives in ``st.cache_data`` keyed on :class:`RunKey` (the picture's sha256, the
model source and the config), never on a picture or a tensor; arrays are float32 numpy; entries are
bounded. Switching page, layer or head reuses it; one layer's full detail is a second, small cache.

Pages cache their own derived results with :func:`cached` (keyed by the run, or by the model alone
with ``on="model"``) so a page cannot pass a wrong or partial key: the key is always the run's.
Results computed with a progress bar go through :func:`cached_with_progress` (same key, a bounded
server-wide store: a progress bar cannot be drawn from inside ``st.cache_data``).
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

from ..config import ViTConfig
from ..pipeline import run_core, run_layer
from ..preprocess import load_image, to_pixel_values
from .sources import config_from_key, get_model


@dataclass(frozen=True)
class RunKey:
    """What a forward pass depends on: the picture (sha256), the weights' source and the architecture."""

    digest: str
    source: str
    config_json: str

    @property
    def model_key(self) -> tuple[str, str]:
        """The part that names the model alone (results that do not depend on the picture)."""
        return self.source, self.config_json


@dataclass
class Run:
    """What every page draws from: the chosen image, the model and its cached forward pass."""

    image_name: str
    key: RunKey
    model: torch.nn.Module
    config: ViTConfig
    trained: bool
    core: dict[str, np.ndarray]
    image: np.ndarray  # uint8 [S, S, 3]: the picture the model saw (resized, de-normalised)
    image_origin: str = "sample"  # "sample" or "upload"
    picture_data: bytes = field(default=b"", repr=False)  # the picture's file: lets a download rebuild the trace

    @property
    def digest(self) -> str:
        return self.key.digest

    @property
    def source(self) -> str:
        return self.key.source

    @property
    def config_json(self) -> str:
        return self.key.config_json

    @property
    def id2label(self) -> dict[int, str]:
        return self.config.id2label

    @property
    def is_classifier(self) -> bool:
        return "logits" in self.core

    @property
    def has_pooler(self) -> bool:
        return "pooler_output" in self.core

    def layer(self, index: int) -> dict[str, np.ndarray]:
        """Every tap of encoder layer ``index`` (q, k, v, scores, probs, mlp_pre_act ...), cached."""
        return _layer_detail(self.key, index, _run=self)

    def npz_bytes(self) -> bytes:
        """The core trace as a compressed ``.npz`` file (for the download buttons), with a ``README`` entry
        that says how its arrays are indexed (the app's one layer numbering)."""
        return trace_npz(self.core, self.config)


# ---------------------------------------------------------------------------------- the forward pass
@st.cache_data(max_entries=8, show_spinner="Running the ViT on your image ...")
def core_trace(key: RunKey, _image_bytes: bytes) -> dict[str, np.ndarray]:
    """The stage-level tensors of one forward pass (``pipeline.run_core``) for this key."""
    model = get_model(key.source, config_from_key(key.config_json))
    image = load_image(_image_bytes)
    pixel_values = to_pixel_values(image, getattr(model, "preprocess_spec", None) or model.config)
    return run_core(model, pixel_values)


@st.cache_data(max_entries=24, show_spinner=False)
def _layer_detail(key: RunKey, index: int, _run: Run) -> dict[str, np.ndarray]:
    return run_layer(_run.model, index, _run.core["hidden_states"][index])


# ---------------------------------------------------------------------------------- page caches
def cached(fn: Callable | None = None, *, on: str = "run", max_entries: int = 16, show_spinner: bool | str = False):
    """Cache ``fn(run, *args)`` on the run's key (``on="run"``) or on its model alone (``on="model"``).

    The page passes the :class:`Run` itself; the key is taken from it, so it is always complete.
    Other arguments are hashed as usual (a name starting with ``_`` is left out, as in ``st.cache_data``).
    Results must be picklable (numpy arrays, numbers, strings, dicts of them).
    """
    if on not in ("run", "model"):
        raise ValueError(f"cached(on=...) is 'run' or 'model', not {on!r}")

    def decorate(fn: Callable) -> Callable:
        def inner(key, args: tuple, kwargs: tuple, _run: Run):
            return fn(_run, *args, **dict(kwargs))

        # Streamlit names a cache by the function's module, qualified name and source: those of ``fn``
        functools.update_wrapper(inner, fn)
        cached_inner = st.cache_data(max_entries=max_entries, show_spinner=show_spinner)(inner)

        @functools.wraps(fn)
        def call(run: Run, *args, **kwargs):
            key = run.key if on == "run" else run.key.model_key
            return cached_inner(key, args, tuple(sorted(kwargs.items())), _run=run)

        call.clear = cached_inner.clear
        return call

    return decorate(fn) if fn is not None else decorate


_STORES: dict[str, tuple[threading.Lock, OrderedDict]] = {}
_STORES_GUARD = threading.Lock()


def cached_with_progress(name: str, run: Run, args: tuple, compute: Callable[[Callable[[float, str], None]], Any], *,
                         label: str, max_entries: int = 32):
    """``compute(progress)``'s result for this run and ``args``, computed once for the whole server.

    For work slow enough to need a progress bar (occlusion sensitivity runs hundreds of forward passes):
    the bar is drawn here, outside any cached function, and the result is kept in a bounded store
    (least recently used first out) under ``name``, keyed by the run's key and ``args``.
    """
    with _STORES_GUARD:
        lock, items = _STORES.setdefault(name, (threading.Lock(), OrderedDict()))
    key = (run.key, args)
    with lock:
        if key in items:
            items.move_to_end(key)
            return items[key]
    bar = st.progress(0.0, text=label)
    try:
        result = compute(lambda fraction, text=label: bar.progress(min(max(float(fraction), 0.0), 1.0), text=text))
    finally:
        bar.empty()
    with lock:
        items[key] = result
        while len(items) > max_entries:
            items.popitem(last=False)
    return result


def stored(name: str, run: Run, args: tuple):
    """What :func:`cached_with_progress` keeps for this run and ``args`` (None if nothing yet)."""
    with _STORES_GUARD:
        entry = _STORES.get(name)
    if entry is None:
        return None
    lock, items = entry
    with lock:
        return items.get((run.key, args))


# ---------------------------------------------------------------------------------- the trace download
def trace_npz(core: dict[str, np.ndarray], config: ViTConfig) -> bytes:
    """A core trace as a compressed ``.npz`` file with its ``README`` entry."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, README=np.array(trace_readme(config)), **core)
    return buffer.getvalue()


def _trace_file(key: RunKey, picture_data: bytes) -> bytes:
    """The download's bytes, made when the button is clicked, from the cached forward pass (run again if it
    has left the cache). Streamlit keeps a download's callable for the session's life: this one holds only
    the picture's bytes (which the session holds anyway), not the trace (tens of MB at ViT-B/16)."""
    return trace_npz(core_trace(key, picture_data), config_from_key(key.config_json))


def trace_download(run: Run) -> Callable[[], bytes]:
    """What a trace download button calls on the click: from the picture's bytes when the run has them
    (the session keeps no copy of the trace for the button), else from the run's own trace."""
    if run.picture_data:
        return functools.partial(_trace_file, run.key, run.picture_data)
    return run.npz_bytes


def trace_readme(config: ViTConfig) -> str:
    """What the downloaded trace holds, in the numbering every page uses."""
    L = config.num_hidden_layers
    return (
        f"vit-explain trace of one picture through a ViT with {L} layers. Layer i is encoder.layer[i], counted "
        f"from 0 to {L - 1}, as in the code and on every page of the app.\n"
        f"hidden_states[0] is the embeddings (before any layer); hidden_states[i + 1] is the stream after layer i; "
        f"hidden_states[{L}] is after the last layer, before the final layernorm.\n"
        f"attentions[i] are the softmax weights of layer i, [heads, queries, keys]; token 0 is CLS, then the "
        f"patches row by row.\nAll arrays are float32 numpy; np.load(path)['README'] prints this note."
    )
