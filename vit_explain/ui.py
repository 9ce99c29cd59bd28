"""The Streamlit helpers every page shares: the sidebar, the cached model and trace, common widgets.

This is the only module of the package that imports streamlit. Pages call :func:`sidebar` first;
it draws the image, model and architecture controls and returns a :class:`Run` holding the model
and the cached float32 arrays of one traced forward pass.

Caching (see DESIGN.md):
* models live in ``st.cache_resource`` (one object shared by all sessions, never copied);
* the forward pass lives in ``st.cache_data`` keyed on the image's sha256, the model source and
  the config, never on an image or tensor; arrays are float32 numpy; entries are bounded.
  Switching page, layer or head reuses it; one layer's full detail is a second, small cache.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import inspect
import io
import json
import os
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
# Fully imported before any session runs: plotly peeks at sys.modules['pandas'] without waiting for an
# import in progress, so concurrent first page loads crashed with "partially initialized module 'pandas'".
import pandas  # noqa: F401
import streamlit as st
import torch

from .config import ViTConfig
from .pipeline import (
    MAX_TOKENS,
    attention_memory_bytes,
    check_token_budget,
    display_image,
    run_core,
    run_layer,
)
from .preprocess import InvalidImageError, PreprocessSpec, image_digest, load_image, to_pixel_values

ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = ROOT / "assets" / "samples"
MODELS_DIR = ROOT / "assets" / "models"
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: The picture a new session starts on (tests/test_cifar_model.py checks the default model names it right).
DEFAULT_SAMPLE = "horse.png"

#: The stages in teaching order: (page file, title, icon). app.py builds the navigation from it.
PAGES = [
    ("pages/overview.py", "Overview", ":material/account_tree:"),
    ("pages/patching.py", "1 · Patching", ":material/grid_on:"),
    ("pages/embeddings.py", "2 · CLS and position", ":material/add_box:"),
    ("pages/attention.py", "3 · Self-attention", ":material/visibility:"),
    ("pages/mlp.py", "4 · MLP", ":material/functions:"),
    ("pages/layers.py", "5 · Layer stack", ":material/layers:"),
    ("pages/prediction.py", "6 · Pooler and prediction", ":material/flag:"),
    ("pages/training.py", "7 · Training", ":material/model_training:"),
]

#: The models trained by this project and shipped in assets/models/<name>/, in the order offered
#: (the first one present is the default): source "bundled:<name>" -> (menu label, what it is).
BUNDLED_MODELS = {
    "vit-cifar10": ("CIFAR-10 photos model (trained here, offline)", "the bundled CIFAR-10 model (assets/models/vit-cifar10)"),
    "shapes": ("Synthetic shapes model (trained here, offline)", "the bundled shapes model (assets/models/shapes)"),
}
BUNDLED = "bundled:"
RANDOM = "random"
LOCAL = "local"
#: Models trained on the Training page live in their session only: source "session:<run id>-<step>".
SESSION = "session:"
SESSION_MODELS = "_session_models"
#: Trained models a session keeps at most (the oldest go first).
MAX_SESSION_MODELS = 3
RANDOM_SEED = 0

IMAGE_SIZES = [32, 48, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384]
HIDDEN_SIZES = [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
MAX_HEADS = 32
MAX_LAYERS = 24


# Streamlit's per-run messages (chart specs, images) form reference cycles, so they wait for Python's
# cyclic collector, which runs by object counts, not bytes: the memory probe of benchmarks/budgets.py
# grew by 700 MB over 12 pictures that way, all of it garbage. Script runs therefore start with a full
# collection, at most one every few seconds for the whole server (it stops every other thread while
# it runs: collecting on each run of 12 busy sessions took 10% of the server's time in the load
# test). Freezing what exists after the imports (torch, plotly, pandas: ~270k objects) keeps each
# collection short.
gc.freeze()
_COLLECT_EVERY_S = 3.0
_collect_lock = threading.Lock()
_last_collect = 0.0


def _collect_garbage_now_and_then() -> None:
    global _last_collect
    if time.monotonic() - _last_collect < _COLLECT_EVERY_S or not _collect_lock.acquire(blocking=False):
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


_hand_large_frees_back_to_the_os()


# ---------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """What every page draws from: the chosen image, the model and its cached forward pass."""

    image_name: str
    digest: str
    source: str  # "bundled:<name>", "random", "hub:<repo id>" or "local:<path>"
    model: torch.nn.Module
    config: ViTConfig
    trained: bool
    core: dict[str, np.ndarray]
    image: np.ndarray  # uint8 [S, S, 3]: the picture the model saw (resized, de-normalised)
    image_origin: str = "sample"  # "sample" or "upload"
    picture_data: bytes = b""  # the picture's file (the session holds it anyway): lets a download rebuild the trace

    @property
    def config_json(self) -> str:
        return _config_json(self.config)

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
        return _layer_detail(self.digest, self.source, self.config_json, index, self.core["hidden_states"][index])

    def npz_bytes(self) -> bytes:
        """The core trace as a compressed ``.npz`` file (for the download buttons), with a ``README`` entry
        that says how its arrays are indexed (the app's one layer numbering)."""
        return trace_npz(self.core, self.config)


def trace_npz(core: dict[str, np.ndarray], config: ViTConfig) -> bytes:
    """A core trace as a compressed ``.npz`` file with its ``README`` entry."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, README=np.array(trace_readme(config)), **core)
    return buffer.getvalue()


def _trace_file(digest: str, source: str, config_json: str, picture_data: bytes) -> bytes:
    """The download's bytes, made when the button is clicked, from the cached forward pass (run again if it
    has left the cache). Streamlit keeps a download's callable for the session's life: this one holds only
    the picture's bytes (which the session holds anyway), not the trace (tens of MB at ViT-B/16)."""
    return trace_npz(_core_trace(digest, source, config_json, picture_data), _config_from_json(config_json))


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


