"""Lesson: the whole ViT in a dozen steps on the current picture and model, with predict-then-reveal questions.

One step at a time: a title, a few sentences, one live view (a stage page's own figure, or one of the
lesson's motion figures), Back / Next (the arrow keys, or Page Down / Page Up from a presentation clicker)
and a link to the stage page that says more. Question steps ask first and show after: every right answer
is computed from the live run (``vit_explain.lesson``), never written into the text, so the lesson is right
for any picture and any checkpoint. Answers and the score are kept in the session only.

Every step's figures are cached by the run (``ui.cached``): going back and forth between steps reruns the
page without computing anything again.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st
import torch

from vit_explain import analysis, lesson, ui
from vit_explain.charts import attention as attention_charts
from vit_explain.charts import common
from vit_explain.charts import embeddings as embedding_charts
from vit_explain.charts import experiments as experiment_charts
from vit_explain.charts import lesson as charts
from vit_explain.charts import mlp as mlp_charts
from vit_explain.charts import overview as overview_charts
from vit_explain.charts import patching as patching_charts
from vit_explain.charts import prediction as prediction_charts
from vit_explain.model import backbone
from vit_explain.pipeline import enlarge, final_norm_and_head
from vit_explain.ui.presenter import presenting
from vit_explain.ui import keep

try:  # the interventions API (another part of the app): its two questions are left out without it
    from vit_explain import interventions
except ImportError:  # pragma: no cover - depends on the checkout
    interventions = None

PAGE = "pages/lesson.py"
STEP = "lesson:step"  #: the step shown (an index into this model's steps; kept in links as ?step=)
ANSWERS = "lesson:answers"  #: {step id: lesson.Answer}, this session only
NEED_GUESS = "lesson:need_guess"  #: the question whose "Check" was pressed with nothing chosen
INTERVENTIONS = interventions is not None and all(
    hasattr(interventions, name) for name in ("Intervention", "intervene", "head_importance"))


# ---------------------------------------------------------------------------------- small helpers
def has_head(run) -> bool:
    """A real classifier (one score per class): the class questions need it."""
    return run.is_classifier and isinstance(getattr(run.model, "classifier", None), torch.nn.Linear)


def label(run, index: int) -> str:
    labels = run.id2label or {}
    return str(labels.get(int(index), labels.get(str(int(index)), f"class {int(index)}")))


def middle_patch(grid: int) -> int:
    return (grid // 2) * grid + grid // 2


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def pixel_values(run) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(run.core["pixel_values"]))[None]


def page_title(path: str) -> str:
    return next((title for p, title, _ in ui.PAGES if p == path), "Overview")


# ---------------------------------------------------------------------------------- cached answers and figures
@ui.cached(max_entries=16)
def look_answer(run) -> dict:
    """The last layer's CLS attention over the patches (mean of the heads, a share of the patches)."""
    cfg = run.config
    values = lesson.cls_patch_map(run.core["attentions"][-1], cfg.grid_size, cfg.num_prefix_tokens)
    return {"map": values.astype(np.float32), "best": int(analysis.top_indices(values, 1)[0])}


@ui.cached(max_entries=16)
def lens_answer(run) -> dict:
    """The logit lens (as on the prediction page) and after how many layers the final answer appears."""
    norm, head = final_norm_and_head(run.model)
    out = analysis.logit_lens(run.core["hidden_states"][:, :1, :], norm, head, top_k=1)
    top1 = out["top_indices"][:, 0].astype(np.int64)
    return {"probs": out["probs"].astype(np.float32), "top1": top1, "settled": lesson.settled_depth(top1)}


HEADS = "lesson:head_importance"  #: the server-wide store of every head's knock-out effect, by run


def head_drops(run, *, compute: bool = True):
    """How much the answer suffers with each head switched off alone, ``[L, H]`` (``interventions.head_importance``).

    Computed once per run for the whole server, with a progress bar: at ViT-B/16 it is 12 batches of 12 partial
    forward passes, most of a minute on a CPU. ``compute=False``: None if it is not there yet (an ``on_click``
    callback cannot draw the bar; the page then computes it and grades the answer, see ``step_head``).
    """
    drops = ui.stored(HEADS, run, ())
    if drops is None and compute:
        def work(progress):
            return interventions.head_importance(run.model, pixel_values(run), progress=lambda done, total: progress(
                done / total, f"Switching every head off in turn: layer {done} of {total} done ..."))

        drops = ui.cached_with_progress(HEADS, run, (), work, label="Switching every head off in turn ...")
    return drops


@ui.cached(max_entries=16, show_spinner="Running the model on the shuffled picture ...")
def shuffle_answer(run) -> dict:
    return lesson.shuffle_experiment(run.model, pixel_values(run))


