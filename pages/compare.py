"""Compare two models: the sidebar's picture through model A (the sidebar's model) and model B, side by side.

What the user sees, top to bottom: what the page does; one-click shortcuts for the comparisons that teach most
(trained vs random, CIFAR-10 vs shapes, before vs after the session's training run, with vs without registers);
the two model pickers, each model with its own architecture, preprocessing and labels; one set of pickers
(layer by relative depth, head where both have it, the query patch by its place in the picture) with the
sentence saying what of B faces what of A; the two predictions; where each CLS token looks, layer by layer;
rollout; the query patch's attention (click either picture); the logit lens where both classify; every head
of both models on one "how far does it look" chart; the layer similarity (CKA), computed when opened; download;
next stage.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from vit_explain import compare, ui
from vit_explain.charts import compare as charts
from vit_explain.charts.common import clicked_patch
from vit_explain.preprocess import image_digest
from vit_explain.ui import second_model, state
from vit_explain.weights import top_k

PAGE = "pages/compare.py"
MODEL_A, MODEL_B = "cmp:model_a", "cmp:model_b"  # the two pickers (A follows the sidebar's Weights box)
LAYER, HEAD, QUERY = "cmp:layer", "cmp:head", "cmp:query"  # the shared pickers, counted in model A
QUERY_INPUT, QUERY_CHART, LAST_CLICK = "cmp:query_input", "cmp:query_map", "cmp:last_click"
MEAN = "mean"
CIFAR, SHAPES = f"{ui.BUNDLED}vit-cifar10", f"{ui.BUNDLED}shapes"
REGISTERS = ("facebook/dinov2-with-registers-small", "facebook/dinov2-small")
#: Layer-similarity results kept for the whole server (each costs a forward pass of both models per picture).
CKA = "cmp:cka"
TOP_K = 5


# ---------------------------------------------------------------------------- cached maths (per run)
@ui.cached(max_entries=32)
def cls_maps(run, head: int | None) -> np.ndarray:
    return compare.cls_maps(run.core["attentions"], run.config.grid_size, head).astype(np.float32)


@ui.cached(max_entries=32)
def rollout(run, through: int) -> np.ndarray:
    return compare.rollout_map(run.core["attentions"], run.config.grid_size, through).astype(np.float32)


@ui.cached(max_entries=64)
def query(run, layer: int, patch: int, head: int | None) -> np.ndarray:
    return compare.query_map(run.core["attentions"][layer], patch, run.config.grid_size, head).astype(np.float32)


@ui.cached(max_entries=16)
def distance(run) -> dict:
    return compare.distance_by_depth(run.core["attentions"], run.config)


@ui.cached(max_entries=16)
def lens(run) -> dict:
    return compare.lens_by_depth(run.model, run.core["hidden_states"])


def through(layer: int) -> str:
    return "layer 0" if layer == 0 else f"layers 0–{layer}"


def label(run, index: int) -> str:
    names = run.id2label or {}
    return str(names.get(int(index), f"LABEL_{int(index)}"))


def classifies(run) -> bool:
    return run.is_classifier and getattr(run.model, "classifier", None) is not None


# ---------------------------------------------------------------------------- the shortcuts
def choose(a: str, b: str) -> None:
    """on_click of a shortcut: model A (the sidebar's model, so every page follows) and model B."""
    ui.preset_sidebar(a)
    st.session_state[MODEL_B] = b


def shortcuts(run) -> None:
    options = ui.sources.model_options()
    session = list(state.session_models())
    trained_a = run.source if run.trained else next((s for s in options if s.startswith(ui.BUNDLED)), run.source)
    registers = second_model.hub_status(REGISTERS)
    row = st.container(horizontal=True)
    row.button("Trained vs random", key="cmp:go_random", icon=":material/casino:", on_click=choose,
               args=(trained_a, ui.RANDOM),
               help="A trained model against the same architecture with random weights: what training changed.")
    row.button("CIFAR-10 vs shapes", key="cmp:go_data", icon=":material/category:", on_click=choose,
               args=(CIFAR, SHAPES), disabled=not (CIFAR in options and SHAPES in options),
               help="The two models trained here: photos of ten kinds of things against drawn shapes.")
    row.button("Before vs after training", key="cmp:go_training", icon=":material/model_training:", on_click=choose,
               args=(session[-1] if session else run.source, ui.RANDOM), disabled=not session,
               help="The model you trained on the Training page against where a run from random weights starts "
                    "(the same architecture, seed 0)." if session else "Train a model on the Training page first.")
    row.button("With vs without registers", key="cmp:go_registers", icon=":material/inventory_2:", on_click=choose,
               args=tuple(f"hub:{r}" for r in REGISTERS), disabled=registers is not None,
               help="DINOv2-small trained with four register tokens against the same model without them "
                    "(Darcet et al. 2023); two Hub downloads of about 90 MB.")
    if registers is not None:
        st.caption(f":material/cloud_off: *With vs without registers* needs two DINOv2 checkpoints from the Hub: "
                   f"{registers}. The other comparisons work offline.")


# ---------------------------------------------------------------------------- the two models
def choose_models(run) -> str:
    """Model A's picker (the sidebar's Weights box: changing it here changes every page) and model B's."""
    options_a = ui.sources.model_options()
    sidebar_choice = state.model_choice()
    left, right = st.columns(2, gap="medium")
    if sidebar_choice in options_a:
        key = state.remember(MODEL_A, lambda _: sidebar_choice)
        left.selectbox("Model A (the sidebar's model)", list(options_a), format_func=options_a.get, key=key,
                       on_change=lambda: ui.preset_sidebar(st.session_state[MODEL_A]),
                       help="Model A is the sidebar's model: every page explains it. Choosing here changes it there "
                            "too; the sidebar's architecture sliders apply to A.")
    options_b = second_model.second_model_options(run.source)
    default_b = ui.RANDOM if run.trained else next((s for s in options_b if s.startswith(ui.BUNDLED)), ui.RANDOM)
    key = state.remember(MODEL_B, state.one_of(list(options_b), default_b))
    choice = right.selectbox("Model B", list(options_b), format_func=options_b.get, key=key,
                             persist_state=state.PERSIST,
                             help="Trained weights run with their own architecture, preprocessing and labels. "
                                  "Random weights take model A's architecture: A before any training.")
    return choice


def describe(run, who: str, where) -> None:
    c = run.config
    spec = getattr(run.model, "preprocess_spec", None)
    prefix = " + ".join(c.prefix_token_names())
    where.caption(f"**{who}** · {c.image_size} px, {c.grid_size} x {c.grid_size} patches of {c.patch_size} px "
                  f"(+ {prefix}) · {c.num_hidden_layers} layers x {c.num_attention_heads} heads · width "
                  f"{c.hidden_size}" + (f" · prepared with the {spec.describe()}" if spec is not None else "")
                  + ("" if run.trained else " · random weights (seed 0)"))


# ---------------------------------------------------------------------------- the shared pickers
def pickers(run_a, run_b, pairing: compare.Pairing) -> tuple[int, int | None, int]:
    """Layer, head and query patch, counted in model A; says what of B faces them."""
    ga, La = pairing.grid_a, pairing.layers_a
    clicked = clicked_patch(st.session_state.get(QUERY_CHART))
    if clicked is not None and clicked != st.session_state.get(LAST_CLICK) and 0 <= clicked < ga * ga:
        st.session_state[QUERY] = clicked
    st.session_state[LAST_CLICK] = clicked
    patch = ui.patch_on_grid(QUERY, ga)
    st.session_state[QUERY_INPUT] = patch
    heads = [MEAN] + list(range(pairing.shared_heads))
    a, b, c = st.columns([3, 3, 2], gap="medium")
    layer = a.select_slider("Layer (of model A)", list(range(La)), persist_state=state.PERSIST,
                            key=state.remember(LAYER, ui.clamp_index(La, La - 1)),
                            help="Model B shows the layer at the same relative depth (first faces first, last faces last).")
    head = b.select_slider("Head", heads, persist_state=state.PERSIST, key=state.remember(HEAD, state.one_of(heads, MEAN)),
                           format_func=lambda h: "mean over heads" if h == MEAN else f"head {h}",
                           help=f"Heads 0 to {pairing.shared_heads - 1} exist in both models. Head numbers are only "
                                "names: the heads of two models learned independently.")
    c.number_input("Query patch (of A, row by row)", min_value=0, max_value=ga * ga - 1, step=1, key=QUERY_INPUT,
                   on_change=lambda: st.session_state.update({QUERY: int(st.session_state[QUERY_INPUT])}),
                   help="Or click a patch on either picture of the query view below.")
    head = None if head == MEAN else int(head)
    layer_b, patch_b = pairing.layer(layer), pairing.patch(patch)
    ra, ca = divmod(patch, ga)
    rb, cb = divmod(patch_b, pairing.grid_b)
    depth = compare.relative_depth(layer, La)
    depth_b = compare.relative_depth(layer_b, pairing.layers_b)
    st.markdown(
        f":material/link: **Layer {layer}** of A (depth {depth:.0%}) faces **layer {layer_b}** of B (depth "
        f"{depth_b:.0%})" + (" · the same layer count" if La == pairing.layers_b else
                             f" · A has {La} layers, B {pairing.layers_b}: layers are paired by relative depth")
        + f" · **{'both models averaged over their heads' if head is None else f'head {head} in both'}**"
        + f" · **query patch {patch}** of A (row {ra}, col {ca}) covers the same spot as patch {patch_b} of B "
          f"(row {rb}, col {cb})" + ("" if ga == pairing.grid_b else f", on its {pairing.grid_b} x {pairing.grid_b} grid")
        + ".")
    return layer, head, patch


# ---------------------------------------------------------------------------- sections
def predictions(run_a, run_b, names: tuple[str, str]) -> None:
    st.subheader("The two predictions")
    cols = st.columns(2, gap="medium")
    for col, run, who, colour in zip(cols, (run_a, run_b), ("A", "B"), (charts.COLOUR_A, charts.COLOUR_B)):
        with col:
            if not classifies(run):
                st.info(f"**{who} · {names[who == 'B']}** has no classifier: it gives a feature vector, not a class.",
                        icon=":material/flag:")
                continue
            logits = run.core["logits"]
            top = top_k(logits, run.id2label, min(TOP_K, len(logits)))
            ui.plot(charts.prediction_bars([n for n, _ in top], np.array([p for _, p in top]),
                                           f"{who} · {names[who == 'B']}: “{top[0][0]}”, {top[0][1]:.0%}",
                                           colour=colour, uniform=1.0 / len(logits)), key=f"cmp:pred_{who}")
    st.caption("Each model answers with its own classes (the dashed line is an even guess, 1 / classes). A model only "
               "knows the classes it was trained on: anything else is forced into one of them.")


def cls_view(run_a, run_b, pairing, layer: int, head: int | None, names) -> None:
    st.subheader("Where each CLS token looks, layer by layer")
    maps_a, maps_b = cls_maps(run_a, head), cls_maps(run_b, pairing.head(head))
    zmax = max(float(maps_a.max()), float(maps_b.max()), 1.0)
    note = "mean over heads" if head is None else f"head {head}"
    if head is not None and pairing.head(head) is None:
        note += f" of A; B has {pairing.heads_b} heads, mean over them"
    ui.plot(charts.cls_depth_facets(maps_a, maps_b, names[0], names[1], layer_a=layer, layer_b=pairing.layer(layer),
                                    zmax=zmax, cols=min(6, max(pairing.layers_a, pairing.layers_b)), head_note=note),
            key="cmp:cls")
    st.caption("Each small map is the CLS token's attention over the patches in one layer, as a multiple of an even "
               "share (1 = what every patch would get if attention were spread evenly), so both grids share one colour "
               "scale. The outlined maps are the chosen layer of A and the layer of B facing it. A trained model's "
               "later layers pick out the object; random weights stay near 1 everywhere.")


def maps_view(run_a, run_b, pairing, layer: int, head: int | None, patch: int) -> None:
    st.subheader("Rollout and the query patch")
    layer_b, head_b, patch_b = pairing.layer(layer), pairing.head(head), pairing.patch(patch)
    ra, rb = rollout(run_a, layer), rollout(run_b, layer_b)
    zmax = max(float(ra.max()), float(rb.max()), 1.0)
    ui.plot(charts.map_pair(run_a.image, ra, run_b.image, rb,
                            [f"A: rollout through {through(layer)}", f"B: rollout through {through(layer_b)}"],
                            "Attention rollout of CLS, up to the chosen layer (× uniform, one colour scale)",
                            zmax=zmax, colorbar_title=f"× uniform<br>fitted 0–{zmax:.3g}"), key="cmp:rollout")
    st.caption("Rollout multiplies the layers' attention maps (each mixed half and half with the skip connection) to "
               "follow where the information in CLS came from in the picture, up to the chosen layer of A and the "
               "layer of B facing it.")
    qa = query(run_a, layer, patch, head)
    qb = query(run_b, layer_b, patch_b, head_b)
    zmax = max(float(qa.max()), float(qb.max()), 1.0)
    clicks_b = np.array([compare.facing_patch(p, pairing.grid_b, pairing.grid_a)
                         for p in range(pairing.grid_b ** 2)], dtype=np.int32)
    heads = ("mean over heads" if head is None else f"head {head}",
             "mean over heads" if head_b is None else f"head {head_b}")
    ui.plot(charts.map_pair(run_a.image, qa, run_b.image, qb,
                            [f"A: patch {patch}, layer {layer}, {heads[0]}",
                             f"B: patch {patch_b}, layer {layer_b}, {heads[1]}"],
                            "Where the query patch looks (click a patch on either picture to move it)",
                            zmax=zmax, colorbar_title=f"× uniform<br>fitted 0–{zmax:.3g}", marks=(patch, patch_b),
                            clicks=(np.arange(pairing.grid_a ** 2, dtype=np.int32), clicks_b)),
            key=QUERY_CHART, on_select="rerun", selection_mode="points")
    st.caption("The query patch's row of attention, over the patches (the share it gives CLS and other prefix tokens "
               "left out), in the chosen layer and head. Early layers of a trained model often look near the query; "
               "later ones across the picture.")


def lens_view(run_a, run_b, layer: int, pairing, names) -> None:
    st.subheader("When does each answer appear?")
    if not (classifies(run_a) and classifies(run_b)):
        st.caption("The logit lens applies a model's classifier after every layer; it needs both models to be "
                   "classifiers, and " + ("A" if not classifies(run_a) else "B") + " is not.")
        return
    la, lb = lens(run_a), lens(run_b)
    answer_a, answer_b = label(run_a, la["final_class"]), label(run_b, lb["final_class"])
    ui.plot(charts.lens_figure(la, lb, names[0], names[1], answer_a, answer_b,
                               [label(run_a, i) for i in la["top1"]], [label(run_b, i) for i in lb["top1"]],
                               marked_depth=compare.relative_depth(layer, pairing.layers_a)), key="cmp:lens")
    st.caption("The final layer norm and the classifier applied to the CLS token after every layer, as if each model "
               "stopped there: the line is the probability of the model's final answer. Depth is relative, so a "
               "6-layer and a 12-layer model line up; the dotted line is the chosen layer of A.")


def heads_view(run_a, run_b, layer: int, pairing, names) -> None:
    st.subheader("Local and global heads of both models")
    da, db = distance(run_a), distance(run_b)
    ui.plot(charts.distance_figure(da["depth"], da["share"], db["depth"], db["share"], names[0], names[1],
                                   uniform_a=da["uniform_share"], uniform_b=db["uniform_share"],
                                   pixels_a=da["pixels"], pixels_b=db["pixels"],
                                   marked_depth=compare.relative_depth(layer, pairing.layers_a)), key="cmp:distance")
    st.caption("One dot per head: how far, on average, its patches look (each key patch's distance weighted by its "
               "attention), as a share of the picture's side so that pictures of different sizes compare. Low dots are "
               "local heads, like a convolution; dots on the dashed line of their colour spread attention evenly. The "
               "ViT paper found trained early layers mixing local and global heads and later layers all global.")


def similarity_section(run_a, run_b, pairing, names) -> None:
    pictures = second_model.similarity_pictures()
    st.markdown(
        f"**Linear CKA** (Kornblith et al. 2019) says how alike two layers' representations are: 1 when they find the "
        f"same tokens alike and different, whatever their widths, rotations and scales. Here each hidden state of A is "
        f"compared with each of B (left) and of A itself (right), as in Raghu et al. (2021), over {len(pictures)} "
        f"pictures (your upload, if any, and the samples). Features: **every token of every picture**, CLS and the "
        f"patches" + (f", on the coarser of the two grids ({pairing.common_grid} x {pairing.common_grid}: patches are "
                      "averaged by their place in the picture)" if pairing.grid_a != pairing.grid_b else "")
        + "; each picture's tokens are one batch of minibatch CKA with the unbiased HSIC estimator.")
    st.markdown("**How to read it.** A bright diagonal means the two stacks pass through the same stages in the same "
                "order: each layer of A resembles B's layer at the same relative depth. A bright block means a run of "
                "layers whose representations are all alike: those layers change little, or, across models, one "
                "model spends several layers on what the other does in one stage.")
    args = (run_b.key, tuple(image_digest(data) for _, data in pictures))
    result = ui.cached_with_progress(
        CKA, run_a, args, lambda progress: compare.layer_cka(run_a.model, run_b.model, [d for _, d in pictures],
                                                               progress=progress),
        label=f"Comparing every layer over {len(pictures)} pictures ...", max_entries=8)
    summary = compare.cka_summary(result["cross"], result["within_b"])
    pairs = compare.layer_pairs(pairing.layers_a, pairing.layers_b)
    ui.plot(charts.cka_figure(result["cross"], result["within_a"], names[0], names[1], pairs=pairs,
                              subtitle=f"{result['pictures']} pictures x {result['tokens']} tokens; the dotted line "
                                       "joins layers at the same relative depth"), key="cmp:cka")
    st.caption(f"Here: mean CKA at the same relative depth (dotted line) {summary['diagonal']:.2f}, over all pairs "
               f"{summary['overall']:.2f}; between two different hidden states of B {summary['within_b']:.2f} (near 1: "
               f"B's layers hardly change its tokens, so every column on the left looks alike). The right-hand map is "
               f"the reference: any model compared with itself has a diagonal of 1, and its blocks show which of its own "
               f"layers work alike.")


# ---------------------------------------------------------------------------- the page
run = ui.open_page(PAGE)
ui.stage_header(
    "Compare two models",
    "The same picture through two Vision Transformers, side by side: what training, the data, your own training "
    "run or register tokens change in where the model looks and what it answers. **Model A** is the sidebar's "
    "model (its architecture sliders apply to it); **model B** runs with its own architecture, preprocessing and "
    "labels. One set of pickers drives both: a layer of A faces the layer of B at the same relative depth, a patch "
    "the patch at the same spot of the picture.",
)
shortcuts(run)
source_b = choose_models(run)
left, right = st.columns(2, gap="medium")
describe(run, "A", left)
run_b = second_model.second_run(source_b, run, where=right)
if run_b is None:
    st.info("Choose another model B (the bundled models and random weights always work offline).")
    ui.close_page(run, PAGE)
    st.stop()
describe(run_b, "B", right)
if run.source.startswith(ui.SESSION) and source_b == ui.RANDOM:
    right.caption(":material/history: B is your model before training: a run from random weights starts from exactly "
                  "these weights (the same architecture, seed 0). A run started from the sidebar's weights began "
                  "from that model instead.")
names = (second_model.model_label(run.source), second_model.model_label(source_b))
pairing = compare.Pairing.of(run.config, run_b.config)

predictions(run, run_b, names)


@st.fragment
def linked_views() -> None:
    """Everything the shared pickers drive; a picker change reruns only this part in the browser."""
    layer, head, patch = pickers(run, run_b, pairing)
    cls_view(run, run_b, pairing, layer, head, names)
    maps_view(run, run_b, pairing, layer, head, patch)
    lens_view(run, run_b, layer, pairing, names)
    heads_view(run, run_b, layer, pairing, names)


st.subheader("One set of pickers for both models")
linked_views()
ui.lazy_section("Layer similarity (CKA): which layers of A and B compute alike", "cmp:open_cka",
                lambda: similarity_section(run, run_b, pairing, names),
                what="every layer of A against every layer of B, over the sample pictures")

ui.close_page(run, PAGE)