def _config_json(config: ViTConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


# ---------------------------------------------------------------------------------- caches
@st.cache_resource(max_entries=2, show_spinner="Loading the checkpoint ...")
def _base_model(source: str):
    """The checkpoint behind ``source``, loaded once per server. Draws nothing itself: a Hub checkpoint is
    fetched (with its progress bar) by :func:`_load_base` before this runs, so here it comes from the disk
    cache. (An element drawn in a cached function into a block made outside it cannot be replayed on a
    cache hit: Streamlit raises CacheReplayClosureError.)"""
    from .weights import load_checkpoint

    if source.startswith(BUNDLED) and source[len(BUNDLED):] in BUNDLED_MODELS:
        name = source[len(BUNDLED):]
        model = load_checkpoint(MODELS_DIR / name)
        model.source = BUNDLED_MODELS[name][1]  # not the server's absolute path
        return model
    if source.startswith("hub:"):
        return load_checkpoint(source[4:])
    if source.startswith("local:"):
        return load_checkpoint(source[6:])
    raise ValueError(f"unknown model source {source!r}")


#: Models up to this many bytes of weights share a roomier cache: a class moving the patch-size slider
#: of the bundled model (1.9 MB) should not rebuild it on every change, while two ViT-B/16 variants
#: (350 MB each) are as many as a server should keep.
SMALL_MODEL_BYTES = 64 * 2**20


def _model(source: str, config_json: str):
    """The model for this source and architecture (resampled from the checkpoint when they differ)."""
    config = ViTConfig.from_dict(json.loads(config_json))
    if 4 * _parameter_count(config, with_pooler=True, num_labels=config.num_labels) <= SMALL_MODEL_BYTES:
        return _small_model(source, config_json)
    return _large_model(source, config_json)


@st.cache_resource(max_entries=16, show_spinner="Building the model ...")
def _small_model(source: str, config_json: str):
    return _build_model(source, config_json)


@st.cache_resource(max_entries=2, show_spinner="Building the model ...")
def _large_model(source: str, config_json: str):
    return _build_model(source, config_json)


def add_session_model(source: str, label: str, model) -> None:
    """Offer ``model`` (trained on the Training page) as a weights choice for the rest of this session."""
    models = st.session_state.setdefault(SESSION_MODELS, {})
    models[source] = (label, model)
    while len(models) > MAX_SESSION_MODELS:
        models.pop(next(iter(models)))


def preset_sidebar(source: str, **sliders) -> None:
    """Choose the weights ``source`` and set architecture sliders (``image_size=64, patch_size=8`` ...).

    For an ``on_click`` callback: it runs before the sidebar draws, which then shows these values.
    Without sliders the architecture becomes the model's own, as when a user picks it.
    """
    state = st.session_state
    for key, value in {"model_choice": source, **sliders}.items():
        state[f"w:{key}"] = state[f"w:{key}#"] = state[key] = value
    if sliders:
        state["_config_source"] = source  # so the sidebar keeps these sliders instead of resetting them to the model's


def _session_model(source: str):
    entry = st.session_state.get(SESSION_MODELS, {}).get(source)
    if entry is None:
        raise ValueError("this trained model is no longer kept in this session (a session keeps its last "
                         f"{MAX_SESSION_MODELS}); train again on the Training page")
    return entry[1]


def _build_model(source: str, config_json: str):
    from .model import ViTForImageClassification
    from .weights import resample

    config = ViTConfig.from_dict(json.loads(config_json))
    if source == RANDOM:
        model = ViTForImageClassification(config)
        model.init_weights(seed=RANDOM_SEED)
        model.preprocess_spec = PreprocessSpec.for_config(config)
        model.source = f"random weights (seed {RANDOM_SEED})"
        return model.eval()
    base = _session_model(source) if source.startswith(SESSION) else _base_model(source)
    changes = {}
    if config.image_size != base.config.image_size:
        changes["image_size"] = config.image_size
    if config.patch_size != base.config.patch_size:
        changes["patch_size"] = config.patch_size
    if config.num_attention_heads != base.config.num_attention_heads:
        changes["num_heads"] = config.num_attention_heads
    if config.num_hidden_layers != base.config.num_hidden_layers:
        changes["num_layers"] = config.num_hidden_layers
    return resample(base, **changes) if changes else base


@st.cache_data(max_entries=8, show_spinner="Running the ViT on your image ...")
def _core_trace(digest: str, source: str, config_json: str, _image_bytes: bytes) -> dict[str, np.ndarray]:
    model = _model(source, config_json)
    image = load_image(_image_bytes)
    pixel_values = to_pixel_values(image, getattr(model, "preprocess_spec", None) or model.config)
    return run_core(model, pixel_values)


@st.cache_data(max_entries=24, show_spinner=False)
def _layer_detail(digest: str, source: str, config_json: str, index: int, _hidden: np.ndarray) -> dict[str, np.ndarray]:
    return run_layer(_model(source, config_json), index, _hidden)


@st.cache_data(max_entries=32, show_spinner=False)
def _sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def sample_names() -> list[str]:
    if not SAMPLES_DIR.is_dir():
        return []
    names = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)
    # the default picture comes first: one the default (CIFAR-10) model names correctly
    return sorted(names, key=lambda name: name != DEFAULT_SAMPLE)


