"""7 · Experiments: change the live model for one forward pass and watch what happens to its answer.

What the user sees, top to bottom: what an experiment is and the few lines of code behind it; the picture
in use and the model's answer as it is; a choice of three guided experiments, each with a short text and
its switches, and for every run one sentence that states the measured effect, the top-5 classes as it is
and changed (with the change in points), and where the CLS token looks (last layer and rollout) as it is
and changed:

* A · positions removed, then patches shuffled, then both (with a table of all four runs);
* B · which heads matter: the head-importance map (measured only when asked, with a progress bar, kept
  for everyone); a click on a cell, or the pickers, knocks that head out and shows what it looked at;
* C · skip one layer, or only its attention or its MLP: where in depth the answer breaks, and the logit
  lens as it is and changed.

The runs themselves are :mod:`vit_explain.interventions` and :mod:`vit_explain.experiments`; the figures :mod:`vit_explain.charts.experiments`.
"""

import numpy as np
import streamlit as st

from vit_explain import analysis, experiments, interventions, pipeline, ui
from vit_explain.charts import experiments as charts
from vit_explain.charts.common import clicked_patch
from vit_explain.flops import total_flops
from vit_explain.interventions import Intervention

PAGE = "pages/experiments.py"
#: Stores (kept for every session) of the measurements that run many forward passes.
HEADS = "exp:head_importance"
SWEEP = "exp:layer_sweep"
#: The layer sweep runs by itself when its forward passes cost less than this (FLOPs), like occlusion.
AUTO_SWEEP_FLOPS = 2.5e10
EXPERIMENTS = {"positions": "A · Where is each patch?", "heads": "B · Which heads matter?",
               "layers": "C · Skip a layer"}
STEPS = {"remove": "1 · remove the positions", "shuffle": "2 · shuffle the patches", "both": "3 · both"}
SKIPS = {"layer": "the whole layer", "attention": "only its attention", "mlp": "only its MLP"}


def per_layer_run(store: str, measure, run, target: int, label: str):
    """``measure(model, pixel_values, target, progress=...)`` (a layer at a time), computed once for the server
    with a progress bar (``target`` < 0: the model's own answer)."""
    return ui.cached_with_progress(
        store, run, (target,),
        lambda progress: measure(run.model, run.core["pixel_values"], None if target < 0 else target,
                                 progress=lambda done, total: progress(done / total, f"Layer {done} of {total} done")),
        label=label)


# ---------------------------------------------------------------------------------- cached runs
@ui.cached(max_entries=64, show_spinner="Running the changed model on the picture ...")
def outcome(run, key: tuple) -> dict:
    """The traced run with the spec ``key`` applied, reduced to what this page draws (small arrays)."""
    return experiments.run_intervention(run.model, run.core["pixel_values"], Intervention.from_key(key))


@ui.cached(max_entries=64)
def answer(run, key: tuple) -> np.ndarray:
    """Logits (or the feature vector) of a plain forward pass with the spec ``key`` applied."""
    return experiments.intervened_answer(run.model, run.core["pixel_values"], Intervention.from_key(key))


def label(run, index: int) -> str:
    labels = run.id2label or {}
    return str(labels.get(int(index), labels.get(str(int(index)), f"class {int(index)}")))


def flag(value) -> bool:
    return value if isinstance(value, bool) else False


def option(key: str, options: dict, default: str) -> str:
    return ui.remember(key, ui.one_of(list(options), default))


def index_picker(where, text: str, count: int, key: str, noun: str) -> int:
    key = ui.remember(key, ui.clamp_index(count))
    if count == 1:
        where.markdown(f"**{text}:** {noun} 0 (the only one)")
        return 0
    return where.select_slider(text, list(range(count)), key=key, format_func=lambda i: f"{noun} {i}",
                               persist_state="session")


