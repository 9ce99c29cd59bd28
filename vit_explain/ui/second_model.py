"""A second model on the sidebar's picture (the Compare page): its list, its run, and whether a Hub pair is at hand.

Model A is always the sidebar's run (so the app holds one trace per model, two in all); model B runs
here on the same picture, through the same bounded ``core_trace`` cache, each model with its own
preprocessing and labels. Nothing here changes the sidebar's modules; it only reuses them.
"""

from __future__ import annotations

import logging

import streamlit as st
import torch

from ..pipeline import check_token_budget, display_image
from . import state
from .hub_box import HUB_OTHER
from .pictures import sample_bytes, sample_names
from .run import Run, RunKey, core_trace
from .sources import LOCAL, ModelSource, config_key, fetch, get_model, model_options

log = logging.getLogger(__name__)


def second_model_options(current: str | None = None) -> dict[str, str]:
    """The sidebar's weights list without the entries that need typing (another Hub id, a folder), plus
    ``current`` (e.g. the folder or Hub id the sidebar uses now) when the list lacks it: {source: label}."""
    options = {s: label for s, label in model_options().items() if s not in (HUB_OTHER, LOCAL)}
    if current and current not in options and current not in (HUB_OTHER, LOCAL):
        parsed = ModelSource.parse(current)
        options[current] = f"{parsed.name} — {'Hub' if parsed.kind == 'hub' else parsed.kind}"
    return options


def model_label(source: str) -> str:
    """A short, readable name of a weights source (its label in the weights list when it has one)."""
    label = model_options().get(source)
    if label:
        return label.split(" (")[0].split(" — ")[0]
    parsed = ModelSource.parse(source)
    return parsed.name or source


def second_run(source: str, like: Run, *, where=None) -> Run | None:
    """Model ``source``'s forward pass on the picture of run ``like`` (model A), or None with the reason shown.

    Trained weights run with their own architecture, preprocessing and labels; random weights take A's
    architecture ("the same model before training"). A Hub checkpoint is fetched first, with a progress
    bar in ``where`` (the page by default), outside any cached function (see :mod:`.sources`).
    """
    from ..weights import CheckpointError

    where = where or st
    parsed = ModelSource.parse(source)
    try:
        if parsed.kind == "hub":
            bar = where.empty()
            try:
                fetch(source, lambda f, text: bar.progress(min(max(float(f), 0.0), 1.0), text=text))
            finally:
                bar.empty()
        config = like.config if parsed.kind == "random" else get_model(source).config
        check_token_budget(config)
        model = get_model(source, config)
        key = RunKey(like.digest, source, config_key(config))
        core = core_trace(key, like.picture_data)
    except (CheckpointError, OSError, ValueError, torch.OutOfMemoryError) as exc:  # said on the page; A stays
        log.warning("model B %s could not run: %s", source, exc, exc_info=not isinstance(exc, CheckpointError))
        where.warning(f"**Model B ({model_label(source)}) cannot run here:** {exc}", icon=":material/cloud_off:")
        return None
    spec = getattr(model, "preprocess_spec", None)
    mean = spec.image_mean if spec is not None else (0.5, 0.5, 0.5)
    std = spec.image_std if spec is not None else (0.5, 0.5, 0.5)
    return Run(image_name=like.image_name, key=key, model=model, config=model.config, trained=parsed.trained,
               core=core, image=display_image(core["pixel_values"], mean, std), image_origin=like.image_origin,
               picture_data=like.picture_data)


def similarity_pictures() -> list[tuple[str, bytes]]:
    """The pictures the layer similarity is measured on: the session's upload (if any), then every sample."""
    upload = state.uploaded()
    pictures = [(upload.name, upload.data)] if upload else []
    return pictures + [(name, sample_bytes(name)) for name in sample_names()]


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def hub_status(repo_ids: tuple[str, ...]) -> str | None:
    """None when every one of these Hub checkpoints can be loaded now (in the local cache, or the Hub
    reachable), else the reason in a few words. Asked at most once every five minutes per server: the probe of
    the Hub can take a few seconds where the network is down."""
    from huggingface_hub import try_to_load_from_cache

    from ..weights.hub import _hub_endpoint, _hub_offline, _hub_reachable

    def cached(repo_id: str) -> bool:
        files = [try_to_load_from_cache(repo_id, name) for name in ("config.json", "model.safetensors")]
        return all(isinstance(f, str) for f in files)

    missing = [r for r in repo_ids if not cached(r)]
    if not missing:
        return None
    if _hub_offline():
        return f"offline (HF_HUB_OFFLINE is set) and {', '.join(missing)} not in the local cache"
    if not _hub_reachable(_hub_endpoint()):
        return f"the Hugging Face Hub cannot be reached from this server and {', '.join(missing)} not in its cache"
    return None


__all__ = ["second_model_options", "model_label", "second_run", "similarity_pictures", "hub_status"]