# ---------------------------------------------------------------------------------- sidebar
#: The picture list's entry for the session's own upload (a name no sample file can have).
UPLOAD = "\x00your upload"


@dataclass
class Picture:
    """The picture every page uses: its name, its bytes, and where it came from."""

    name: str
    data: bytes
    origin: str  # "sample" or "upload"
    note: str | None = None  # e.g. which frame of an animation the model sees

    @property
    def description(self) -> str:
        return f"{self.name} ({'your upload' if self.origin == 'upload' else 'sample picture'})"


def _frames_note(info: dict) -> str | None:
    """For an animated or multi-page file (``load_image``'s source info): which frame the model sees."""
    frames = int(info.get("frames", 1) or 1)
    if frames <= 1:
        return None
    kind = "page" if info.get("format") == "TIFF" else "frame"
    return (f"This {info.get('format') or 'image'} file has {frames} {kind}s; the model sees only the first "
            f"{kind}.")


#: How soon after the upload box was emptied a new file counts as replacing the old one (see _take_upload).
REPLACE_WINDOW_S = 30.0


def _take_upload() -> None:
    """``on_change`` of the uploader: a new file becomes the picture in use; removing it goes back to a sample.

    The uploader only changes value when the user acts on it: a page switch draws a fresh, empty
    uploader (Streamlit gives each page's widgets their own identity) without calling this. So the
    picture in use lives in ``st.session_state``, never in the uploader's value.
    """
    state = st.session_state
    upload = state.get("upload")
    if upload is None:  # the file was taken out of the box
        state["_removed_upload"] = (state.get("uploaded"), state.get("w:sample") == UPLOAD, time.monotonic())
        if state.get("w:sample") == UPLOAD:
            state["w:sample"] = state.get("_last_sample") or (sample_names() or [UPLOAD])[0]
        state.pop("uploaded", None)
        state.pop("_upload_error", None)
        return
    data = upload.getvalue()
    removed = state.pop("_removed_upload", None)
    try:
        info = load_image(data).info.get("source", {})
    except InvalidImageError as exc:
        state["_upload_error"] = (upload.name, str(exc), _page_hash())
        # A browser that drops a new file on a full box first empties it (the branch above ran a moment
        # ago): a refused replacement leaves the previous upload in use, as if it had never been touched.
        if removed and removed[0] and removed[1] and time.monotonic() - removed[2] < REPLACE_WINDOW_S:
            state["uploaded"], state["w:sample"] = removed[0], UPLOAD
        return
    state.pop("_upload_error", None)
    state["uploaded"] = (upload.name, data, _frames_note(info))
    state["_upload_page"] = _page_hash()
    state["w:sample"] = UPLOAD


def _page_hash() -> str:
    """Which page is running (notes about an action are repeated on the page where it happened)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return getattr(ctx, "page_script_hash", "") if ctx is not None else ""


def _choose_image() -> tuple[Picture | None, Any]:
    """The picture list, the uploader and a line saying which picture is in use.

    Returns the picture (None if there is none) and a sidebar slot where :func:`sidebar` shows it
    as the model sees it, right under the choice.
    """
    st.sidebar.subheader("Picture")
    state = st.session_state
    names = sample_names()
    uploaded = state.get("uploaded")
    options = ([UPLOAD] if uploaded else []) + names
    picture = None
    if options:
        choice = st.sidebar.selectbox(
            "Picture in use", options, key=_persisted("sample", options, UPLOAD if uploaded else names[0]),
            format_func=lambda o: f"Your upload: {uploaded[0]}" if o == UPLOAD and uploaded else o,
            on_change=lambda: state.pop("_upload_error", None),
            help="Photos in the public domain and synthetic shapes made by this project's generator; your own "
                 "upload appears at the top of this list.",
        )
        if choice == UPLOAD and uploaded:
            picture = Picture(uploaded[0], uploaded[1], "upload", uploaded[2])
        elif choice in names:
            picture = Picture(choice, _sample_bytes(choice), "sample")
            state["_last_sample"] = choice
    st.sidebar.file_uploader(
        "Upload a picture", type=None, key="upload", on_change=_take_upload,
        help="Any common image format. Big photos are reduced; odd ones get a clear message.",
    )
    if state.get("_upload_error"):
        name, reason, _ = state["_upload_error"]
        st.sidebar.error(f"**{name}** was not used: {reason}", icon=":material/broken_image:")
    slot = st.sidebar.container()
    if picture is not None:
        state["image"] = (picture.name, picture.data)
    return picture, slot


def _picture_messages(picture: Picture | None) -> None:
    """On the page, where the eye is: a rejected upload (and what is shown instead), an animation's frame."""
    state = st.session_state
    error = state.get("_upload_error")
    if error and error[2] == _page_hash():
        instead = (f"The pages keep showing **{picture.description}** instead." if picture is not None
                   else "Pick a sample picture in the sidebar or try another file.")
        st.error(f"**{error[0]}** could not be used: {error[1]} {instead}", icon=":material/broken_image:")
    uploaded = state.get("uploaded")
    if picture is not None and picture.origin == "upload" and uploaded and uploaded[2]:
        if state.get("_upload_page") == _page_hash():
            st.info(f"**{picture.name}**: {uploaded[2]}", icon=":material/animation:")


