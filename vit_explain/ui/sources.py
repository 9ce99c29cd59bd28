"""Where the weights come from: one type for a model source, and one function that gets its model.

A source is written as a short string (the sidebar's value, the cache key): ``bundled:<name>`` (a
model trained by this project, in ``assets/models/<name>/``), ``random`` (fresh weights, seed 0),
``hub:<org>/<name>`` (a Hugging Face Hub checkpoint), ``local:<path>`` (a folder on the server;
never in classroom mode) or ``session:<run>`` (a model trained on the Training page, kept in its
session only). :class:`ModelSource` parses and names them; :func:`get_model` returns the model for
a source and an architecture.

Caching: checkpoints and the models built from them live in ``st.cache_resource`` (one object
shared by all sessions, never copied). No cached function here draws anything: a Hub checkpoint
is downloaded by :func:`fetch` (with its progress bar) before the cached loader reads it from
the disk cache, because an element drawn inside a cached function into a block made outside it
cannot be replayed on a cache hit (Streamlit's CacheReplayClosureError).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st
import torch

from ..config import ViTConfig
from ..preprocess import PreprocessSpec
from . import state

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
MODELS_DIR = ROOT / "assets" / "models"

#: The models trained by this project and shipped in assets/models/<name>/, in the order offered
#: (the first one present is the default): name -> (menu label, what it is).
BUNDLED_MODELS = {
    "vit-cifar10": ("CIFAR-10 photos model (trained here, offline)", "the bundled CIFAR-10 model (assets/models/vit-cifar10)"),
    "shapes": ("Synthetic shapes model (trained here, offline)", "the bundled shapes model (assets/models/shapes)"),
}
BUNDLED = "bundled:"
RANDOM = "random"
LOCAL = "local"  #: the sidebar's choice "a folder on this computer" (the path is typed after it)
HUB = "hub:"
SESSION = "session:"
#: Trained models a session keeps at most (the oldest go first).
MAX_SESSION_MODELS = 3
RANDOM_SEED = 0
#: Models up to this many bytes of weights share a roomier cache: a class moving the patch-size slider
#: of the bundled model (1.9 MB) should not rebuild it on every change, while two ViT-B/16 variants
#: (350 MB each) are as many as a server should keep.
SMALL_MODEL_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: ``kind`` is bundled, random, hub, local or session."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> "ModelSource":
        if text == RANDOM:
            return cls("random")
        for kind in ("bundled", "hub", "local", "session"):
            if text.startswith(kind + ":") and len(text) > len(kind) + 1:
                return cls(kind, text[len(kind) + 1:])
        raise ValueError(f"unknown model source {text!r}")

    def __str__(self) -> str:
        return RANDOM if self.kind == "random" else f"{self.kind}:{self.name}"

    @property
    def trained(self) -> bool:
        return self.kind != "random"

    @property
    def hub_repo(self) -> tuple[str, str | None]:
        """(repo id, revision or None) of a Hub source written ``hub:org/name`` or ``hub:org/name@revision``."""
        repo_id, _, revision = self.name.partition("@")
        return repo_id, revision or None

    @property
    def bundled_name(self) -> str | None:
        return self.name if self.kind == "bundled" else None


def bundled_name(source: str) -> str | None:
    """"vit-cifar10" for the source "bundled:vit-cifar10" (None for any other kind of weights)."""
    return source[len(BUNDLED):] if source.startswith(BUNDLED) else None


def classroom_mode() -> bool:
    """True when the server is shared (``VIT_EXPLAIN_CLASSROOM=1``): users cannot name server paths."""
    return os.environ.get("VIT_EXPLAIN_CLASSROOM", "").strip().lower() in ("1", "true", "yes", "on")


def model_options() -> dict[str, str]:
    """The sidebar's weights list: {source: label}, bundled models first."""
    from ..weights import KNOWN_CHECKPOINTS

    options = {}
    for name, (label, _) in BUNDLED_MODELS.items():
        if (MODELS_DIR / name / "config.json").is_file():
            options[BUNDLED + name] = label
    for source, (label, _) in state.session_models().items():
        options[source] = label
    options[RANDOM] = "Random weights (untrained)"
    for repo_id, info in KNOWN_CHECKPOINTS.items():
        options[HUB + repo_id] = f"{info.title} — Hub, {info.download_mb:.0f} MB"
    from .hub_box import HUB_OTHER, box_enabled, loaded_models

    if box_enabled():
        options.update(loaded_models())
        options[HUB_OTHER] = "Another model on the Hub (type its id)"
    if not classroom_mode():  # on a shared server a path box would let anyone probe the server's disk
        options[LOCAL] = "A checkpoint folder on this computer"
    return options


