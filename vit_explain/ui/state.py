"""The session-state registry: every key the shared UI keeps for a session, in one place, with typed accessors.

Streamlit keeps a session's values in ``st.session_state``. Keys the sidebar and every page share
are named here and nowhere else; a page's own keys (a chosen layer, a clicked patch) are declared
as constants at the top of that page and start with the page's prefix (``attn:``, ``pred:`` ...).

One copy of each value: a widget's value lives under its own key only. Widgets that must keep their
value while another page runs are drawn with ``persist_state="session"`` (Streamlit's own
persistence) and prepared with :func:`remember`, which repairs a stored value that the current
model no longer allows (a layer index beyond the last layer, say) before the widget is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import streamlit as st

#: Keep a widget's value across page switches (pass to every widget prepared with :func:`remember`).
PERSIST = "session"

# ---- the sidebar's widgets (their values, one copy each)
MODEL = "w:model_choice"  #: the weights source string ("bundled:vit-cifar10", "random", "hub:org/name" ...)
LOCAL_PATH = "w:local_path"  #: the checkpoint folder typed in (never offered in classroom mode)
SAMPLE = "w:sample"  #: the picture list's choice: a sample file name, or UPLOAD
UPLOADER = "upload"  #: the file uploader widget (its value is only read in its on_change callback)
#: the architecture sliders, by config field: the widget key of each
SLIDERS = {name: f"w:{name}" for name in ("image_size", "patch_size", "hidden_size", "num_heads", "num_layers", "mlp_size")}
ATTENTION_SCALE = "view:attn_fixed"  #: the app-wide "fixed 0..1 colour scale" toggle

# ---- values the sidebar keeps for the session (no widget)
UPLOADED = "uploaded"  #: (file name, bytes, note or None) of the session's accepted upload
UPLOAD_ERROR = "_upload_error"  #: (file name, reason, page hash) of the last refused upload
REMOVED_UPLOAD = "_removed_upload"  #: (upload, was in use, monotonic time) just after the box was emptied
UPLOAD_PAGE = "_upload_page"  #: the page hash where the current upload was made (its notes are shown there)
LAST_SAMPLE = "_last_sample"  #: the sample in use before the upload (removing the upload goes back to it)
PICTURE = "image"  #: (name, bytes) of the picture every page uses now
CONFIG_SOURCE = "_config_source"  #: the source the architecture sliders were last set for
LAST_GOOD = "_last_good_config"  #: {source: config JSON} of the last settings that ran, per source
SESSION_MODELS = "_session_models"  #: {source: (label, model)} trained on the Training page

#: The picture list's entry for the session's own upload (a name no sample file can have).
UPLOAD = "\x00your upload"


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def drop(*keys: str) -> None:
    for key in keys:
        st.session_state.pop(key, None)


# ---- typed accessors
@dataclass(frozen=True)
class Upload:
    """The session's accepted upload."""

    name: str
    data: bytes
    note: str | None = None  # e.g. which frame of an animation the model sees


def uploaded() -> Upload | None:
    value = get(UPLOADED)
    return Upload(*value) if value else None


def set_uploaded(upload: Upload | None) -> None:
    if upload is None:
        drop(UPLOADED)
    else:
        put(UPLOADED, (upload.name, upload.data, upload.note))


def model_choice() -> str | None:
    return get(MODEL)


def session_models() -> dict[str, tuple[str, Any]]:
    """The models trained in this session, {source: (label, model)} (the dict itself: callers may add)."""
    return st.session_state.setdefault(SESSION_MODELS, {})


def last_good_configs() -> dict[str, str]:
    return st.session_state.setdefault(LAST_GOOD, {})


# ---- widgets whose value survives page switches
def remember(key: str, fix: Callable[[Any], Any]) -> str:
    """Prepare the widget ``key`` (drawn with ``persist_state="session"``) and return ``key``.

    ``fix(value)`` turns the stored value (None the first time) into one the current settings allow,
    e.g. a layer index clamped to the current number of layers; the widget then shows that value.
    """
    # Written back every run, even unchanged: a value set through the session state before the widget is
    # drawn is the one the widget takes. (A page switch draws the sidebar's widgets anew, with identities of
    # that page, and Streamlit could otherwise restore an older value kept for one of them.)
    value = fix(st.session_state.get(key))
    st.session_state[key] = value
    from .links import applied

    applied(key, value)  # a value asked for by a link that had to change is said on the page
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
    from .links import applied

    applied(key, value)
    return value


def store_clicked_patch(chart_key: str, state_key: str) -> None:
    """``on_select`` callback: keep the patch clicked on chart ``chart_key`` in ``st.session_state[state_key]``."""
    from ..charts.common import clicked_patch

    index = clicked_patch(st.session_state.get(chart_key))
    if index is not None:
        st.session_state[state_key] = index
