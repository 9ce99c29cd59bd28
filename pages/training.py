"""Stage 7, training: train a small ViT here and watch its attention, positions and filters form."""

import logging

import plotly.graph_objects as go
import streamlit as st

from vit_explain import trainer, ui
from vit_explain.charts import training as charts
from vit_explain.training import own_classes
from vit_explain.ui import own_classes as own_ui

RUN = "train:run"  # the session's TrainingRun
REGISTERED = "train:registered"  # (run id, step) last offered as a weights choice
SNAP = "train:snapshot"  # chosen snapshot step
FOLLOW = "train:follow"  # the slider follows the newest snapshot
#: The two-minute start (README, "Training stage"): what the quick-start button puts in the sidebar.
QUICK_START = dict(image_size=64, patch_size=8, hidden_size=64, num_heads=4, num_layers=2, mlp_size=128)
log = logging.getLogger(__name__)
DATA_LABELS = {"shapes": "Synthetic shapes (8 classes, new pictures every step)", "cifar10": "CIFAR-10 photos (10 classes)",
               "own": "Your own classes (2 to 10, from your pictures)"}


def _session_probe():
    """A function telling whether this browser session is still connected (None outside a real server)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return None
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)


def _offer_trained_model(run: trainer.TrainingRun, status: trainer.RunStatus) -> None:
    """Once a run has stopped after some steps, its model becomes a weights choice in the sidebar."""
    if status.active or status.step == 0 or st.session_state.get(REGISTERED) == (status.run_id, status.step):
        return
    model = run.trained_model()
    for param in model.parameters():  # a fine-tuned model trained its classifier only: other pages may need gradients
        param.requires_grad_(True)
    data = DATA_LABELS[run.data.name].split(" (")[0].lower()
    model.source = f"the model you trained on the Training page ({data}, step {status.step:,})"
    source = f"{ui.SESSION}{status.run_id[:12]}-{status.step}"
    ui.add_session_model(source, f"The model you trained (step {status.step:,})", model)
    st.session_state[REGISTERED] = (status.run_id, status.step)
    st.session_state["train:latest_source"] = source


state = st.session_state
current: trainer.TrainingRun | None = state.get(RUN)
if current is not None:
    current.heartbeat()
    _offer_trained_model(current, current.status())  # before the sidebar, so its Weights box lists it
run = ui.open_page("pages/training.py")

ui.stage_header(
    "8 · Training",
    "Every other page explains a ViT that is already trained. Here you train one yourself, in the background on "
    "this server, and watch what the earlier pages showed take shape: the CLS token learning where to look, the "
    "position embeddings discovering the 2-D grid, the patch filters turning from noise into edge and colour "
    "detectors. Each step shows the model a batch of pictures, measures how wrong its guesses are (the loss) and "
    "nudges every weight a little to be less wrong (AdamW). When you stop, the model you trained becomes a "
    "weights choice in the sidebar, so every other page can explain it.",
)

# ---------------------------------------------------------------------------- what to train
st.subheader("What to train")
settings = trainer.TrainSettings()
cifar = trainer.cifar10_path()
data_options = ["shapes"] + (["cifar10"] if cifar else []) + ["own"]
left, right = st.columns(2, gap="large")
with left:
    data_name = st.radio("Data", data_options, format_func=DATA_LABELS.get, key="train:data",
                         help="The shapes and your own classes are always here. CIFAR-10 appears when the server "
                              "names its data (VIT_EXPLAIN_CIFAR10, see the README).")
    if data_name == "own":
        st.caption("Name two to ten classes of things you can photograph or find pictures of, and give each a "
                   "handful of pictures. A few per class are held out to test the model.")
    else:
        st.caption(f"The shapes are drawn on a calmer background than the bundled model's (clutter "
                   f"{settings.shapes_clutter:g} of 1), so that a small model tells them apart within minutes."
                   + ("" if cifar else " CIFAR-10 is not configured on this server, so it is not offered."))
with right:
    start = own_start = None
    if data_name == "own":
        own_start = st.radio("Start from", list(own_classes.START_CHOICES), key="train:own_start",
                             format_func=own_classes.START_CHOICES.get,
                             help="Both use the bundled CIFAR-10 model's architecture (32 px pictures, 4 px patches, "
                                  "width 192); the first keeps what its encoder learned from 50,000 photos.")
    else:
        start_options = ["random"] + ([] if run.source == ui.RANDOM else ["sidebar"])
        start = st.radio("Start from", start_options, key="train:start",
                         format_func={"random": "Random weights (nothing learned yet)",
                                      "sidebar": "The weights chosen in the sidebar (keep training them)"}.get,
                         help="Random weights show learning from scratch. The sidebar's weights continue from what "
                              "that model already knows (a new classifier if its classes differ from the data's).")

own_pictures: dict = {}
own_problems: list[str] = []
if data_name == "own":
    st.markdown(own_classes.WHY_START)
    own_pictures, own_problems = own_ui.class_editor()

cfg = run.config
arch = (f"{cfg.image_size} px pictures, {cfg.patch_size} px patches ({cfg.grid_size} x {cfg.grid_size} grid), "
        f"width {cfg.hidden_size}, {cfg.num_attention_heads} heads, {cfg.num_hidden_layers} layers, MLP {cfg.intermediate_size}")
if data_name == "own":
    own_cfg = own_classes.starting_config()
    st.markdown(f"**Architecture**: the bundled CIFAR-10 model's ({own_cfg.image_size} px pictures, {own_cfg.patch_size} px "
                f"patches in a {own_cfg.grid_size} x {own_cfg.grid_size} grid, width {own_cfg.hidden_size}, "
                f"{own_cfg.num_attention_heads} heads, {own_cfg.num_hidden_layers} layers), whichever start you choose; "
                "the sidebar's sliders do not apply to your own classes.")
else:
    st.markdown(f"**Architecture** (the sidebar's sliders): {arch}.")
quick = all(state.get(k) == v for k, v in QUICK_START.items()) and run.source == ui.RANDOM
if not quick and data_name != "own":
    st.button("Use the two-minute settings", key="train:quick", icon=":material/bolt:",
              on_click=ui.preset_sidebar, args=(ui.RANDOM,), kwargs=QUICK_START,
              help="Random weights, 64 px pictures, 8 px patches, width 64, 4 heads, 2 layers, MLP 128: "
                   "small enough to learn the shapes in about two minutes on this server.")
    st.caption("A smaller model learns faster here: the two-minute settings set the sidebar to a small random ViT "
               "that tells the shapes apart well above chance within two minutes.")

problem = None
if data_name == "cifar10" and cfg.image_size != 32:
    problem = "CIFAR-10 pictures are 32 x 32: set the image size in the sidebar to 32 to train on them."
if run.source != ui.RANDOM and start == "random" and run.trained and data_name != "own":
    st.caption(f"Hidden size and MLP size follow the sidebar's trained model ({cfg.hidden_size}, {cfg.intermediate_size}); "
               f"choose *Random weights* in the sidebar to set them freely.")
try:
    trainer.check_trainable(cfg, 10)
except ValueError as exc:
    problem = str(exc)
if data_name == "own":  # the sidebar's architecture does not apply; the classes must be ready
    problem = " ".join(own_problems) or None

pool = trainer.server_pool()
shown = own_classes.own_settings(own_start, settings) if data_name == "own" else settings
st.caption(
    f":material/info: Limits on this shared server: each run trains at most {shown.max_steps:,} steps or "
    f"{settings.max_seconds / 60:.0f} minutes (over all its resumes), on one CPU thread, with models of at most "
    f"{trainer.MAX_PARAMETERS / 1e6:.0f}M parameters, {trainer.MAX_TRAIN_TOKENS} tokens and {trainer.MAX_TRAIN_PATCH} px patches; at most {pool.slots} "
    f"{'runs train' if pool.slots != 1 else 'run trains'} at once (others wait in a queue, first come first served); a run "
    f"stops when its browser tab is closed. Batches of {shown.batch_size} pictures, AdamW, peak learning rate "
    f"{shown.lr:g}" + (" (the new classifier only; the encoder stays as it is)." if own_start == "cifar10" else ".")
)


def start_new_run() -> None:
    old = state.get(RUN)
    if old is not None:
        old.stop(wait=5.0)
    run_settings = settings
    try:
        if data_name == "own":
            data = own_classes.OwnClassesData(own_pictures)
            model = own_classes.starting_model(data.classes, own_start)
            run_settings = own_classes.own_settings(own_start, settings)
        else:
            data = (trainer.ShapesData(cfg.image_size, settings=settings) if data_name == "shapes"
                    else trainer.FolderData(cifar, cfg.image_size, classes=trainer.CIFAR10_CLASSES))
            model = trainer.build_model(cfg, data.classes, base=run.model if start == "sidebar" else None)
    except ValueError as exc:  # weights this page cannot train (no classification head, too large), unusable classes
        log.exception("Training page: a run could not start")
        state["train:error"] = str(exc)
        return
    state.pop("train:error", None)
    new = trainer.TrainingRun(model, data, run_settings, alive=_session_probe())
    new.start()
    state[RUN] = new
    state["train:frozen"] = data_name == "own" and own_start == "cifar10"
    state[FOLLOW] = True
    state.pop(SNAP, None)
    state.pop("train:snapshot_set", None)
    state.pop("train:figures", None)


def stop_run() -> None:
    state[RUN].stop(wait=10.0)


def resume_run() -> None:
    state[RUN].resume()
    state[FOLLOW] = True


buttons = st.container(horizontal=True)  # buttons as wide as their labels, wrapping on narrow screens
status = current.status() if current is not None else None
active = status is not None and status.active
buttons.button("Start a new run", key="train:start_button", type="primary", icon=":material/play_arrow:",
                  disabled=problem is not None or active, on_click=start_new_run)
buttons.button("Stop", key="train:stop", icon=":material/stop:", disabled=not active, on_click=stop_run)
buttons.button("Resume", key="train:resume", icon=":material/resume:", on_click=resume_run,
                  disabled=status is None or not status.can_resume)
if problem:  # the sidebar's settings, not a fault: said to the user, noted in the server's log without a traceback
    log.info("Training page: these settings cannot train: %s", problem)
    if data_name == "own":  # a step still to take, not an error
        st.info(f"Before you can start: {problem}", icon=":material/checklist:")
    else:
        st.error(problem)
if state.get("train:error"):
    st.error(f"This run cannot start: {state['train:error']}")

# ---------------------------------------------------------------------------- the run, live
def _status_line(status: trainer.RunStatus) -> None:
    held = status.snapshots[-1] if status.snapshots else None
    accuracy = f", held-out accuracy {held.held_out_accuracy:.0%}" if held is not None and status.step else ""
    if status.state == "queued":
        st.warning(f"Waiting for a free training slot: place {status.queue_position or 1} in the queue "
                   f"({pool.slots} {'runs train' if pool.slots != 1 else 'run trains'} at once on this server).",
                   icon=":material/hourglass_top:")
    elif status.state == "loading":
        st.info("Reading the training pictures ...", icon=":material/downloading:")
    elif status.state == "running":
        st.info(f"Training: step {status.step:,} of at most {status.max_steps:,}, {status.seconds:.0f} s{accuracy}.",
                icon=":material/model_training:")
    elif status.state == "failed":
        st.error(status.message + " The training slot was freed; start a new run.", icon=":material/error:")
    else:
        st.success(f"{status.message} {status.seconds:.0f} s of training{accuracy}.",
                   icon=":material/check_circle:")
    if status.state in ("running", "stopped"):
        st.progress(min(1.0, max(status.step / status.max_steps, status.seconds / status.max_seconds)),
                    text=f"of this run's cap ({status.max_steps:,} steps or {status.max_seconds / 60:.0f} minutes)")


def _pick_snapshot(snapshots: list[trainer.Snapshot]) -> trainer.Snapshot:
    """The snapshot to draw: the newest while following, else the one chosen on the slider (nearest if thinned)."""
    steps = [s.step for s in snapshots]
    if SNAP in state and state[SNAP] != state.get("train:snapshot_set"):
        state[FOLLOW] = False  # the user moved the slider since this page last set it
    if state.get(FOLLOW, True) or state.get(SNAP) not in steps:
        wanted = steps[-1] if state.get(FOLLOW, True) else state.get(SNAP, steps[-1])
        state[SNAP] = min(steps, key=lambda s: abs(s - wanted))
    state["train:snapshot_set"] = state[SNAP]
    if len(steps) > 1:
        st.select_slider(
            "Snapshot shown below (scrub back through the run)", steps, key=SNAP, format_func=lambda s: f"step {s:,}",
            help=f"A snapshot is kept at evenly spaced steps (at most {trainer.MAX_SNAPSHOTS}; older ones are "
                 f"thinned as the run grows). Every figure below shows the chosen one.")
        st.toggle("Follow the newest snapshot", key=FOLLOW)
    return snapshots[steps.index(state[SNAP])]


def _figure(key: tuple, build):
    """A snapshot's figure, built once: the page reruns every second, a snapshot arrives every few seconds."""
    memo = state.setdefault("train:figures", {})
    if key not in memo:
        if len(memo) >= 24:  # a few snapshots' worth (layer and head choices included)
            memo.clear()
        memo[key] = build()
    return go.Figure(memo[key])  # a copy: ui.plot moves the title out of the figure it draws