@ui.cached(max_entries=16)
def picture_figure(run):
    cfg = run.config
    return charts.picture_figure(run.image, f"{run.image_name} as the model gets it: {cfg.image_size} x "
                                            f"{cfg.image_size} pixels" + (", each square one pixel" if cfg.image_size < 128 else ""))


@ui.cached(max_entries=16)
def tokens_figure(run, revealed: bool):
    """The picture with its patch grid (the question), or the patches moving into the token row (the reveal).
    One figure per call: a cached figure is unpickled on every rerun, so a step fetches only what it draws."""
    cfg = run.config
    if not revealed:
        return common.image_with_grid(run.image, cfg.patch_size, f"{run.image_name}, {cfg.image_size} x "
                                      f"{cfg.image_size} pixels, with its patch grid", height=440)
    return charts.patches_to_sequence(
        run.image, cfg.patch_size, cfg.prefix_token_names(),
        f"From picture to tokens: {cfg.grid_size} x {cfg.grid_size} patches, then a row of {lesson.token_count(cfg)} "
        "tokens (press Play)")


@ui.cached(max_entries=16)
def width_figure(run, revealed: bool):
    """The middle patch's pixels (the question), or its embedding (the reveal)."""
    cfg = run.config
    patch = middle_patch(cfg.grid_size)
    if not revealed:
        tile = patching_charts.patch_tiles(run.image, cfg.patch_size)[patch]
        return patching_charts.patch_zoom_figure(
            tile, f"Patch {patch}: {cfg.patch_size} x {cfg.patch_size} pixels x {cfg.num_channels} colours", height=360)
    return patching_charts.embedding_vector_figure(
        run.core["patch_embeddings"][patch], None,
        f"Patch {patch} after the projection: one token of {cfg.hidden_size} numbers")


@ui.cached(max_entries=16)
def position_figure(run):
    cfg = run.config
    g, patch = cfg.grid_size, middle_patch(cfg.grid_size)
    similarity = embedding_charts.cosine_matrix(run.core["position_embeddings"][-g * g:])
    row, col = divmod(patch, g)
    fig = embedding_charts.similarity_overlay_figure(
        run.image, similarity[patch].reshape(g, g), cfg.patch_size, patch, height=480,
        title=f"How alike the position vector of patch {patch} (row {row}, col {col}) is to every patch's")
    S = cfg.image_size
    fig.update_layout(title_subtitle_text=None, clickmode="none")
    fig.update_xaxes(range=[-0.5, S - 0.5])  # the picture fills the plot (the click markers widened it)
    fig.update_yaxes(range=[S - 0.5, -0.5], autorange=False)
    return fig


@ui.cached(max_entries=16)
def first_layer_heads(run):
    cfg = run.config
    maps, to_self = attention_charts.cls_maps(run.core["attentions"][0], cfg.grid_size)
    _, zmax = common.attention_range(maps)
    H = cfg.num_attention_heads
    cols = H if H <= 4 else attention_charts.facet_columns(H)  # up to 4 heads in one row
    tiles = attention_charts.overlay_tiles(run.image, maps, 0.0, zmax)
    return attention_charts.overlay_facets(
        tiles, maps, [f"head {h}" for h in range(H)], "Layer 0: where the CLS token looks, one panel per head",
        zmax=zmax, cols=cols, colorbar_title=common.scale_label("weight", 0.0, zmax, False), hover_label="weight")


@ui.cached(max_entries=16)
def look_figure(run, revealed: bool, guess: int | None = None):
    """The picture to click (the question), or the last layer's CLS map with the answer and the guess outlined."""
    cfg = run.config
    if not revealed:
        return charts.patch_picker(run.image, cfg.patch_size, "Click the patch you think the CLS token looks at most",
                                   height=460)
    answer = look_answer(run)
    return charts.answer_map(run.image, answer["map"],
                             f"Layer {cfg.num_hidden_layers - 1}: where the CLS token looks (mean of the heads)",
                             best=answer["best"], guess=guess, colorbar_title=f"share<br>fitted 0–{answer['map'].max():.3g}")


@ui.cached(max_entries=16)
def depth_figure(run):
    cfg = run.config
    maps = analysis.cls_attention_map(run.core["attentions"], cfg.grid_size, cfg.num_prefix_tokens, renormalise=True)
    return charts.attention_through_layers(
        run.image, maps, f"Where the CLS token looks in each of the {cfg.num_hidden_layers} layers (mean of the heads)")


@ui.cached(max_entries=16)
def mlp_figure(run) -> dict:
    cfg = run.config
    layer = cfg.num_hidden_layers - 1
    taps = run.layer(layer)
    pre, post = taps["mlp_pre_act"], taps["mlp_post_act"]
    lo, hi = mlp_charts.curve_range(pre)
    act = backbone(run.model).encoder.layer[layer].intermediate.intermediate_act_fn
    xs = torch.linspace(lo, hi, 401, dtype=torch.float32)
    with torch.no_grad():
        ys = act(xs).to(torch.float32).numpy()
    name = {"gelu": "GELU", "relu": "ReLU", "silu": "SiLU", "swish": "SiLU"}.get(cfg.hidden_act, cfg.hidden_act)
    fig = mlp_charts.activation_figure(xs.numpy(), ys, pre, name)
    return {"figure": fig, "stats": analysis.activation_stats(pre, post), "name": name, "layer": layer}