def classroom_mode() -> bool:
    """True when the server is shared (``VIT_EXPLAIN_CLASSROOM=1``): users cannot name server paths."""
    return os.environ.get("VIT_EXPLAIN_CLASSROOM", "").strip().lower() in ("1", "true", "yes", "on")


def _model_options() -> dict[str, str]:
    from .weights import KNOWN_CHECKPOINTS

    options = {}
    for name, (label, _) in BUNDLED_MODELS.items():
        if (MODELS_DIR / name / "config.json").is_file():
            options[BUNDLED + name] = label
    for source, (label, _) in st.session_state.get(SESSION_MODELS, {}).items():
        options[source] = label
    options[RANDOM] = "Random weights (untrained)"
    for repo_id, info in KNOWN_CHECKPOINTS.items():
        options[f"hub:{repo_id}"] = f"{info.title} — Hub, {info.download_mb:.0f} MB"
    if not classroom_mode():  # on a shared server a path box would let anyone probe the server's disk
        options[LOCAL] = "A checkpoint folder on this computer"
    return options


def _choose_model() -> str | None:
    st.sidebar.subheader("Model")
    options = _model_options()
    choice = st.sidebar.selectbox(
        "Weights", list(options), format_func=options.get,
        key=_persisted("model_choice", list(options), next(iter(options))),
        help="Trained weights show what a real ViT learned; random weights show the bare mechanics.",
    )
    if choice.startswith("hub:"):
        from .weights import KNOWN_CHECKPOINTS

        info = KNOWN_CHECKPOINTS[choice[4:]]
        st.sidebar.caption(f"{info.description} {info.num_parameters / 1e6:.1f}M parameters; "
                           f"downloads about {info.download_mb:.0f} MB once, then comes from the cache."
                           + (f" Preprocessing: {info.preprocessing_note}" if info.preprocessing_note else ""))
    if choice == LOCAL:
        path = st.sidebar.text_input(
            "Folder with config.json and model.safetensors", key=_persisted("local_path", None, ""),
            placeholder="/path/to/checkpoint",
        ).strip()
        if not path:
            st.sidebar.info("Type the folder of a Hugging Face ViT checkpoint (or a .safetensors file).")
            return None
        return f"local:{path}"
    return choice


def _load_base(source: str):
    """The unresampled model behind ``source`` (None for random weights); errors become messages."""
    if source == RANDOM:
        return None
    if source.startswith(SESSION):
        try:
            return _session_model(source)
        except ValueError as exc:
            st.sidebar.error(f"Could not load this model: {exc}", icon=":material/cloud_off:")
            return False
    if source.startswith("local:") and classroom_mode():  # the sidebar never offers it; state could still hold it
        st.sidebar.error("Checkpoint folders on the server are switched off here (VIT_EXPLAIN_CLASSROOM).")
        return False
    from .weights import CheckpointError

    bar = st.sidebar.empty()

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        if source.startswith("hub:"):  # download first, outside any cached function, so the bar can be drawn
            from .weights import fetch_repo
            from .weights.hf_format import check_config

            fetch_repo(source[4:], progress=progress, check=check_config)
        model = _base_model(source)
    except (CheckpointError, OSError, ValueError) as exc:
        bar.empty()
        st.sidebar.error(f"Could not load this model: {exc}", icon=":material/cloud_off:")
        return False
    bar.empty()
    return model


def _divisors(n: int, low: int = 1, high: int | None = None) -> list[int]:
    high = n if high is None else high
    return [d for d in range(low, min(n, high) + 1) if n % d == 0]


def remember(key: str, fix: Callable[[Any], Any]) -> str:
    """Prepare the widget ``key`` so its value survives page switches and stays valid; returns ``key``.

    Streamlit forgets a widget's value when a page that does not draw it runs, so a copy also
    lives under ``key + "#"``. The current widget value wins, else the saved copy is restored;
    ``fix(value)`` turns it (or None, the first time) into a value the current config allows,
    e.g. a layer index clamped to the current number of layers.
    """
    state, saved = st.session_state, key + "#"
    if key in state:
        state[saved] = state[key]
    state[saved] = state[key] = fix(state.get(saved))
    return key


def clamp_index(count: int, default: int = 0) -> Callable[[Any], int]:
    """A ``fix`` for :func:`remember`: an index in ``range(count)`` (too large ones move to the last)."""

    def fix(value):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            return min(default, count - 1)
        return int(min(max(value, 0), count - 1))

    return fix


def one_of(options: list, default) -> Callable[[Any], Any]:
    """A ``fix`` for :func:`remember`: keep the value if it is an option, else the nearest one (or ``default``)."""

    def fix(value):
        if value in options:
            return value
        if value is not None and all(isinstance(o, (int, float)) for o in options) and isinstance(value, (int, float)):
            return min(options, key=lambda o: abs(o - value))
        return default if default in options else options[0]

    return fix