def _views(status: trainer.RunStatus, data, config) -> None:
    _status_line(status)
    snapshots = status.snapshots
    if not snapshots:
        return
    snap = _pick_snapshot(snapshots)
    at = (status.run_id, snap.step)
    ui.plot(charts.curves_figure(status.steps, status.train_loss, status.train_accuracy, [s.step for s in snapshots],
                                 [s.held_out_loss for s in snapshots], [s.held_out_accuracy for s in snapshots],
                                 chance=1.0 / len(data.classes), marker_step=snap.step), key="train:curves")
    confusion = getattr(snap, "extra", {}).get("confusion")
    if confusion is not None:
        ui.plot(_figure(("confusion", *at), lambda: own_ui.confusion_figure(confusion, data.classes, step=snap.step)),
                key="train:confusion")
        st.caption(f"{int(confusion.sum())} held-out pictures (the model never trains on them): each row is a class, "
                   f"each column a guess. A good model puts everything on the diagonal.")
    if state.get("train:frozen"):
        st.info("This run keeps the CIFAR-10 model's encoder as it is and trains only the new classifier, so the "
                "attention, position and filter pictures below stay as the CIFAR-10 photos shaped them: they show what "
                "your classifier builds on. Start from random weights to watch them form (and to see why a few "
                "pictures are not enough).", icon=":material/lock:")
    L, H = snap.cls_attention.shape[:2]
    pick_layer, pick_head = st.columns(2, gap="large")
    layer = pick_layer.select_slider("Layer", list(range(L)), key=ui.remember("train:layer", ui.clamp_index(L, L - 1)), persist_state="session",
                                     help="0 is the first encoder layer, as on every page.")
    head = pick_head.select_slider("Head", list(range(H)), key=ui.remember("train:head", ui.clamp_index(H)), persist_state="session")
    ui.plot(_figure(("probe", *at, layer, head), lambda: charts.probe_attention_figure(
        data.probe_image, snap.cls_attention, layer, head, step=snap.step)), key="train:probe")
    if not status.active and len(snapshots) > 1:  # a finished run, replayed by the browser
        ui.plot(_figure(("replay", status.run_id, len(snapshots), snapshots[-1].step, layer), lambda: charts.replay_figure(
            data.probe_image, [s.cls_attention for s in snapshots], [s.step for s in snapshots],
            [s.held_out_accuracy for s in snapshots], layer=layer, chance=1.0 / len(data.classes))), key="train:replay")
        st.caption("The whole run again, in your browser: press **Play** to see the snapshots one after another, or drag "
                   "the slider. Watch the bright patches: where the CLS token of this layer looks (the mean of its heads) "
                   "as the held-out accuracy on the right climbs. One colour scale for the whole run, so attention that "
                   "gathers on a few patches shows brighter. The Layer slider above picks the layer.")
    left, right = st.columns(2, gap="medium")
    with left:
        ui.plot(_figure(("top5", *at), lambda: charts.top5_figure(
            snap.top5, true_label=data.classes[data.probe_label], step=snap.step)), key="train:top5")
    with right:
        if len(snapshots) > 1:
            ui.plot(_figure(("distance", *at, len(snapshots), snapshots[-1].step), lambda: charts.distance_figure(
                [s.attention_distance for s in snapshots], [s.step for s in snapshots], grid=config.grid_size,
                patch_size=config.patch_size, marker_step=snap.step)), key="train:distance")
    st.caption("At step 0 every head spreads its attention almost evenly. As the model learns, the CLS token of the "
               "last layers concentrates on the patches that decide the class (for the shapes: the object), and the "
               "heads drift apart: some look locally, some across the picture.")
    ui.plot(_figure(("heads", *at), lambda: charts.heads_figure(snap.cls_attention, step=snap.step)), key="train:heads")
    ui.plot(_figure(("positions", *at), lambda: charts.position_similarity_figure(
        snap.position_similarity, step=snap.step)), key="train:positions")
    st.caption("Each small map compares one patch's position embedding with every other patch's. They start as random "
               "vectors (a single bright cell per map, noise around it); training pulls the embeddings of neighbouring "
               "patches together, so blobs around each patch and rows and columns appear: the model discovers the 2-D "
               "grid by itself (compare stage 2).")
    ui.plot(_figure(("filters", *at), lambda: charts.filters_figure(
        snap.filters, snap.filter_variance, step=snap.step)), key="train:filters")
    st.caption("The main directions the patch-embedding filters vary along (compare stage 1): random speckle at step 0, "
               "smoother colour and edge patterns as training goes on.")