# ---------------------------------------------------------------------------------- one run, before and after
def show_result(run, spec: Intervention, what: str, after_name: str, *, order=None) -> None:
    """The sentence, the top-5 before/after and where CLS looks before/after, for one experiment."""
    before, after = outcome(run, Intervention().key), outcome(run, spec.key)
    st.markdown(":material/science: " + experiments.describe_effect(
        before["answer"], after["answer"], what, labels=run.id2label, classifier=CLASSIFIER))
    left, right = st.columns([5, 6])
    with left:
        if CLASSIFIER:
            p0, p1 = analysis.softmax(before["answer"]), analysis.softmax(after["answer"])
            classes = list(analysis.top_indices(p0, min(5, len(p0))))
            if int(np.argmax(p1)) not in classes:  # the new prediction is always on the chart
                classes.append(int(np.argmax(p1)))
            ui.plot(charts.prediction_bars([label(run, i) for i in classes], p0[classes], p1[classes],
                                           after_name=after_name), key=f"exp:bars:{what}")
            st.caption("Points are percentage points: from 80% to 60% is −20 points.")
        else:
            similarity = float(analysis.cosine_similarity(after["answer"], before["answer"]))
            st.metric("feature similarity to the original", f"{similarity:.4f}", f"{similarity - 1:+.4f}",
                      help="Cosine similarity of the feature vector (pooler output, or the normed CLS token) with "
                           "and without the change: 1 means the same direction.")
            st.caption("This model has no classifier, so there are no classes to compare: the experiments "
                       "measure how far its feature vector moves instead.")
    with right:
        ui.plot(charts.maps_before_after(
            run.image, (before["cls_attention"], experiments.unshuffle_map(after["cls_attention"], order)),
            (before["rollout"], experiments.unshuffle_map(after["rollout"], order)),
            "Where the CLS token looks: as it is and " + after_name), key=f"exp:maps:{what}")
        st.caption("Top: the last layer's CLS attention over the patches (mean of the heads). Bottom: the rollout, "
                   "attention followed back through every layer. Each row's two maps share one colour scale."
                   + (" The changed maps are drawn where each patch came from in the picture, so the two can be "
                      "compared patch by patch." if order is not None else ""))


# ---------------------------------------------------------------------------------- A · positions
def positions_experiment(run) -> None:
    c = run.config
    N, P = c.num_patches, c.patch_size
    st.markdown(
        "Attention compares every token with every other token and adds up what it finds. A sum does not care "
        "about order, so nothing in attention itself knows *where* a patch was in the picture. The only place "
        "the model learns it is the **position embeddings**, added to the patches before the first layer "
        "(stage 2). Try the three steps in order:\n"
        "1. **Remove the position embeddings.** The answer changes: the model was trained with them.\n"
        "2. **Shuffle the patches** (positions kept). The picture is cut into its patches and laid out again "
        "in random order; each patch now gets the position of another place.\n"
        "3. **Both.** Without positions, the shuffled picture is the same *set* of patches as the original, "
        "and the model cannot tell the difference: the answer is the same to the last decimal.")
    a, b = st.columns([3, 1], vertical_alignment="bottom")
    step = a.radio("Step", list(STEPS), format_func=STEPS.get, horizontal=True, persist_state="session",
                   key=option("exp:step", STEPS, "remove"))
    if b.button("Shuffle again", key="exp:reshuffle", icon=":material/shuffle:",
                help="Another random order of the patches."):
        st.session_state["exp:seed"] = int(st.session_state.get("exp:seed", 0)) + 1
    order = experiments.shuffled_order(N, int(st.session_state.get("exp:seed", 0)))
    runs = {"as it is": Intervention(), "no positions": Intervention(positions="remove"),
            "shuffled": Intervention(patch_order=order), "both": Intervention(positions="remove", patch_order=order)}
    answers = {name: answer(run, spec.key) for name, spec in runs.items()}

    left, right = st.columns([2, 1])
    with left:
        plain = answers["as it is"]
        if CLASSIFIER:
            top = int(np.argmax(plain))
            lines = ["| run | prediction | p(" + label(run, top) + ") | change |", "|---|---|---:|---:|"]
            base = analysis.softmax(plain)[top]
            for name, values in answers.items():
                p = analysis.softmax(values)
                lines.append(f"| {name} | {label(run, int(np.argmax(p)))} | {p[top]:.4%} | "
                             f"{charts.points(p[top] - base) if name != 'as it is' else ''} |")
        else:
            lines = ["| run | feature similarity to the original |", "|---|---:|"]
            for name, values in answers.items():
                lines.append(f"| {name} | {float(analysis.cosine_similarity(values, plain)):.6f} |")
        st.markdown("\n".join(lines))
        st.markdown(":material/lightbulb: " + experiments.describe_effect(
            answers["no positions"], answers["both"],
            "Without positions, shuffling the patches", labels=run.id2label, classifier=CLASSIFIER)
            + " " + experiments.describe_effect(
            plain, answers["shuffled"], "With the positions kept, the same shuffle", labels=run.id2label,
            classifier=CLASSIFIER))
    with right:
        if step in ("shuffle", "both"):
            st.image(pipeline.enlarge(experiments.rearrange_patches(run.image, order, P)),
                     caption=f"What the model is given: the same {N} patches in another order", width=220)
        else:
            st.image(pipeline.enlarge(run.image), caption="What the model is given: the picture itself", width=220)

    spec = {"remove": runs["no positions"], "shuffle": runs["shuffled"], "both": runs["both"]}[step]
    what = {"remove": "Removing the position embeddings", "shuffle": "Shuffling the patches (positions kept)",
            "both": "Removing the positions and shuffling the patches"}[step]
    after = {"remove": "no positions", "shuffle": "shuffled", "both": "no positions, shuffled"}[step]
    show_result(run, spec, what, after, order=spec.patch_order)


