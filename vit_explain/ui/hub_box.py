"""The sidebar's box for any model on the Hugging Face Hub ("org/name", optional "@revision").

Before anything large moves the box shows what it found (architecture from ``config.json``, fetched
first; parameter count; download size). A model the app cannot run is refused by name, with what is
supported, before any weight file is requested; a download over :data:`CONFIRM_MB` waits for a click.

On a shared server (``VIT_EXPLAIN_CLASSROOM=1``) the box is off unless the operator allows some
repositories with ``VIT_EXPLAIN_HUB_ALLOW`` (comma-separated ids or ``org/*`` patterns), and
downloads above ``VIT_EXPLAIN_HUB_MAX_MB`` (default 500) are refused there.
"""

from __future__ import annotations

import fnmatch
import logging
import os

import streamlit as st

from . import state
from .sources import HUB, classroom_mode

log = logging.getLogger(__name__)

#: Downloads above this many MB wait for a confirmation click.
CONFIRM_MB = 500.0
#: The sidebar's choice that opens the box.
HUB_OTHER = "hub-other"
HUB_TEXT = "w:hub_id"  #: the typed "org/name@revision"
HUB_CONFIRMED = "_hub_confirmed"  #: sources whose large download the user confirmed
HUB_MODELS = "_hub_models"  #: {source: label} of Hub models loaded through the box in this session


def allow_patterns() -> list[str]:
    return [p.strip() for p in os.environ.get("VIT_EXPLAIN_HUB_ALLOW", "").split(",") if p.strip()]


def max_mb() -> float:
    """The size cap of a classroom server (MB)."""
    try:
        return max(0.0, float(os.environ.get("VIT_EXPLAIN_HUB_MAX_MB", "500")))
    except ValueError:
        return 500.0


def box_enabled() -> bool:
    """The box is offered outside classroom mode, and in it only when the operator allows some repositories."""
    return not classroom_mode() or bool(allow_patterns())


def allowed(repo_id: str) -> bool:
    """May this server download ``repo_id`` through the box?"""
    if not classroom_mode():
        return True
    return any(fnmatch.fnmatchcase(repo_id.lower(), p.lower()) for p in allow_patterns())


def source_for(repo_id: str, revision: str | None) -> str:
    return f"{HUB}{repo_id}" + (f"@{revision}" if revision else "")


def loaded_models() -> dict[str, str]:
    """The Hub models this session loaded through the box, {source: label} (offered in the weights list)."""
    return st.session_state.setdefault(HUB_MODELS, {})


def remember_loaded(source: str, label: str) -> None:
    loaded_models()[source] = label


@st.cache_data(ttl=600, max_entries=64, show_spinner="Asking the Hub what this model is ...")
def _inspect(repo_id: str, revision: str | None):
    from ..weights.hub_inspect import inspect_repo

    return inspect_repo(repo_id, revision)


def choose_hub_model() -> str | None:
    """The box: returns the source to load (``hub:org/name[@rev]``) once it may be downloaded, else None
    (with the reason in the sidebar and on the page)."""
    from ..weights import CheckpointError
    from ..weights.hub_inspect import parse_repo_text

    key = state.remember(HUB_TEXT, lambda v: v if isinstance(v, str) else "")
    text = st.sidebar.text_input(
        "Another model on the Hub: org/name, optional @revision", key=key, persist_state=state.PERSIST,
        placeholder="google/vit-large-patch16-224", max_chars=200,
        help="Any ViT, DeiT or DINOv2 checkpoint of the Hugging Face Hub, or a timm vit_/deit_ model. The app "
             "reads its config.json first and says what it is before the weights are downloaded.",
    ).strip()
    if not text:
        st.sidebar.info("Type a Hub model id, e.g. google/vit-large-patch16-224 or timm/vit_small_patch16_224.augreg_in21k.")
        return None

    def refuse(message: str, icon: str = ":material/block:") -> None:
        log.info("Hub box: %s", message)
        st.sidebar.error(message, icon=icon)
        st.error(message, icon=icon)

    try:
        repo_id, revision = parse_repo_text(text)
    except ValueError as exc:
        refuse(str(exc))
        return None
    if not allowed(repo_id):
        refuse(f"This server does not download {repo_id}: in classroom mode only the repositories its operator "
               f"allows can be loaded ({', '.join(allow_patterns())}).")
        return None
    try:
        summary = _inspect(repo_id, revision)
    except (CheckpointError, OSError) as exc:
        refuse(f"Could not use {text}: {exc}", ":material/cloud_off:")
        return None
    st.sidebar.caption(f"Found {summary.describe()}.")
    if summary.refusal:
        refuse(f"{repo_id} cannot run here. {summary.refusal}")
        return None
    source = source_for(repo_id, revision)
    if classroom_mode() and summary.download_mb > max_mb():
        refuse(f"{repo_id} is {summary.download_mb:.0f} MB, more than this server's limit of {max_mb():.0f} MB "
               "(VIT_EXPLAIN_HUB_MAX_MB).")
        return None
    confirmed = st.session_state.setdefault(HUB_CONFIRMED, set())
    if summary.download_mb > CONFIRM_MB and source not in confirmed:
        st.sidebar.warning(f"{repo_id} is a large download: {summary.download_mb:.0f} MB.", icon=":material/download:")
        st.sidebar.button(f"Download {summary.download_mb:.0f} MB", key="hub:confirm", on_click=confirmed.add,
                          args=(source,), type="primary")
        st.info(f"Confirm the download of **{repo_id}** ({summary.download_mb:.0f} MB) in the sidebar to load it.",
                icon=":material/download:")
        return None
    return source