@ui.cached(max_entries=16)
def winner_figure(run):
    from vit_explain.weights import top_k

    top = top_k(run.core["logits"], run.id2label, k=min(5, len(run.core["logits"])))
    return overview_charts.prediction_figure(top, title=f"The model's top {len(top)} for {run.image_name}")


@ui.cached(max_entries=16)
def lens_figure(run):
    lens = lens_answer(run)
    probs = lens["probs"]
    k = min(5, probs.shape[1])
    final = analysis.top_indices(probs[-1], k)
    L = run.config.num_hidden_layers
    stages = ["embeddings"] + [f"after layer {i}" for i in range(L)]
    return prediction_charts.logit_lens_heatmap(probs[:, final], stages, [label(run, i) for i in final],
                                                [label(run, i) for i in lens["top1"]])


def head_figure(run, drops, guess: tuple[int, int] | None):
    """Not cached: a heatmap of L x H numbers is quicker to draw than to fetch from a cache."""
    what = "drop of p(answer)" if has_head(run) else "1 − cos"
    return experiment_charts.head_importance_heatmap(
        drops, "Each head switched off alone: how much the answer suffers", what=what, chosen=guess)


@ui.cached(max_entries=16)
def shuffle_figures(run, revealed: bool):
    if not revealed:  # the question needs no model run: only the shuffled picture
        order = lesson.shuffled_order(run.config.num_patches)
        return charts.pictures_side_by_side(run.image, lesson.shuffle_picture(run.image, order, run.config.patch_size),
                                            ("as it is", "patches shuffled"),
                                            "The picture, and the same patches in a random order")
    out = shuffle_answer(run)
    if out["classifier"]:
        before, after = analysis.softmax(out["plain"]), analysis.softmax(out["shuffled"])
        order = analysis.top_indices(before, min(5, len(before)))
        fig = experiment_charts.prediction_bars([label(run, i) for i in order], before[order], after[order],
                                                after_name="shuffled")
        fig.update_layout(title_text="Without position embeddings: the top classes, as it is and shuffled")
        return fig
    same = float(analysis.cosine_similarity(out["shuffled"], out["plain"]))
    same_pos = float(analysis.cosine_similarity(out["shuffled_pos"], out["plain_pos"]))
    return charts.similarity_bars([same, same_pos], ["no position embeddings", "with position embeddings"],
                                  "How alike the answer stays when the patches are shuffled")


# ---------------------------------------------------------------------------------- answers
def answers() -> dict:
    return st.session_state.setdefault(ANSWERS, {})


def answer_of(run, step_id: str) -> lesson.Answer | None:
    """This run's answer to the question (None while it is still to be asked on this picture and model)."""
    given = answers().get(step_id)
    return given if given is not None and given.key == run.key else None


def grade(run, step_id: str, guess) -> tuple[bool, object]:
    """(is the guess right?, the right answer), computed from the live run."""
    cfg = run.config
    if step_id == "tokens":
        right = lesson.token_count(cfg)
        return int(guess) == right, right
    if step_id == "width":
        right = lesson.width_answer(cfg)
        return int(guess) == right, right
    if step_id == "look":
        answer = look_answer(run)
        rank = lesson.patch_rank(answer["map"], int(guess))
        return rank <= lesson.good_rank(cfg.num_patches), answer["best"]
    if step_id == "winner":
        right = lesson.winner(run.core["logits"])
        return int(guess) == right, right
    if step_id == "lens":
        right = lens_answer(run)["settled"]
        return int(guess) == right, right
    if step_id == "head":  # None, None until the heads have been measured (see head_drops)
        drops = head_drops(run, compute=False)
        if drops is None:
            return None, None
        return lesson.head_is_close(drops, *guess), lesson.most_harmful_head(drops)
    if step_id == "shuffle":
        right = "changes" if shuffle_answer(run)["changes"] else "stays"
        return guess == right, right
    raise ValueError(step_id)


def record(run, step_id: str, keys: tuple[str, ...] = (), guess=None) -> None:
    """Keep the student's guess (from the widgets ``keys``, or ``guess``) with whether it is right for this run."""
    if keys:
        values = tuple(st.session_state.get(k) for k in keys)
        if any(v is None for v in values):
            st.session_state[NEED_GUESS] = step_id
            return
        guess = values[0] if len(values) == 1 else tuple(int(v) for v in values)
    if guess is None:
        return
    st.session_state.pop(NEED_GUESS, None)
    right, correct = grade(run, step_id, guess)
    answers()[step_id] = lesson.Answer(run.key, guess, None if right is None else bool(right), correct)