# ---------------------------------------------------------------------------------- B · heads
def _choose_head(chart_key: str, heads: int) -> None:
    """on_select of the head-importance map: the clicked cell becomes the chosen layer and head."""
    cell = clicked_patch(st.session_state.get(chart_key))
    if cell is not None:
        st.session_state["exp:layer"], st.session_state["exp:head"] = divmod(int(cell), heads)
    st.session_state["exp:clicks"] = int(st.session_state.get("exp:clicks", 0)) + 1  # a fresh chart next time


def heads_experiment(run) -> None:
    c = run.config
    L, H = c.num_hidden_layers, c.num_attention_heads
    target = int(np.argmax(outcome(run, Intervention().key)["answer"])) if CLASSIFIER else -1
    what = "drop of p(" + label(run, target) + ")" if CLASSIFIER else "drop of similarity"
    st.markdown(
        f"Every layer has {H} head{'s' if H > 1 else ''} working side by side, each with its own attention. "
        "**Knocking a head out** sets its output to zero before the layer mixes the heads back together; "
        "the other heads and layers run as usual. If the answer suffers, that head carried something the "
        f"model needed for this picture. Doing this for each of the {L * H} heads, one at a time, gives the "
        "head-importance map: "
        + ("how many points the predicted class's probability drops without each head." if CLASSIFIER else
           "how far the feature vector turns away from the original without each head (1 − cosine similarity).")
        + " Click a cell (or use the pickers) to knock that head out and look at it.")
    drops = ui.stored(HEADS, run, (target,))
    slot = st.empty()  # the button, gone as soon as the map is measured
    if drops is None and slot.button(f"Measure all {L * H} heads ({L} batches of {H} runs)", key="exp:heads_go",
                                     icon=":material/play_arrow:",
                                     help="Each layer's heads run as one batch, starting from the layer's cached "
                                          "input. The result is kept."):
        slot.empty()
        drops = per_layer_run(HEADS, interventions.head_importance, run, target,
                              f"Switching off each of the {L * H} heads in turn ...")
    a, b = st.columns(2)
    layer = index_picker(a, "Layer", L, "exp:layer", "layer")
    head = index_picker(b, "Head", H, "exp:head", "head")
    plain = outcome(run, Intervention().key)
    left, right = st.columns(2)
    with left:
        if drops is None:
            st.info("The head-importance map is measured when you ask for it: press the button above. Until "
                    "then, choose a head with the pickers.", icon=":material/grid_view:")
        else:
            chart_key = f"exp:heads_map_{st.session_state.get('exp:clicks', 0)}"
            ui.plot(charts.head_importance_heatmap(drops, f"Head importance: {what} without each head",
                                                   what=what, chosen=(layer, head)),
                    key=chart_key, on_select=lambda: _choose_head(chart_key, H), selection_mode="points")
            order = [i for i in np.argsort(-drops, axis=None)[:3] if drops.flat[i] > 0]
            best = ", ".join(f"layer {i // H} head {i % H} ({100 * drops.flat[i]:.1f} points)" for i in order)
            st.caption("Each cell: how many points " + ("p(" + label(run, target) + ") falls" if CLASSIFIER else
                                                        "the similarity falls")
                       + " when that head alone is knocked out. Red: the answer suffers without the head; blue: it "
                       "does better." + (f" Largest drops: {best}." if best else ""))
    with right:
        ui.plot(charts.head_map(run.image, plain["head_cls_attention"][layer, head],
                                f"What head {head} of layer {layer} looks at (as it is)",
                                ), key="exp:head_map")
        st.caption("The head's CLS attention in the unchanged model: the patches whose values this head "
                   "passes to the CLS token. Knocking it out removes that message.")
    show_result(run, Intervention(ablate_heads={layer: [head]}), f"Knocking out head {head} of layer {layer}",
                f"head {head} of layer {layer} off")


