"""The shared sidebar every page draws first: the model, the picture, the architecture, and the run they make.

Order: the model and the picture first (what a user changes most), the architecture after. Problems
are said on the page as well as in the sidebar: a rejected upload (and which picture is used
instead), an animation's frame, a model that cannot be loaded, architecture settings that cannot
run (the page then shows the last settings that ran, so it stays useful while the user fixes them).
Every problem shown to a user is also written to the server's log.
"""

from __future__ import annotations

import logging

import streamlit as st
import torch

from ..config import ViTConfig
from ..pipeline import MAX_TOKENS, attention_memory_bytes, check_token_budget, display_image
from ..preprocess import InvalidImageError, image_digest
from . import state
from .hub_box import HUB_OTHER, allowed, choose_hub_model, remember_loaded
from .links import read_link
from .navigation import PAGE_CONFIG, install_page_styles, leave_folder_mode
from .pictures import choose_picture, picture_messages
from .presenter import presenter_toggle
from .run import Run, RunKey, core_trace
from .server import collect_now_and_then
from .sources import (
    HUB,
    LOCAL,
    RANDOM,
    ModelSource,
    classroom_mode,
    config_from_key,
    config_key,
    fetch,
    get_model,
    has_pooler,
    model_options,
    parameter_count,
)

log = logging.getLogger(__name__)