def show_without_guessing(run, step_id: str) -> None:
    _, correct = grade(run, step_id, _any_guess(run, step_id))
    answers()[step_id] = lesson.Answer(run.key, None, False, correct)


def _any_guess(run, step_id: str):
    return {"tokens": 0, "width": 0, "look": 0, "winner": 0, "lens": 0, "head": (0, 0), "shuffle": "stays"}[step_id]


def clicked(run, chart_key: str) -> None:
    """``on_select`` of the patch picker: the clicked patch is the student's answer."""
    patch = common.clicked_patch(st.session_state.get(chart_key))
    if patch is not None and 0 <= patch < run.config.num_patches:
        record(run, "look", guess=int(patch))


def ask(run, step_id: str, prompt: str, draw_inputs, keys: tuple[str, ...], *, first: bool = True) -> None:
    """The question box: the prompt, its inputs, "Check my answer", and "Just show me"."""
    with st.form(f"lesson:form:{step_id}", border=True, enter_to_submit=True):
        st.markdown(f":material/psychology: **Predict first.** {prompt}" if first else prompt)
        draw_inputs()
        st.form_submit_button("Check my answer", type="primary", icon=":material/check:",
                              on_click=partial(record, run, step_id, keys))
    if st.session_state.get(NEED_GUESS) == step_id:
        st.warning("Choose or type your guess first, then press *Check my answer*.", icon=":material/edit:")
    st.button("Just show me", key=f"lesson:show:{step_id}", type="tertiary", icon=":material/visibility:",
              on_click=partial(show_without_guessing, run, step_id))


def verdict(answer: lesson.Answer, right_text: str, detail: str = "") -> None:
    """Right, not quite, or skipped: said once, with the computed right answer."""
    more = f" {detail}" if detail else ""
    at = next((i for i, ch in enumerate(right_text) if ch.isalpha()), None)
    if at is not None:
        right_text = right_text[:at] + right_text[at].upper() + right_text[at + 1:]
    if answer.guess is None:
        st.info(f"**The answer:** {right_text}.{more}", icon=":material/visibility:")
    elif answer.right:
        st.success(f"**Right!** {right_text}.{more}", icon=":material/check_circle:")
    else:
        st.warning(f"**Not quite.** {right_text}.{more}", icon=":material/lightbulb:")


def shapes(rows) -> None:
    """The live shapes: a table, folded into an expander in presenter mode."""
    if presenting():
        with st.expander("The shapes of these tensors", icon=":material/table:"):
            ui.shapes(rows)
    else:
        ui.shapes(rows)


# ---------------------------------------------------------------------------------- the steps
def step_picture(run) -> None:
    cfg = run.config
    st.markdown(
        f"A ViT never sees your file as it is. The picture is resized to **{cfg.image_size} x {cfg.image_size} "
        "pixels** and its colours are turned into numbers around 0; this is what the model gets. Every step of "
        f"this lesson is computed live from this picture and {getattr(run.model, 'source', None) or run.source}. "
        "Choose another picture or model in the sidebar and every view, and every answer, follows.")
    ui.plot(picture_figure(run), key="lesson:picture")
    skipped = lesson.skipped_steps(classifier=has_head(run), interventions=INTERVENTIONS)
    if any(s.needs_classifier for s in skipped):
        st.info("This model has **no classifier**: it turns a picture into a feature vector, not into class "
                "scores, so the two questions about classes are left out of this lesson.", icon=":material/info:")
    if any(s.needs_interventions for s in skipped):
        st.info("The two experiment questions (switching heads off, shuffling patches) need the interventions "
                "module, which this copy of the app does not have; they are left out.", icon=":material/info:")


def step_tokens(run) -> None:
    cfg = run.config
    answer = answer_of(run, "tokens")
    st.markdown(
        "A transformer reads a *sequence* of vectors, not a grid. So the picture is cut into square patches of "
        f"**{cfg.patch_size} x {cfg.patch_size} pixels**, read row by row like the words on a page, and every patch "
        "becomes one token. The model also puts its own learned token(s) in front of the patches.")
    if answer is None:
        ask(run, "tokens", "How many tokens will the encoder see for this picture?",
            lambda: st.number_input("Number of tokens", min_value=1, max_value=100_000, value=None, step=1,
                                    key="lesson:guess:tokens", placeholder="type a number"),
            ("lesson:guess:tokens",))
        ui.plot(tokens_figure(run, False), key="lesson:tokens_before")
        return
    names = cfg.prefix_token_names()
    front = " and ".join(names) if len(names) <= 2 else f"{names[0]} and {len(names) - 1} more"
    verdict(answer, f"the encoder sees **{lesson.token_count(cfg)} tokens**",
            f"{cfg.grid_size} x {cfg.grid_size} = {cfg.num_patches} patches, plus {plural(cfg.num_prefix_tokens, 'token')} "
            f"in front ({front})." + ("" if answer.guess is None else f" You said {answer.guess}."))
    ui.plot(tokens_figure(run, True), key="lesson:tokens_motion")
    st.caption("Press ▶ Play: the patches leave the picture in reading order and line up as the token sequence; "
               "*Back to the start* puts them back. The animation runs in your browser.")