# ---------------------------------------------------------------------------------- C · layers
def layers_experiment(run) -> None:
    c = run.config
    L = c.num_hidden_layers
    st.markdown(
        "Each layer adds two corrections to the tokens (the residual stream): first what attention gathered, "
        "then what the MLP computed, `x = x + attention(x)`, then `x = x + MLP(x)`. **Skipping a layer** drops "
        "both additions, so the tokens pass through that layer unchanged; you can also drop only one of them. "
        "Early layers build the patches' features, later ones gather them into the CLS token: where in depth "
        "does losing a layer break the answer?")
    a, b = st.columns([1, 1], vertical_alignment="bottom")
    layer = index_picker(a, "Layer to skip", L, "exp:skip_layer", "layer")
    part = b.radio("Skip", list(SKIPS), format_func=SKIPS.get, horizontal=True, persist_state="session",
                   key=option("exp:skip_part", SKIPS, "layer"))
    spec = Intervention(**{{"layer": "skip_layers", "attention": "skip_attention", "mlp": "skip_mlp"}[part]: [layer]})
    what = {"layer": f"Skipping layer {layer}", "attention": f"Skipping the attention of layer {layer}",
            "mlp": f"Skipping the MLP of layer {layer}"}[part]
    after_name = {"layer": f"layer {layer} skipped", "attention": f"layer {layer} without attention",
                  "mlp": f"layer {layer} without MLP"}[part]
    show_result(run, spec, what, after_name)

    st.markdown("**Where in depth does it break?**")
    before, after = outcome(run, Intervention().key), outcome(run, spec.key)
    target = int(np.argmax(before["answer"])) if CLASSIFIER else -1
    sweep = ui.stored(SWEEP, run, (target,))
    if sweep is None:
        flops = 1.5 * L * total_flops(c, has_pooler=run.has_pooler, classifier=run.is_classifier)
        slot = st.empty()
        if flops <= AUTO_SWEEP_FLOPS or slot.button(
                f"Skip every layer in turn ({3 * L} runs)", key="exp:sweep_go", icon=":material/play_arrow:",
                help="Each layer skipped whole, without attention and without MLP. The result is kept."):
            slot.empty()
            sweep = per_layer_run(SWEEP, experiments.layer_sweep, run, target,
                                  f"Skipping each of the {L} layers in turn ...")
    left, right = st.columns(2)
    with left:
        if sweep is None:
            st.info("Press the button to skip every layer in turn.", icon=":material/stacked_line_chart:")
        else:
            y = f"p({label(run, target)})" if CLASSIFIER else "similarity to the original"
            ui.plot(charts.layer_sweep_chart(sweep["score"], float(sweep["plain"]),
                                             f"{y} with each layer skipped in turn", y_title=y, chosen=layer),
                    key="exp:sweep")
            worst = np.unravel_index(int(np.argmin(sweep["score"])), sweep["score"].shape)
            st.caption(f"The dashed line is the model as it is. The lowest point: {charts.SWEEP_ROWS[worst[0]]} at "
                       f"layer {worst[1]} ({sweep['score'][worst]:.1%}" + (")." if CLASSIFIER else " similarity)."))
    with right:
        if CLASSIFIER:
            name = label(run, target)
            ui.plot(charts.lens_before_after(before["lens"][:, target], after["lens"][:, target], name,
                                             f"Logit lens: p({name}) read after every layer", after_name=after_name,
                                             chosen=layer), key="exp:lens")
            st.caption("The logit lens applies the final layer norm and the classifier to the CLS token after "
                       "every layer, as if the model stopped there (stage 6). Up to the skipped layer the two lines "
                       "are the same; after it, you see whether the later layers make up for the loss.")
        else:
            st.caption("The logit lens needs a classifier; this model has none.")