def fixed_attention_scale(where=None) -> bool:
    """The toggle every page with attention maps shows: a fixed 0..1 colour scale instead of a fitted one.

    One setting for the whole app (saved under ``view:attn_fixed``, so it follows the user from page to
    page). Off by default: each figure's colours then run from 0 to the largest weight it shows, one scale
    for all its panels, written on its colour bar.
    """
    key = remember("view:attn_fixed", lambda v: v if isinstance(v, bool) else False)
    return (where or st).toggle(
        "Fixed 0..1 colour scale", key=key,
        help="Off: colours run from 0 to the largest weight the figure shows (one scale for all its panels, "
             "written on the colour bar), so weak but real patterns stay visible. On: every attention figure "
             "uses softmax's full range 0..1; weights spread over many patches then look dark.")


def patch_on_grid(key: str, grid: int, default: int | None = None) -> int:
    """The patch index kept in ``st.session_state[key]`` for a ``grid x grid`` picture (stored back there).

    Patches are numbered row by row, so after a patch-size change the same number would point somewhere
    else in the picture. The grid it was chosen on is kept beside it (``key + "@grid"``), and on a new
    grid the index moves to the patch covering the same spot. ``default``: the middle patch.
    """
    state = st.session_state
    n = grid * grid
    value, old = state.get(key), state.get(key + "@grid")
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        value = (grid // 2) * grid + grid // 2 if default is None else default
    elif isinstance(old, int) and old > 0 and old != grid and 0 <= value < old * old:
        r, c = divmod(int(value), old)
        value = int((r + 0.5) * grid / old) * grid + int((c + 0.5) * grid / old)
    value = int(min(max(int(value), 0), n - 1))
    state[key], state[key + "@grid"] = value, grid
    return value


def store_clicked_patch(chart_key: str, state_key: str) -> None:
    """``on_select`` callback: keep the patch clicked on chart ``chart_key`` in ``st.session_state[state_key]``."""
    from .charts.common import clicked_patch

    index = clicked_patch(st.session_state.get(chart_key))
    if index is not None:
        st.session_state[state_key] = index


def _persisted(key: str, options: list | None, default):
    """The sidebar widget ``w:{key}``, remembered across pages (saved value also under ``key``)."""
    widget = remember(f"w:{key}", one_of(options, default) if options is not None
                      else (lambda v: default if v is None else v))
    st.session_state[key] = st.session_state[widget]
    return widget


def _choose_config(source: str, base_config: ViTConfig) -> ViTConfig:
    st.sidebar.subheader("Architecture")
    state = st.session_state
    trained = source != RANDOM
    if state.get("_config_source") != source:  # a new model: start from its own shape
        state["_config_source"] = source
        for key in ("image_size", "patch_size", "hidden_size", "num_heads", "num_layers", "mlp_size"):
            for stale in (key, f"w:{key}", f"w:{key}#"):
                state.pop(stale, None)

    sizes = sorted(set(IMAGE_SIZES) | {base_config.image_size})
    image_size = st.sidebar.select_slider(
        "Image size (pixels)", sizes, key=_persisted("image_size", sizes, base_config.image_size),
        help="The picture is resized to this square before it is cut into patches.",
    )
    patches = [p for p in _divisors(image_size, 2, image_size // 2 if image_size >= 4 else image_size)
               if (image_size // p) ** 2 + base_config.num_prefix_tokens <= MAX_TOKENS] or [image_size]
    patch_size = st.sidebar.select_slider(
        "Patch size (pixels)", patches, key=_persisted("patch_size", patches, base_config.patch_size),
        help=f"Only sizes that divide the image evenly and keep at most {MAX_TOKENS} tokens are offered.",
    )
    hidden_sizes = sorted(set(HIDDEN_SIZES) | {base_config.hidden_size})
    hidden = st.sidebar.select_slider(
        "Hidden size D", hidden_sizes, key=_persisted("hidden_size", hidden_sizes, base_config.hidden_size),
        disabled=trained,
        help="Length of every token vector." + (" Fixed by the trained weights." if trained else ""),
    )
    heads_options = _divisors(hidden, 1, MAX_HEADS)
    heads = st.sidebar.select_slider(
        "Attention heads H", heads_options, key=_persisted("num_heads", heads_options, base_config.num_attention_heads),
        help="Only divisors of the hidden size: each head gets D / H numbers of every token.",
    )
    max_layers = base_config.num_hidden_layers if trained else MAX_LAYERS
    layer_options = list(range(1, max_layers + 1))
    layers = st.sidebar.select_slider(
        "Layers L", layer_options, key=_persisted("num_layers", layer_options, base_config.num_hidden_layers),
        help="Encoder blocks stacked one after another." + (" Trained models keep their first L layers." if trained else ""),
    )
    mlp_options = sorted({hidden * m for m in (1, 2, 3, 4)} | {base_config.intermediate_size})
    mlp = st.sidebar.select_slider(
        "MLP size M", mlp_options, key=_persisted("mlp_size", mlp_options, base_config.intermediate_size),
        disabled=trained,
        help="Width of the hidden layer inside each MLP (usually 4 x D)." + (" Fixed by the trained weights." if trained else ""),
    )
    if trained:
        hidden, mlp = base_config.hidden_size, base_config.intermediate_size
        grid, trained_grid = image_size // patch_size, base_config.grid_size
        if grid != trained_grid:
            st.sidebar.caption(
                f":material/info: These weights were trained on a grid of {trained_grid}x{trained_grid} patches; this "
                f"one is {grid}x{grid}, so the position embeddings are interpolated and accuracy usually drops. To change "
                f"the patch size and keep the grid, set the image size to {trained_grid} x patch."
            )
    # position embeddings trained on their own grid (DINOv2) are resized once when the patch changes
    own_grid = {"position_embedding_size": None} if patch_size != base_config.patch_size else {}
    config = base_config.replace(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden, num_attention_heads=heads,
        num_hidden_layers=layers, intermediate_size=mlp, **own_grid,
    )
    return config


def _parameter_count(config: ViTConfig, with_pooler: bool, num_labels: int) -> int:
    from .flops import architecture

    return architecture(config, has_pooler=with_pooler, classifier=bool(num_labels), num_labels=num_labels)[0].params


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


#: Page-wide styles: a compact sidebar, and less empty margin beside the page on laptop and projector
#: widths (Streamlit's wide layout keeps 5rem on each side, which left 540 px for the page at 1024 px).
_PAGE_CSS = """
<style>
section[data-testid="stSidebar"] [data-testid="stMetricValue"] { font-size: 1.1rem; }
section[data-testid="stSidebar"] [data-testid="stMetricLabel"] p { font-size: 0.8rem; }
section[data-testid="stSidebar"] h2 { font-size: 1.15rem; padding: 0.4rem 0 0 0; }
@media (max-width: 1500px) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.5rem; padding-right: 1.5rem; padding-top: 3rem; }
}
</style>
"""


#: On a narrow screen (under Streamlit's 768 px breakpoint, e.g. a 1024 px laptop at 150 % zoom) the
#: sidebar lies over the page, and Streamlit leaves it open after a page is chosen in it: close it then.
#: Installed once per browser tab; it only clicks Streamlit's own "collapse sidebar" button.
_CLOSE_SIDEBAR_AFTER_NAVIGATION_JS = """
<script>
if (!window.vitExplainNavCloser) {
  window.vitExplainNavCloser = true;
  document.addEventListener("click", (event) => {
    if (window.innerWidth >= 768 || !event.target.closest('[data-testid="stSidebarNav"] a')) return;
    setTimeout(() => {
      const sidebar = document.querySelector('[data-testid="stSidebar"]');
      const close = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
      if (sidebar && close && sidebar.getAttribute("data-collapsed") !== "true") close.click();
    }, 200);
  }, true);
}
</script>
"""


def _config_metrics(config: ViTConfig, with_pooler: bool, num_labels: int) -> None:
    cols = st.sidebar.columns(3, gap="small")
    cols[0].metric("Tokens", f"{config.num_tokens:,}")
    cols[1].metric("Parameters", f"{_parameter_count(config, with_pooler, num_labels) / 1e6:.2f}M")
    cols[2].metric("Attention", _human_bytes(attention_memory_bytes(config)))
    names = getattr(config, "prefix_token_names", None)
    prefix = " + ".join((names() if callable(names) else names) or ["CLS"])
    st.sidebar.caption(f"Tokens: {config.grid_size} x {config.grid_size} patches + {prefix}. Attention: the memory of "
                       "every head's scores and weights in every layer (float32); it grows with tokens².")


#: The browser tab's icon is a file of this repository, served by the app itself: a ":material/..." page
#: icon makes the browser fetch it from Google's font server, which fails offline (a classroom network).
FAVICON = str(ROOT / "assets" / "favicon.png")
PAGE_CONFIG = dict(page_title="vit-explain: a Vision Transformer, tensor by tensor", page_icon=FAVICON,
                   layout="wide", initial_sidebar_state="auto")


def _leave_folder_mode() -> None:
    """Run the page through app.py's navigation even when a deep link is the server's first visit.

    Until some script calls ``st.navigation``, Streamlit treats an app with a ``pages/`` folder the old
    way: a link to ``/attention`` on a freshly started server runs ``pages/attention.py`` alone, with a
    navigation menu of file names (``app``, ``attention``, ``embeddings`` ...), for every visitor until
    someone opens ``/``. ``st.navigation`` switches that mode off; doing the same here and running
    again makes the link open the same page through app.py (same URL, so the same page). Only on a
    session's first run, which has no clicks to lose: AppTest turns folder mode back on before every
    run and runs a switched-to page on its own by design.
    """
    try:  # a Streamlit internal (as of 1.67): if it moves, pages still work, only this repair is skipped
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if not st.session_state:
            st.rerun()


def sidebar() -> Run | None:
    """Draw the shared sidebar and return the current run (None, with a message shown, if nothing can run).

    Order: the model and the picture first (what a user changes most), the architecture after. Problems
    are said on the page as well as in the sidebar: a rejected upload (and which picture is used instead),
    an animation's frame, architecture settings that cannot run (the page then shows the last settings
    that ran, so it stays useful while the user fixes them).
    """
    _leave_folder_mode()
    st.set_page_config(**PAGE_CONFIG)  # also here: AppTest runs a switched-to page without app.py
    from .trainer import page_run_started

    page_run_started()  # background training runs (the Training page) pause while pages are drawn
    _collect_garbage_now_and_then()
    st.sidebar.html(_PAGE_CSS)
    st.sidebar.html(_CLOSE_SIDEBAR_AFTER_NAVIGATION_JS, unsafe_allow_javascript=True)
    source = _choose_model()
    picture, slot = _choose_image()
    _picture_messages(picture)
    if picture is None:
        st.info("Pick a sample picture or upload one in the sidebar to begin.")
        return None
    if source is None:
        st.info("Choose a model in the sidebar.")
        return None
    base = _load_base(source)
    if base is False:
        st.warning("The chosen model could not be loaded (the reason is in the sidebar). "
                   "The bundled models and random weights always work offline.")
        return None
    base_config = base.config if base is not None else ViTConfig(num_labels=10, id2label={i: f"class {i}" for i in range(10)})
    config = _choose_config(source, base_config)
    with_pooler = bool(base is not None and getattr(getattr(base, "vit", base), "pooler", None) is not None)
    _config_metrics(config, with_pooler, config.num_labels if (base is None or hasattr(base, "classifier")) else 0)

    state = st.session_state
    digest = image_digest(picture.data)
    good = state.get("_last_good_config", {})
    attempts = [config] + [c for c in (_config_from_json(good.get(source)), base_config) if c is not None]
    problem, model, core = None, None, None
    for attempt in attempts:
        try:
            check_token_budget(attempt)
            config_json = _config_json(attempt)
            model = _model(source, config_json)
            core = _core_trace(digest, source, config_json, picture.data)
            break
        except InvalidImageError as exc:
            st.error(f"**{picture.description}** cannot be used: {exc}", icon=":material/broken_image:")
            return None
        except (ValueError, RuntimeError) as exc:  # over a limit, or an impossible resample
            problem = problem or str(exc)
    if core is None:
        st.error(f"**These architecture settings cannot run.** {problem}", icon=":material/block:")
        return None
    if problem is not None:
        shown = model.config
        st.error(
            f"**These architecture settings cannot run.** {problem}\n\n"
            f"Until you change them in the sidebar, this page shows the last settings that ran: image "
            f"{shown.image_size} px, patch {shown.patch_size} px, {_count(shown.num_hidden_layers, 'layer')} x "
            f"{_count(shown.num_attention_heads, 'head')}.", icon=":material/block:")
    else:
        good[source] = config_json
        state["_last_good_config"] = good
    spec = getattr(model, "preprocess_spec", None)
    mean = spec.image_mean if spec is not None else (0.5, 0.5, 0.5)
    std = spec.image_std if spec is not None else (0.5, 0.5, 0.5)
    image = display_image(core["pixel_values"], mean, std)
    size = model.config.image_size
    slot.image(image, width=140,
               caption=f"{picture.name}, as the model sees it ({size} x {size}) · "
                       + ("your upload" if picture.origin == "upload" else "sample picture"))
    if picture.note:
        slot.caption(picture.note)
    return Run(image_name=picture.name, digest=digest, source=source, model=model, config=model.config,
               trained=source != RANDOM, core=core, image=image, image_origin=picture.origin,
               picture_data=picture.data)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _config_from_json(config_json: str | None) -> ViTConfig | None:
    return ViTConfig.from_dict(json.loads(config_json)) if config_json else None


# ---------------------------------------------------------------------------------- page parts
def stage_header(title: str, summary: str, classes: list[str] | None = None) -> None:
    """Title, what this stage does in plain words, and which classes of the model code it covers."""
    st.title(title)
    if classes:
        st.caption("Classes in the code on this page: " + " · ".join(f"`{c}`" for c in classes))
    st.markdown(summary)


def shapes(rows: list[tuple[str, str, tuple[int, ...]]]) -> None:
    """A table of live tensor shapes: (what, named shape such as "[batch, tokens, hidden]", numbers)."""
    lines = ["| tensor | shape | here |", "|---|---|---|"]
    for what, named, numbers in rows:
        lines.append(f"| {what} | `{named}` | `[{', '.join(str(int(n)) for n in numbers)}]` |")
    st.markdown("\n".join(lines))


def einops_expression(code: str, caption: str | None = None) -> None:
    st.code(textwrap.dedent(code).strip(), language="python")
    if caption:
        st.caption(caption)


_SOURCE_LOCK = threading.Lock()


@functools.cache
def _source_of(obj: Any) -> str:
    # inspect.getsource parses the whole module with `ast`; under many concurrent sessions that raised
    # "SystemError: AST constructor recursion depth mismatch" in the load test. One parse per object, serialised.
    with _SOURCE_LOCK:
        return inspect.getsource(obj)


def source_key(*objects: Any) -> str:
    """The widget key of the source-code section that shows these objects."""
    return "source:" + "+".join(getattr(obj, "__qualname__", str(obj)) for obj in objects)


def show_source(*objects: Any, label: str = "The real source code of this stage") -> None:
    """The actual code of these classes/functions, read with inspect (so it never goes stale).

    A closed section whose code is sent only while it is open: Streamlit's front end colours every line
    of code it is sent, even inside a closed expander (checked: a closed expander's 40 lines became 180
    coloured spans), about 0.05 s of browser CPU a code block when measured for issue 15."""
    def code() -> None:
        for obj in objects:
            st.code(_source_of(obj), language="python")

    _drawn_while_open(label, source_key(*objects), ":material/code:", code)


def _drawn_while_open(label: str, key: str, icon: str, draw: Callable[[], None]) -> None:
    """An expander that reruns the page when opened or closed; ``draw`` fills it only while it is open."""
    box = st.expander(label, key=key, on_change="rerun", icon=icon)
    if box.open:
        with box:
            draw()


def lazy_section(title: str, key: str, draw: Callable[[], None], *, what: str) -> None:
    """A closed section (an expander with ``title``) whose contents ``draw`` computes only while it is open.

    A page's last, optional sections go here, so the browser draws them only for a student who asks for
    them: at ViT-B/16 every Plotly figure costs the browser tens of milliseconds of CPU on each visit.
    ``what`` says in a few words what opening it shows (after the title, in the label). ``key`` is
    ``"<page>:open_<section>"`` (the tests find closed sections by it). A section is closed again when the
    student comes back from another page (Streamlit forgets the state of widgets a page did not draw).
    """
    if ":open_" not in key:
        raise ValueError(f"a lazy section's key looks like 'page:open_name', not {key!r}")
    _drawn_while_open(f"**{title}** · {what}", key, ":material/unfold_more:", draw)


def trace_download(run: Run) -> Callable[[], bytes]:
    """What a trace download button calls on the click: from the picture's bytes when the run has them
    (the session keeps no copy of the trace for the button), else from the run's own trace."""
    if run.picture_data:
        return functools.partial(_trace_file, run.digest, run.source, run.config_json, run.picture_data)
    return run.npz_bytes


def download_trace(run: Run, key: str) -> None:
    st.download_button(
        "Download this trace (.npz)", data=trace_download(run), file_name=f"vit-trace-{run.digest[:12]}.npz",
        mime="application/octet-stream", key=key, icon=":material/download:",
        help="Every stage-level tensor of this forward pass as float32 numpy arrays (np.load reads it).",
        on_click="ignore",
    )


def next_stage(current: str) -> None:
    """A link to the stage after ``current`` (a page path from PAGES)."""
    paths = [p for p, _, _ in PAGES]
    index = paths.index(current)
    st.divider()
    if index + 1 < len(PAGES):
        path, title, icon = PAGES[index + 1]
        st.page_link(path, label=f"Next stage: {title}", icon=icon)
    else:
        st.page_link(PAGES[0][0], label="Back to the overview", icon=PAGES[0][2])


#: Tags a figure title may use (Plotly's own small HTML subset); everything else is shown as text.
_TITLE_TAGS = ("b", "i", "sub", "sup")


def _title_html(text: str) -> str:
    import html
    import re

    out = html.escape(text, quote=False)
    for tag in _TITLE_TAGS:
        out = out.replace(f"&lt;{tag}&gt;", f"<{tag}>").replace(f"&lt;/{tag}&gt;", f"</{tag}>")
    return re.sub(r"&lt;br\s*/?&gt;", " ", out)


def plot(fig, key: str | None = None, **kwargs):
    """st.plotly_chart with the project's defaults (full width, no Plotly logo or mode bar).

    The figure's title (and subtitle) is drawn by Streamlit above the chart instead of by Plotly: a Plotly
    title never wraps, so on a 1024 px screen long titles ran out of their half-width column, and the
    mode bar sat on top of them. The title text stays in the figure's ``layout.meta`` (tests read it).
    """
    title = fig.layout.title
    text = title.text if title is not None else None
    subtitle = title.subtitle.text if title is not None and title.subtitle is not None else None
    if text:
        fig.update_layout(title=dict(text=None, subtitle=dict(text=None)), meta=dict(title=text, subtitle=subtitle))
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 60
        lines = [1 + str(a.text or "").count("<br>") for a in fig.layout.annotations
                 if a.yref == "paper" and (a.y or 0) >= 0.99]  # panel titles above the plot area
        legend_on_top = fig.layout.legend.y is not None and fig.layout.legend.y >= 1
        need = 14 + 18 * max(lines + [1 if legend_on_top else 0])
        fig.update_layout(margin_t=max(min(top - 40, 60), need))
        words = f"<b>{_title_html(text)}</b>"
        if subtitle:
            words += f"<br><span style='font-size:0.85rem;color:#555'>{_title_html(subtitle)}</span>"
        st.markdown(f"<div style='font-size:0.95rem;line-height:1.35'>{words}</div>",
                    unsafe_allow_html=True)
    return st.plotly_chart(fig, key=key, config={"displaylogo": False, "displayModeBar": False}, **kwargs)


def bundled_name(source: str) -> str | None:
    """"vit-cifar10" for the source "bundled:vit-cifar10" (None for any other kind of weights)."""
    return source[len(BUNDLED):] if source.startswith(BUNDLED) else None


def model_knowledge(run: Run) -> None:
    """Say what the chosen model knows (and cannot), and warn plainly when a photo meets the shapes model."""
    from .knowledge import knowledge_sentence, outside_training_warning

    classifier = getattr(run.model, "classifier", None)
    bundled = bundled_name(run.source)
    base_size = getattr(_base_model(run.source), "config", run.config).image_size if bundled else run.config.image_size
    st.markdown(":material/school: " + knowledge_sentence(
        run.id2label, image_size=base_size, bundled=bundled, trained=run.trained,
        has_classifier=getattr(classifier, "out_features", 0) > 0))
    warning = outside_training_warning(bundled, run.image_name)
    if warning:
        st.warning(warning, icon=":material/report:")