def step_width(run) -> None:
    cfg = run.config
    C, P, D = cfg.num_channels, cfg.patch_size, cfg.hidden_size
    answer = answer_of(run, "width")
    st.markdown(
        f"Each patch holds {P} x {P} pixels of {C} colours: **{C * P * P} numbers**. One shared linear layer "
        "(in the code a `Conv2d` whose stride equals its size, so it never overlaps) multiplies them by a weight "
        "matrix and adds a bias. The same matrix is used for every patch.")
    if answer is None:
        ask(run, "width", "How many numbers does each token have right after this projection?",
            lambda: st.pills("Numbers per token", lesson.width_options(cfg), key="lesson:guess:width",
                             format_func=lambda n: f"{n:,}"),
            ("lesson:guess:width",))
        ui.plot(width_figure(run, False), key="lesson:width_before")
        return
    verdict(answer, f"every token has **{D} numbers**, the model's hidden size D",
            f"It keeps exactly {D} through all {plural(cfg.num_hidden_layers, 'layer')}: every layer maps "
            f"[{cfg.num_tokens}, {D}] to [{cfg.num_tokens}, {D}]."
            + ("" if answer.guess is None else f" You said {answer.guess:,}."))
    ui.plot(width_figure(run, True), key="lesson:width_after")
    shapes([("pixel_values", "[batch, channels, height, width]", (1, C, cfg.image_size, cfg.image_size)),
            ("patches (flattened)", "[batch, num_patches, channels*patch*patch]", (1, cfg.num_patches, C * P * P)),
            ("patch embeddings", "[batch, num_patches, hidden]", (1, cfg.num_patches, D))])


def step_position(run) -> None:
    cfg = run.config
    extra = (f" This model also puts {plural(cfg.num_prefix_tokens - 1, 'more token')} in front "
             f"({', '.join(cfg.prefix_token_names()[1:])})." if cfg.num_prefix_tokens > 1 else "")
    if cfg.num_register_tokens:
        extra += " The register tokens get no position: they belong to no place in the picture."
    st.markdown(
        "Two learned extras join the patch tokens. The **CLS token** goes in front: an empty summary slot, the same "
        "for every picture, that the classifier reads at the very end." + extra + " Then every token gets a "
        "**position embedding** added, one learned vector per place, because otherwise the layers could not tell "
        "where a patch came from. "
        + ("With trained weights, neighbours usually have alike position vectors: the model found the grid "
           "by itself." if run.trained else "These weights are random, so there is no pattern yet."))
    ui.plot(position_figure(run), key="lesson:position")


def step_attention(run) -> None:
    cfg = run.config
    st.markdown(
        "In every layer each token makes three vectors: a **query** (what am I looking for?), a **key** (what do I "
        "contain?) and a **value** (what do I pass on?). It compares its query with every key, the softmax turns "
        "the scores into weights that add up to 1, and it takes the weighted mix of the values. "
        f"Each of the {plural(cfg.num_attention_heads, 'head')} does this on its own slice of the numbers; "
        "here is where the CLS token looks in the first layer.")
    ui.plot(first_layer_heads(run), key="lesson:heads")


def step_look(run) -> None:
    cfg = run.config
    L, N = cfg.num_hidden_layers, cfg.num_patches
    answer = answer_of(run, "look")
    st.markdown(
        f"Layer after layer, the CLS token collects what the end of the model will need. In the last layer, "
        f"layer {L - 1}, its attention (the mean of the {plural(cfg.num_attention_heads, 'head')}) says which "
        "patches it reads most.")
    if answer is None:
        st.markdown(f":material/psychology: **Predict first.** Which of the {N} patches does the CLS token attend "
                    "to most in the last layer? **Click it** on the picture.")
        ui.plot(look_figure(run, False), key="lesson:look_pick", on_select=partial(clicked, run, "lesson:look_pick"),
                selection_mode="points")
        ask(run, "look", f"... or type its number (patches are numbered row by row, 0 to {N - 1}).",
            lambda: st.number_input("Patch number", min_value=0, max_value=N - 1, value=None, step=1,
                                    key="lesson:guess:look", placeholder="0, 1, 2 ..."),
            ("lesson:guess:look",), first=False)
        return
    best = int(answer.correct)
    row, col = divmod(best, cfg.grid_size)
    if answer.guess is None:
        detail = ""
    else:
        guess = int(answer.guess)
        rank = lesson.patch_rank(look_answer(run)["map"], guess)
        distance = lesson.patch_distance(guess, best, cfg.grid_size)
        detail = (f"Your patch {guess} comes **{rank} of {N}** "
                  f"({distance:.1f} patch widths from the top one). A click counts as right in the top "
                  f"{lesson.good_rank(N)}.")
    verdict(answer, f"the CLS token looks most at **patch {best}** (row {row}, column {col})", detail)
    ui.plot(look_figure(run, True, None if answer.guess is None else int(answer.guess)), key="lesson:look_answer")


