"""The picture every page uses: the samples, the session's upload, and what the sidebar says about them.

The picture in use lives in the session-state registry (:mod:`.state`), never in the uploader's
value: a page switch draws a fresh, empty uploader (Streamlit gives each page's widgets their own
identity) without calling its ``on_change``, so the uploader's value cannot say what is in use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from ..preprocess import InvalidImageError, load_image
from . import state

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "samples"
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: The picture a new session starts on (tests/test_cifar_model.py checks the default model names it right).
DEFAULT_SAMPLE = "horse.png"
#: How soon after the upload box was emptied a new file counts as replacing the old one (see take_upload).
REPLACE_WINDOW_S = 30.0


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


@st.cache_data(max_entries=32, show_spinner=False)
def sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def sample_names() -> list[str]:
    if not SAMPLES_DIR.is_dir():
        return []
    names = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)
    # the default picture comes first: one the default (CIFAR-10) model names correctly
    return sorted(names, key=lambda name: name != DEFAULT_SAMPLE)


def _frames_note(info: dict) -> str | None:
    """For an animated or multi-page file (``load_image``'s source info): which frame the model sees."""
    frames = int(info.get("frames", 1) or 1)
    if frames <= 1:
        return None
    kind = "page" if info.get("format") == "TIFF" else "frame"
    return (f"This {info.get('format') or 'image'} file has {frames} {kind}s; the model sees only the first "
            f"{kind}.")


def page_hash() -> str:
    """Which page is running (notes about an action are repeated on the page where it happened)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return getattr(ctx, "page_script_hash", "") if ctx is not None else ""


def take_upload() -> None:
    """``on_change`` of the uploader: a new file becomes the picture in use; removing it goes back to a sample."""
    upload = state.get(state.UPLOADER)
    current = state.uploaded()
    if upload is None:  # the file was taken out of the box
        in_use = state.get(state.SAMPLE) == state.UPLOAD
        state.put(state.REMOVED_UPLOAD, (current, in_use, time.monotonic()))
        if in_use:
            state.put(state.SAMPLE, state.get(state.LAST_SAMPLE) or (sample_names() or [state.UPLOAD])[0])
        state.set_uploaded(None)
        state.drop(state.UPLOAD_ERROR)
        return
    data = upload.getvalue()
    removed = st.session_state.pop(state.REMOVED_UPLOAD, None)
    try:
        info = load_image(data).info.get("source", {})
    except InvalidImageError as exc:
        log.info("upload %r refused: %s", upload.name, exc)
        state.put(state.UPLOAD_ERROR, (upload.name, str(exc), page_hash()))
        # A browser that drops a new file on a full box first empties it (the branch above ran a moment
        # ago): a refused replacement leaves the previous upload in use, as if it had never been touched.
        if removed and removed[0] and removed[1] and time.monotonic() - removed[2] < REPLACE_WINDOW_S:
            state.set_uploaded(removed[0])
            state.put(state.SAMPLE, state.UPLOAD)
        return
    state.drop(state.UPLOAD_ERROR)
    state.set_uploaded(state.Upload(upload.name, data, _frames_note(info)))
    state.put(state.UPLOAD_PAGE, page_hash())
    state.put(state.SAMPLE, state.UPLOAD)


def choose_picture() -> tuple[Picture | None, Any]:
    """The picture list, the uploader and a line saying which picture is in use.

    Returns the picture (None if there is none) and a sidebar slot where the sidebar shows it as the
    model sees it, right under the choice.
    """
    st.sidebar.subheader("Picture")
    names = sample_names()
    upload = state.uploaded()
    options = ([state.UPLOAD] if upload else []) + names
    picture = None
    if options:
        key = state.remember(state.SAMPLE, state.one_of(options, state.UPLOAD if upload else names[0]))
        choice = st.sidebar.selectbox(
            "Picture in use", options, key=key, persist_state=state.PERSIST,
            format_func=lambda o: f"Your upload: {upload.name}" if o == state.UPLOAD and upload else o,
            on_change=lambda: state.drop(state.UPLOAD_ERROR),
            help="Photos in the public domain and synthetic shapes made by this project's generator; your own "
                 "upload appears at the top of this list.",
        )
        if choice == state.UPLOAD and upload:
            picture = Picture(upload.name, upload.data, "upload", upload.note)
        elif choice in names:
            picture = Picture(choice, sample_bytes(choice), "sample")
            state.put(state.LAST_SAMPLE, choice)
    st.sidebar.file_uploader(
        "Upload a picture", type=None, key=state.UPLOADER, on_change=take_upload,
        help="Any common image format. Big photos are reduced; odd ones get a clear message.",
    )
    error = state.get(state.UPLOAD_ERROR)
    if error:
        st.sidebar.error(f"**{error[0]}** was not used: {error[1]}", icon=":material/broken_image:")
    slot = st.sidebar.container()
    if picture is not None:
        state.put(state.PICTURE, (picture.name, picture.data))
    return picture, slot


def picture_messages(picture: Picture | None) -> None:
    """On the page, where the eye is: a rejected upload (and what is shown instead), an animation's frame."""
    error = state.get(state.UPLOAD_ERROR)
    if error and error[2] == page_hash():
        instead = (f"The pages keep showing **{picture.description}** instead." if picture is not None
                   else "Pick a sample picture in the sidebar or try another file.")
        st.error(f"**{error[0]}** could not be used: {error[1]} {instead}", icon=":material/broken_image:")
    upload = state.uploaded()
    if picture is not None and picture.origin == "upload" and upload and upload.note:
        if state.get(state.UPLOAD_PAGE) == page_hash():
            st.info(f"**{picture.name}**: {upload.note}", icon=":material/animation:")