if current is not None:
    live = status.active

    @st.fragment(run_every=1.0 if live else None)
    def live_view() -> None:
        the_run: trainer.TrainingRun = state[RUN]
        the_run.heartbeat()
        now = the_run.status()
        if live and not now.active:  # it stopped by itself (caps, failure): redraw the whole page once
            st.rerun()
        _views(now, the_run.data, the_run.model.config)

    st.subheader("The run")
    live_view()
    if status.step and not status.active:
        source = state.get("train:latest_source")
        st.markdown(f"**The model you trained (step {status.step:,})** is now a weights choice in the sidebar: pick it "
                    "there and every other page explains it.")
        cols = st.container(horizontal=True)
        cols.button("Explore it on the other pages", key="train:explore", icon=":material/travel_explore:",
                       on_click=ui.preset_sidebar, args=(source,), disabled=source is None,
                       help="Selects it in the sidebar's Weights box; then open any stage.")
        cols.download_button(
            "Download it (Hugging Face format, .zip)", data=lambda: trainer.checkpoint_zip(current.trained_model()),
            file_name=f"vit-trained-step{status.step}.zip", mime="application/zip", key="train:download",
            icon=":material/download:", on_click="ignore",
            help="config.json, model.safetensors and preprocessor_config.json: "
                 "transformers.ViTForImageClassification.from_pretrained(folder) reads it.")
else:
    st.info("Press **Start a new run** to begin. The curves and pictures appear within a few seconds and update "
            "about once a second.")

ui.close_page(None, "pages/training.py")