def step_depth(run) -> None:
    cfg = run.config
    st.markdown(
        f"Press **▶ Play** to watch where the CLS token looks in each of the {plural(cfg.num_hidden_layers, 'layer')}, "
        "from the first to the last, or drag the slider to stop at one layer. One colour scale for all layers: a "
        "layer that spreads its attention over many patches looks pale, one that focuses looks bright. "
        "In trained models the early layers often look broadly and the late ones settle on what decides the answer.")
    ui.plot(depth_figure(run), key="lesson:depth")
    st.caption("The animation runs in your browser; the slider works while it plays.")


def step_mlp(run) -> None:
    cfg = run.config
    out = mlp_figure(run)
    stats = out["stats"]
    st.markdown(
        f"After attention, every token goes on its own through a small two-layer network: its {cfg.hidden_size} "
        f"numbers are stretched to {cfg.intermediate_size}, bent by {out['name']}, squeezed back to "
        f"{cfg.hidden_size} and added to the token. The red curve is the bend; the grey bars show where the real "
        f"inputs of layer {out['layer']} fall for this picture: **{stats['negative']:.0%} of them are below zero**, "
        f"and the bend turns {stats['near_zero']:.0%} of all values (almost) off.")
    ui.plot(out["figure"], key="lesson:mlp")


def step_winner(run) -> None:
    K = len(run.core["logits"])
    answer = answer_of(run, "winner")
    st.markdown(
        f"At the end only the CLS token is read: a last layer norm and one linear layer turn its "
        f"{run.config.hidden_size} numbers into {K} scores, one per class, and the softmax turns the scores into "
        "probabilities. The class with the largest one is the answer."
        + ("" if run.trained else " These weights are random, so the answer is a coin toss."))
    if answer is None:
        options = list(range(K))
        if K <= 20:
            draw = lambda: st.pills("Class", options, key="lesson:guess:winner", format_func=partial(label, run))  # noqa: E731
        else:
            draw = lambda: st.selectbox("Class", options, index=None, key="lesson:guess:winner",  # noqa: E731
                                        format_func=partial(label, run), placeholder="type to search the classes")
        ask(run, "winner", "Which class will the model pick for this picture?", draw, ("lesson:guess:winner",))
        st.image(enlarge(run.image, 256), width=260, caption=run.image_name)
        return
    p = analysis.softmax(run.core["logits"])
    right = int(answer.correct)
    detail = "" if answer.guess is None else (
        f"You said **{label(run, answer.guess)}**, which the model gives {p[int(answer.guess)]:.1%}.")
    verdict(answer, f"the model picks **{label(run, right)}** ({p[right]:.1%})", detail)
    ui.plot(winner_figure(run), key="lesson:winner")


def step_lens(run) -> None:
    L = run.config.num_hidden_layers
    answer = answer_of(run, "lens")
    st.markdown(
        "What if the model stopped early? The **logit lens** applies the final layer norm and the classifier to the "
        f"CLS token after every layer, as if the model had only those layers. Row 0 is the CLS token before any "
        f"layer; the last row, after all {L}, is the model's own answer.")
    if answer is None:
        ask(run, "lens", f"After how many of the {L} layers is the final answer already on top, and stays there? "
                         "(0: before any layer.)",
            lambda: st.pills("Layers", list(range(L + 1)), key="lesson:guess:lens"), ("lesson:guess:lens",))
        return
    lens = lens_answer(run)
    final = label(run, lens["top1"][-1])
    s = int(answer.correct)
    right_text = (f"The answer, **{final}**, is on top from the start (0 layers)" if s == 0 else
                  f"The answer, **{final}**, comes out on top after **{plural(s, 'layer')}** and stays there")
    detail = "" if answer.guess is None else f"You said {plural(int(answer.guess), 'layer')}."
    if run.config.use_distillation_head:
        detail += " (This DeiT averages two heads; the lens reads the CLS head only.)"
    verdict(answer, right_text, detail)
    ui.plot(lens_figure(run), key="lesson:lens")