IMAGE_SIZES = [32, 48, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384]
HIDDEN_SIZES = [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
MAX_HEADS = 32
MAX_LAYERS = 24


def sidebar() -> Run | None:
    """Draw the shared sidebar and return the current run (None, with a message shown, if nothing can run)."""
    leave_folder_mode()
    st.set_page_config(**PAGE_CONFIG)  # also here: AppTest runs a switched-to page without app.py
    read_link()  # a session's first run: the link's values, before any widget is drawn
    from ..trainer import page_run_started

    page_run_started()  # background training runs (the Training page) pause while pages are drawn
    collect_now_and_then()
    install_page_styles()
    presenter_toggle()  # the projector setting, first in the sidebar (ui.presenter)
    source = choose_model()
    picture, slot = choose_picture()
    picture_messages(picture)
    if picture is None:
        st.info("Pick a sample picture or upload one in the sidebar to begin.")
        return None
    if source is None:
        st.info("Choose a model in the sidebar.")
        return None
    base = load_base(source)
    if base is False:
        st.warning("The chosen model could not be loaded (the reason is in the sidebar). "
                   "The bundled models and random weights always work offline.")
        return None
    base_config = base.config if base is not None else ViTConfig(num_labels=10, id2label={i: f"class {i}" for i in range(10)})
    config = choose_config(source, base_config)
    num_labels = config.num_labels if (base is None or hasattr(base, "classifier")) else 0
    config_metrics(config, has_pooler(base), num_labels)

    digest = image_digest(picture.data)
    good = state.last_good_configs()
    attempts = [config] + [c for c in (config_from_key(good.get(source)), base_config) if c is not None]
    problem, model, core, key = None, None, None, None
    for attempt in attempts:
        try:
            check_token_budget(attempt)
            key = RunKey(digest, source, config_key(attempt))
            model = get_model(source, attempt)
            core = core_trace(key, picture.data)
            break
        except InvalidImageError as exc:
            log.info("picture %r refused: %s", picture.name, exc)
            st.error(f"**{picture.description}** cannot be used: {exc}", icon=":material/broken_image:")
            return None
        except (ValueError, torch.OutOfMemoryError) as exc:  # over a limit, or an impossible resample
            log.info("settings %s on %s cannot run: %s", key.config_json if key else "?", source, exc, exc_info=True)
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
        good[source] = key.config_json
    spec = getattr(model, "preprocess_spec", None)
    mean = spec.image_mean if spec is not None else (0.5, 0.5, 0.5)
    std = spec.image_std if spec is not None else (0.5, 0.5, 0.5)
    image = display_image(core["pixel_values"], mean, std)
    size = model.config.image_size
    slot.image(image, width=140,
               caption=f"{picture.name}, as the model sees it ({size} x {size}) · "
                       + ("your upload" if picture.origin == "upload" else "sample picture"))
    if spec is not None:  # which transform prepared the picture: the Hugging Face processor's or timm's
        slot.caption(f"Prepared with the {spec.describe()}.")
    if picture.note:
        slot.caption(picture.note)
    return Run(image_name=picture.name, key=key, model=model, config=model.config,
               trained=ModelSource.parse(source).trained, core=core, image=image, image_origin=picture.origin,
               picture_data=picture.data)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------- the model
def choose_model() -> str | None:
    from ..weights import KNOWN_CHECKPOINTS

    st.sidebar.subheader("Model")
    options = model_options()
    key = state.remember(state.MODEL, state.one_of(list(options), next(iter(options))))
    choice = st.sidebar.selectbox(
        "Weights", list(options), format_func=options.get, key=key, persist_state=state.PERSIST,
        help="Trained weights show what a real ViT learned; random weights show the bare mechanics.",
    )
    if choice == HUB_OTHER:
        return choose_hub_model()
    if choice.startswith(HUB) and choice[len(HUB):] in KNOWN_CHECKPOINTS:
        info = KNOWN_CHECKPOINTS[choice[len(HUB):]]
        st.sidebar.caption(f"{info.description} {info.num_parameters / 1e6:.1f}M parameters; "
                           f"downloads about {info.download_mb:.0f} MB once, then comes from the cache."
                           + (f" Preprocessing: {info.preprocessing_note}" if info.preprocessing_note else ""))
    if choice == LOCAL:
        key = state.remember(state.LOCAL_PATH, lambda v: "" if v is None else v)
        path = st.sidebar.text_input(
            "Folder with config.json and model.safetensors", key=key, persist_state=state.PERSIST,
            placeholder="/path/to/checkpoint",
        ).strip()
        if not path:
            st.sidebar.info("Type the folder of a Hugging Face ViT checkpoint (or a .safetensors file).")
            return None
        return f"local:{path}"
    return choice


def load_base(source: str):
    """The unresampled model behind ``source`` (None for random weights, False with a message if it cannot load).

    A Hub checkpoint is downloaded here, with a progress bar in the sidebar, before the cached loader
    reads it (see :mod:`.sources`)."""
    if source == RANDOM:
        return None
    if source.startswith("local:") and classroom_mode():  # the sidebar never offers it; state could still hold it
        log.warning("a session asked for a server folder in classroom mode: refused")
        st.sidebar.error("Checkpoint folders on the server are switched off here (VIT_EXPLAIN_CLASSROOM).")
        return False
    from ..weights import KNOWN_CHECKPOINTS, CheckpointError

    parsed = ModelSource.parse(source)
    offered = parsed.kind == "hub" and parsed.name in KNOWN_CHECKPOINTS
    if parsed.kind == "hub" and not offered and not allowed(parsed.hub_repo[0]):  # state could still hold it
        log.warning("a session asked for %s, which this classroom server does not allow", source)
        st.sidebar.error(f"This server does not download {parsed.hub_repo[0]} (VIT_EXPLAIN_HUB_ALLOW).")
        return False
    bar = st.sidebar.empty()

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        fetch(source, progress)
        model = get_model(source)
    except (CheckpointError, OSError, ValueError) as exc:
        log.warning("model %s could not be loaded: %s", source, exc, exc_info=not isinstance(exc, CheckpointError))
        bar.empty()
        st.sidebar.error(f"Could not load this model: {exc}", icon=":material/cloud_off:")
        return False
    bar.empty()
    if parsed.kind == "hub" and not offered:  # loaded through the box: offer it in the weights list from now on
        remember_loaded(source, f"{parsed.name} — Hub")
    return model


# ---------------------------------------------------------------------------------- the architecture
def _divisors(n: int, low: int = 1, high: int | None = None) -> list[int]:
    high = n if high is None else high
    return [d for d in range(low, min(n, high) + 1) if n % d == 0]


def _slider(label: str, name: str, options: list, default, **kwargs):
    key = state.remember(state.SLIDERS[name], state.one_of(options, default))
    return st.sidebar.select_slider(label, options, key=key, persist_state=state.PERSIST, **kwargs)


def preset_sidebar(source: str, **sliders) -> None:
    """Choose the weights ``source`` and set architecture sliders (``image_size=64, patch_size=8`` ...).

    For an ``on_click`` callback: it runs before the sidebar draws, which then shows these values.
    Without sliders the architecture becomes the model's own, as when a user picks it.
    """
    state.put(state.MODEL, source)
    for name, value in sliders.items():
        state.put(state.SLIDERS[name], value)
    if sliders:
        state.put(state.CONFIG_SOURCE, source)  # so the sidebar keeps these sliders instead of resetting them


def choose_config(source: str, base_config: ViTConfig) -> ViTConfig:
    st.sidebar.subheader("Architecture")
    trained = source != RANDOM
    if state.get(state.CONFIG_SOURCE) != source:  # a new model: start from its own shape
        state.put(state.CONFIG_SOURCE, source)
        state.drop(*state.SLIDERS.values())

    sizes = sorted(set(IMAGE_SIZES) | {base_config.image_size})
    image_size = _slider("Image size (pixels)", "image_size", sizes, base_config.image_size,
                         help="The picture is resized to this square before it is cut into patches.")
    patches = [p for p in _divisors(image_size, 2, image_size // 2 if image_size >= 4 else image_size)
               if (image_size // p) ** 2 + base_config.num_prefix_tokens <= MAX_TOKENS] or [image_size]
    patch_size = _slider("Patch size (pixels)", "patch_size", patches, base_config.patch_size,
                         help=f"Only sizes that divide the image evenly and keep at most {MAX_TOKENS} tokens are offered.")
    hidden_sizes = sorted(set(HIDDEN_SIZES) | {base_config.hidden_size})
    hidden = _slider("Hidden size D", "hidden_size", hidden_sizes, base_config.hidden_size, disabled=trained,
                     help="Length of every token vector." + (" Fixed by the trained weights." if trained else ""))
    heads_options = _divisors(hidden, 1, MAX_HEADS)
    heads = _slider("Attention heads H", "num_heads", heads_options, base_config.num_attention_heads,
                    help="Only divisors of the hidden size: each head gets D / H numbers of every token.")
    max_layers = base_config.num_hidden_layers if trained else MAX_LAYERS
    layers = _slider("Layers L", "num_layers", list(range(1, max_layers + 1)), base_config.num_hidden_layers,
                     help="Encoder blocks stacked one after another."
                          + (" Trained models keep their first L layers." if trained else ""))
    mlp_options = sorted({hidden * m for m in (1, 2, 3, 4)} | {base_config.intermediate_size})
    mlp = _slider("MLP size M", "mlp_size", mlp_options, base_config.intermediate_size, disabled=trained,
                  help="Width of the hidden layer inside each MLP (usually 4 x D)."
                       + (" Fixed by the trained weights." if trained else ""))
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
    return base_config.replace(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden, num_attention_heads=heads,
        num_hidden_layers=layers, intermediate_size=mlp, **own_grid,
    )


def config_metrics(config: ViTConfig, with_pooler: bool, num_labels: int) -> None:
    cols = st.sidebar.columns(3, gap="small")
    cols[0].metric("Tokens", f"{config.num_tokens:,}")
    cols[1].metric("Parameters", f"{parameter_count(config, with_pooler, num_labels) / 1e6:.2f}M")
    cols[2].metric("Attention", human_bytes(attention_memory_bytes(config)))
    names = getattr(config, "prefix_token_names", None)
    prefix = " + ".join((names() if callable(names) else names) or ["CLS"])
    st.sidebar.caption(f"Tokens: {config.grid_size} x {config.grid_size} patches + {prefix}. Attention: the memory of "
                       "every head's scores and weights in every layer (float32); it grows with tokens².")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"