# ---------------------------------------------------------------------------------- session models
def add_session_model(source: str, label: str, model) -> None:
    """Offer ``model`` (trained on the Training page) as a weights choice for the rest of this session."""
    models = state.session_models()
    models[source] = (label, model)
    while len(models) > MAX_SESSION_MODELS:
        models.pop(next(iter(models)))


def _session_model(source: str):
    entry = state.session_models().get(source)
    if entry is None:
        raise ValueError("this trained model is no longer kept in this session (a session keeps its last "
                         f"{MAX_SESSION_MODELS}); train again on the Training page")
    return entry[1]


# ---------------------------------------------------------------------------------- getting a model
ProgressFn = Callable[[float, str], None]


def fetch(source: str, progress: ProgressFn | None = None) -> None:
    """Bring a Hub checkpoint into the local disk cache (one download per repository for the whole
    server), reporting ``progress(fraction, message)``; checks its config before any weight file moves.
    Nothing to do for other sources. Raises CheckpointError / HubUnreachableError with a plain message."""
    parsed = ModelSource.parse(source)
    if parsed.kind != "hub":
        return
    from ..weights import fetch_repo
    from ..weights.hf_format import check_config

    repo_id, revision = parsed.hub_repo
    fetch_repo(repo_id, revision=revision, progress=progress, check=check_config)


def get_model(source: str, config: ViTConfig | None = None):
    """The model for ``source``: its checkpoint as it is (``config`` None), or rebuilt for ``config``.

    With a config that differs from the checkpoint's (patch size, image size, heads, layers), the
    trained weights are resampled onto it (:func:`vit_explain.weights.resample`); random weights are
    built for it. Random weights need a config. Cached for the whole server.
    """
    parsed = ModelSource.parse(source)
    if config is None:
        if parsed.kind == "random":
            raise ValueError("random weights have no checkpoint: give the architecture (a ViTConfig)")
        return _session_model(source) if parsed.kind == "session" else _checkpoint(source)
    config_json = config_key(config)
    if 4 * parameter_count(config, with_pooler=True, num_labels=config.num_labels) <= SMALL_MODEL_BYTES:
        return _small_model(source, config_json)
    return _large_model(source, config_json)


def config_key(config: ViTConfig) -> str:
    """The config as a canonical JSON string (part of every cache key)."""
    return json.dumps(config.to_dict(), sort_keys=True)


def config_from_key(config_json: str | None) -> ViTConfig | None:
    return ViTConfig.from_dict(json.loads(config_json)) if config_json else None


@st.cache_resource(max_entries=2, show_spinner="Loading the checkpoint ...")
def _checkpoint(source: str):
    """The checkpoint behind a bundled, Hub or local source, loaded once per server (draws nothing)."""
    from ..weights import load_checkpoint

    parsed = ModelSource.parse(source)
    if parsed.kind == "bundled" and parsed.name in BUNDLED_MODELS:
        model = load_checkpoint(MODELS_DIR / parsed.name)
        model.source = BUNDLED_MODELS[parsed.name][1]  # not the server's absolute path
        return model
    if parsed.kind == "hub":
        repo_id, revision = parsed.hub_repo
        return load_checkpoint(repo_id, revision=revision)
    if parsed.kind == "local":
        return load_checkpoint(parsed.name)
    raise ValueError(f"unknown model source {source!r}")


@st.cache_resource(max_entries=16, show_spinner="Building the model ...")
def _small_model(source: str, config_json: str):
    return _build(source, config_json)


@st.cache_resource(max_entries=2, show_spinner="Building the model ...")
def _large_model(source: str, config_json: str):
    return _build(source, config_json)


def _build(source: str, config_json: str):
    from ..model import ViTForImageClassification
    from ..weights import resample

    config = config_from_key(config_json)
    if source == RANDOM:
        model = ViTForImageClassification(config)
        model.init_weights(seed=RANDOM_SEED)
        model.preprocess_spec = PreprocessSpec.for_config(config)
        model.source = f"random weights (seed {RANDOM_SEED})"
        return model.eval()
    base = get_model(source)
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


def parameter_count(config: ViTConfig, with_pooler: bool, num_labels: int) -> int:
    from ..flops import architecture

    return architecture(config, has_pooler=with_pooler, classifier=bool(num_labels), num_labels=num_labels)[0].params


def has_pooler(model: torch.nn.Module | None) -> bool:
    from ..model import backbone

    return bool(model is not None and getattr(backbone(model), "pooler", None) is not None)