def step_head(run) -> None:
    cfg = run.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    answer = answer_of(run, "head")
    what = "the probability of the model's answer" if has_head(run) else "the feature vector (1 − its cosine similarity)"
    st.markdown(
        f"This model has {L} x {H} = {L * H} heads. Switch one head off (its output set to zero), run the picture "
        f"again and see how much {what} changes. Some heads matter a lot, many hardly at all.")
    if answer is None:
        def inputs() -> None:
            left, right = st.columns(2)
            left.number_input("Layer", min_value=0, max_value=L - 1, value=None, step=1, key="lesson:guess:head_layer",
                              placeholder=f"0 to {L - 1}")
            right.number_input("Head", min_value=0, max_value=H - 1, value=None, step=1, key="lesson:guess:head_head",
                               placeholder=f"0 to {H - 1}")

        ask(run, "head", "Which head, switched off alone, hurts the answer most?", inputs,
            ("lesson:guess:head_layer", "lesson:guess:head_head"))
        return
    drops = head_drops(run)
    if answer.correct is None:  # answered before the heads were measured: grade it now
        answer = lesson.Answer(run.key, answer.guess, answer.guess is not None and lesson.head_is_close(
            drops, *answer.guess), lesson.most_harmful_head(drops))
        answers()["head"] = answer
    layer, head = answer.correct
    unit = "points" if has_head(run) else "points of 1 − cos"
    detail = ""
    if answer.guess is not None:
        gl, gh = answer.guess
        detail = (f"Your head {gh} of layer {gl} comes **{lesson.head_rank(drops, gl, gh)} of {L * H}** "
                  f"({100 * drops[gl, gh]:+.1f} {unit}). A guess counts as right when it costs at least half as much "
                  "as the worst one.")
    verdict(answer, f"switching off **head {head} of layer {layer}** hurts most ({100 * drops[layer, head]:+.1f} {unit})",
            detail)
    ui.plot(head_figure(run, drops, None if answer.guess is None else tuple(answer.guess)), key="lesson:head")


def step_shuffle(run) -> None:
    answer = answer_of(run, "shuffle")
    st.markdown(
        "Position embeddings are the only place where the model is told where a patch sat. Take them away, then "
        "shuffle the patches like a jigsaw puzzle before the model reads them.")
    if answer is None:
        ask(run, "shuffle", "Without position embeddings, will shuffling the patches change the model's answer?",
            lambda: st.pills("Your guess", ["changes", "stays"], key="lesson:guess:shuffle",
                             format_func={"changes": "Yes, it changes", "stays": "No, it stays the same"}.get),
            ("lesson:guess:shuffle",))
        ui.plot(shuffle_figures(run, False), key="lesson:shuffle_before")
        return
    out = shuffle_answer(run)
    if out["classifier"]:
        size = float(np.abs(analysis.softmax(out["shuffled"]) - analysis.softmax(out["plain"])).max())
        size_pos = float(np.abs(analysis.softmax(out["shuffled_pos"]) - analysis.softmax(out["plain_pos"])).max())
        amount = ("no probability moves by even 0.0001 points" if size < 5e-7 else
                  f"the largest change of a probability is {100 * size:.4f} points")
        amount_pos = f"{100 * size_pos:.2f} points"
    else:
        amount = f"the feature vector's cosine similarity stays {float(analysis.cosine_similarity(out['shuffled'], out['plain'])):.6f}"
        amount_pos = f"cosine similarity {float(analysis.cosine_similarity(out['shuffled_pos'], out['plain_pos'])):.4f}"
    right_text = ("without position embeddings, shuffling **changes the answer**" if out["changes"] else
                  "without position embeddings, shuffling **leaves the answer as it was**")
    why = ("" if out["changes"] else " Attention compares every token with every token whatever their order, and the "
           "CLS token reads a weighted sum, so without positions the model sees a bag of patches.")
    with_pos = ("With the position embeddings kept, the same shuffle "
                + ("changes" if out["changes_with_positions"] else "does not change") + f" it ({amount_pos}).")
    if out["classifier"]:
        bare, kept = lesson.winner(out["plain"]), lesson.winner(out["plain_pos"])
        with_pos += (f" Note that without positions the model answers **{label(run, bare)}**"
                     + (", as it does with them." if bare == kept else f", not **{label(run, kept)}**: "
                        "taking the positions away already changed its mind."))
    verdict(answer, right_text, f"Here {amount}.{why} {with_pos}")
    ui.plot(shuffle_figures(run, True), key="lesson:shuffle_after")


QUESTIONS = {"tokens": "Tokens the encoder sees", "width": "Numbers per token", "look": "Where CLS looks most",
             "winner": "The winning class", "lens": "When the answer appears", "head": "The head that matters most",
             "shuffle": "Shuffling without positions"}


def _said(run_now, step_id: str, value) -> str:
    if value is None:
        return "–"
    if step_id == "winner":
        return label(run_now, value)
    if step_id == "look":
        return f"patch {value}"
    if step_id == "head":
        return f"head {value[1]} of layer {value[0]}"
    if step_id == "shuffle":
        return {"changes": "it changes", "stays": "it stays"}[value]
    if step_id == "lens":
        return f"after {plural(int(value), 'layer')}"
    return f"{value:,}" if isinstance(value, (int, np.integer)) else str(value)