# ---------------------------------------------------------------------------------- the page
run = ui.open_page(PAGE)
CLASSIFIER = interventions.has_classifier(run.model)
cfg = run.config

ui.stage_header(
    "7 · Experiments: what if?",
    "The stages so far watched the model. Here you **change** it and see what happens: take away the position "
    "embeddings, shuffle the patches, switch off one head, skip a layer. Each experiment runs the same model on "
    "the same picture twice, as it is and changed, and compares the two answers. Nothing is retrained and no "
    "weight is touched: the change lasts for one forward pass.",
    ["ViTEmbeddings", "ViTSelfAttention", "ViTLayer"],
)
ui.einops_expression(
    f"""
    spec = Intervention(ablate_heads={{{cfg.num_hidden_layers - 1}: [0]}},
                        skip_layers=(),
                        positions="keep")   # or "remove"
    with intervene(model, spec):            # this call only
        logits = model(pixel_values).logits
    """,
    "`ablate_heads` maps a layer to the heads whose output becomes zero; `skip_attention`, `skip_mlp` and "
    "`patch_order` (a shuffled order of the patches) work the same way. The changes are made by hooks on the "
    "model's taps while the `with` block runs, for this call alone: other students using the same model at the "
    "same time are not affected.")
ui.show_source(interventions.intervene, interventions._Plan.changes, label="The real code that makes the changes")

st.header("The picture and the answer as it is")
plain_answer = outcome(run, Intervention().key)["answer"]
left, right = st.columns([1, 3])
left.image(pipeline.enlarge(run.image), caption=f"{run.image_name}, as the model sees it", width="stretch")
with right:
    if CLASSIFIER:
        probs = analysis.softmax(plain_answer)
        top = analysis.top_indices(probs, min(5, len(probs)))
        st.markdown(f"As it is, the model says **{label(run, top[0])}** ({probs[top[0]]:.1%})"
                    + ("; then " + ", ".join(f"{label(run, i)} {probs[i]:.1%}" for i in top[1:]) if len(top) > 1 else "")
                    + ". Every experiment below compares its answer with this one.")
        ui.model_knowledge(run)
    else:
        st.markdown("This model has no classifier: it ends with a feature vector. Every experiment below compares "
                    "its feature vector with this one (cosine similarity: 1 means unchanged).")
    if not run.trained:
        st.info("These are random weights: the model has learned nothing, so changes move the answer only a little "
                "and at random. Choose the bundled model in the sidebar to see what a trained model relies on.",
                icon=":material/casino:")

st.header("Choose an experiment")
choice = st.radio("Experiment", list(EXPERIMENTS), format_func=EXPERIMENTS.get, horizontal=True,
                  persist_state="session", key=option("exp:which", EXPERIMENTS, "positions"),
                  label_visibility="collapsed")
st.subheader(EXPERIMENTS[choice])
{"positions": positions_experiment, "heads": heads_experiment, "layers": layers_experiment}[choice](run)

ui.close_page(run, PAGE)
