"""Links that reopen a view: the shareable part of a session's state, written to and read from the URL.

Every run writes the view's state to the URL's query parameters (:func:`write_link`), so the
address bar always holds a link to what is on the screen. A session's first run reads them back
(:func:`read_link`) before any widget is drawn. A link is untrusted input: unknown parameters are
ignored; a repeated, over-long, malformed or out-of-range value falls back to the default, and the
page says so once; a link can name only what the sidebar would offer anyone (a bundled model,
random weights, a Hub checkpoint offered by name, a sample picture): never a folder or file on the
server, an upload, a model trained in another session or any other download.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlencode

import streamlit as st

from . import state

log = logging.getLogger(__name__)

#: URL parameter -> (session key, kind). Sidebar values first, then the pages' own.
LINKED: dict[str, tuple[str, type]] = {
    "model": (state.MODEL, str),
    "picture": (state.SAMPLE, str),
    "image_size": (state.SLIDERS["image_size"], int),
    "patch_size": (state.SLIDERS["patch_size"], int),
    "hidden_size": (state.SLIDERS["hidden_size"], int),
    "heads": (state.SLIDERS["num_heads"], int),
    "layers": (state.SLIDERS["num_layers"], int),
    "mlp_size": (state.SLIDERS["mlp_size"], int),
    "fixed_scale": (state.ATTENTION_SCALE, bool),
    "attn_layer": ("attn:layer", int),
    "attn_head": ("attn:head", int),
    "attn_query": ("attn:query", int),
    "attn_mean": ("attn:mean_heads", bool),
    "mlp_layer": ("mlp:layer", int),
    "pca_layer": ("layers:pca_layer", int),
    "step": ("lesson:step", int),
    "presenter": ("view:presenter", bool),
}
MAX_CHARS = 200  #: longer values are refused unread
_INT = re.compile(r"-?\d{1,6}")
_BOOLS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}

READ = "_link_read"  #: set once the session's first run has read its link
REQUESTED = "_link_requested"  #: {session key: value the link asked for}, until the page has applied it
PROBLEMS = "_link_problems"  #: URL parameters whose values could not be used


def shareable_source(source: str | None) -> bool:
    """Can a link name this model source? Only what the sidebar offers every visitor of any server."""
    from ..weights import KNOWN_CHECKPOINTS
    from .sources import BUNDLED, BUNDLED_MODELS, HUB, MODELS_DIR, RANDOM

    if not isinstance(source, str):
        return False
    if source == RANDOM:
        return True
    if source.startswith(BUNDLED):
        name = source[len(BUNDLED):]
        return name in BUNDLED_MODELS and (MODELS_DIR / name / "config.json").is_file()
    return source.startswith(HUB) and source[len(HUB):] in KNOWN_CHECKPOINTS


def _parse(name: str, values: list[str]):
    """The typed value of one parameter, or raise ValueError."""
    if len(values) != 1:
        raise ValueError("repeated")
    raw = values[0]
    if len(raw) > MAX_CHARS:
        raise ValueError("too long")
    key, kind = LINKED[name]
    if kind is int:
        if not _INT.fullmatch(raw.strip()):
            raise ValueError("not a whole number")
        return int(raw)
    if kind is bool:
        if raw.strip().lower() not in _BOOLS:
            raise ValueError("not true or false")
        return _BOOLS[raw.strip().lower()]
    if key == state.MODEL and not shareable_source(raw):
        raise ValueError("not a model a link can open")
    if key == state.SAMPLE:
        from .pictures import sample_names

        if raw not in sample_names():
            raise ValueError("not a sample picture")
    return raw


def read_link() -> None:
    """On a session's first run: put the link's values into the session state (before any widget is drawn)."""
    session = st.session_state
    if session.get(READ):
        return
    session[READ] = True
    requested, problems = {}, []
    params = st.query_params
    for name in list(params.keys()):
        if name not in LINKED:
            continue  # unknown parameters are ignored
        try:
            value = _parse(name, params.get_all(name))
        except ValueError as exc:
            log.info("link parameter %r refused (%s)", name[:40], exc)
            problems.append(name)
            continue
        key = LINKED[name][0]
        requested[key] = value
        session[key] = value
    if any(k in requested for k in state.SLIDERS.values()):
        from .sources import model_options

        # keep the link's architecture: the sidebar resets the sliders when the model changes
        session[state.CONFIG_SOURCE] = requested.get(state.MODEL) or next(iter(model_options()))
    session[REQUESTED] = requested
    session[PROBLEMS] = problems


def applied(key: str, value) -> None:
    """Called when a widget's stored value has been checked: a link's value that had to change is noted."""
    requested = st.session_state.get(REQUESTED)
    if not requested or key not in requested:
        return
    wanted = requested.pop(key)
    if wanted != value:
        name = next((n for n, (k, _) in LINKED.items() if k == key), key)
        st.session_state.setdefault(PROBLEMS, []).append(name)


def current_params() -> dict[str, str]:
    """The view's shareable state as URL parameters."""
    session = st.session_state
    params: dict[str, str] = {}
    for name, (key, kind) in LINKED.items():
        value = session.get(key)
        if value is None:
            continue
        if key == state.MODEL and not shareable_source(value):
            continue
        if key == state.SAMPLE and value == state.UPLOAD:
            continue
        if kind is bool:
            params[name] = "true" if value else "false"
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            params[name] = str(value)
    return params


def write_link() -> None:
    """Make the address bar a link to this view (unknown and refused parameters leave it)."""
    params = current_params()
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def what_a_link_cannot_carry() -> list[str]:
    """Plain sentences for the parts of this view a link cannot carry, and what it shows instead."""
    session = st.session_state
    notes = []
    if session.get(state.SAMPLE) == state.UPLOAD:
        notes.append("your upload (the link opens the first sample picture instead)")
    model = session.get(state.MODEL)
    if model is not None and not shareable_source(model):
        notes.append("this model (a folder on this computer, a model trained in this session or one typed into the "
                     "Hub box): the link opens the default model instead")
    return notes


def link_control() -> None:
    """The sidebar's "Link to this view": the address to copy, and what it cannot carry."""
    base = (getattr(st.context, "url", None) or "").split("?")[0]
    url = base + "?" + urlencode(current_params())
    with st.sidebar.popover("Link to this view", icon=":material/link:", width="stretch"):
        st.caption("Copy this address (the button at its right): it reopens this page with the same model, picture, "
                   "settings and choices in any browser that can reach this server.")
        st.code(url, language=None, wrap_lines=True)
        cannot = what_a_link_cannot_carry()
        if cannot:
            st.caption("A link cannot carry " + "; ".join(cannot) + ".")


def link_notice(slot) -> None:
    """Say once, in ``slot`` on the page, which of the link's values could not be used."""
    problems = st.session_state.get(PROBLEMS)
    if not problems:
        return
    st.session_state[PROBLEMS] = []
    names = ", ".join(sorted(set(p[:40] for p in problems)))
    slot.info(f"This link asked for values this app cannot show here ({names}); those settings are at their "
              "defaults instead.", icon=":material/link_off:")