def step_score(run, steps) -> None:
    right, answered, total = lesson.score(answers(), steps)
    st.markdown(f"### Your score: {right} of {total}")
    st.markdown(f"You answered {answered} of the {total} questions; {right} were right. The score is kept in this "
                "browser session only: nobody else sees it, and it is gone when you close the tab.")
    lines = []
    for step in steps:
        if not step.asks:
            continue
        given = answers().get(step.id)
        if given is None:
            lines.append(f"- {QUESTIONS[step.id]}: not answered yet")
            continue
        mark = "skipped" if given.guess is None else ("right" if given.right else "not quite")
        elsewhere = "" if given.key == run.key else " (on another picture or model)"
        lines.append(f"- {QUESTIONS[step.id]}: you said {_said(run, step.id, given.guess)}, the answer was "
                     f"{_said(run, step.id, given.correct)}: **{mark}**{elsewhere}")
    st.markdown("\n".join(lines))
    skipped = lesson.skipped_steps(classifier=has_head(run), interventions=INTERVENTIONS)
    if any(s.needs_classifier for s in skipped):
        st.caption("The class questions were left out: this model has no classifier.")
    st.markdown("Try the lesson again on another picture (sidebar, *Picture in use*): the answers are computed "
                "again for it, and some of them change.")
    st.button("Start the lesson again", key="lesson:restart", icon=":material/restart_alt:", on_click=restart)


def restart() -> None:
    st.session_state[ANSWERS] = {}
    st.session_state[STEP] = 0


DRAW = {"picture": step_picture, "tokens": step_tokens, "width": step_width, "position": step_position,
        "attention": step_attention, "look": step_look, "depth": step_depth, "mlp": step_mlp, "winner": step_winner,
        "lens": step_lens, "head": step_head, "shuffle": step_shuffle}


# ---------------------------------------------------------------------------------- navigation
def go(delta: int, count: int) -> None:
    current = st.session_state.get(STEP, 0)
    current = current if isinstance(current, int) and not isinstance(current, bool) else 0
    st.session_state[STEP] = int(min(max(current + delta, 0), count - 1))
    st.session_state.pop(NEED_GUESS, None)


def navigation(index: int, count: int) -> None:
    """Back / step k of n / Next; the arrow keys and Page Up / Page Down (a presentation clicker) press them."""
    with st.container(horizontal=True, vertical_alignment="center", key="lesson-nav"):
        st.button("Back", key="lesson:back", icon=":material/arrow_back:", disabled=index == 0, shortcut="Left",
                  on_click=go, args=(-1, count), help="Previous step (left arrow or Page Up)")
        st.markdown(f"**Step {index + 1} of {count}**")
        st.button("Next", key="lesson:next", icon=":material/arrow_forward:", type="primary",
                  disabled=index == count - 1, shortcut="Right", on_click=go, args=(1, count),
                  help="Next step (right arrow or Page Down)")
    with st.container(key="lesson-clicker"):  # hidden: what a presentation clicker sends
        st.button("Next page", key="lesson:page_down", shortcut="PageDown", disabled=index == count - 1,
                  on_click=go, args=(1, count))
        st.button("Previous page", key="lesson:page_up", shortcut="PageUp", disabled=index == 0,
                  on_click=go, args=(-1, count))
    st.html("<style>.st-key-lesson-clicker { display: none; }</style>")


def answers_so_far(steps) -> list[str]:
    """The student's answers, for the downloaded step: one line a question answered, then the score."""
    right, answered, total = lesson.score(answers(), steps)
    lines = []
    for s in steps:
        given = answers().get(s.id)
        if s.asks and given is not None and given.guess is not None:
            verdict = "not graded yet" if given.right is None else ("right" if given.right else "not quite")
            lines.append(f"**{s.title}**: you answered {given.guess} ({verdict}; the answer: {given.correct}).")
    return lines + [f"**Your score so far: {right} of {total}** ({answered} answered)."]


# ---------------------------------------------------------------------------------- the page
run = ui.open_page(PAGE)
steps = lesson.lesson_steps(classifier=has_head(run), interventions=INTERVENTIONS)
index = st.session_state[ui.remember(STEP, ui.clamp_index(len(steps)))]
step = steps[index]

st.caption(f"Lesson · the whole Vision Transformer in {len(steps)} steps, on {run.image_name}")
st.header(step.title)
navigation(index, len(steps))
if step.id == "score":
    step_score(run, steps)
else:
    DRAW[step.id](run)
more = step.page if step.page in [p for p, _, _ in ui.PAGES] else "pages/overview.py"
st.page_link(more, label=f"More on this: {page_title(more)}", icon=":material/open_in_new:")
keep.download_page_button(run, PAGE, f"Lesson · {step.title}", preface=answers_so_far(steps),
                          label="Download this step and your answers (.html)")
ui.finish_link()  # what close_page does besides its downloads: the address bar becomes a link to this step
