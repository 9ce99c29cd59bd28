"""6 · Pooler and prediction: from the last layer's tokens to a class (ViTPooler, the classifier head).

What the user sees, top to bottom: what this stage does and what THIS model has (pooler or
classifier); the live shapes and the einops lines; the real source; the final layer norm; the
pooler's tanh (models with a pooler); logits, softmax and top-k (classifiers); the logit lens (a
closed section, computed when opened); occlusion (click patches to hide them and watch the
probabilities); attention vs rollout vs occlusion sensitivity on one colour scale (closed too);
which checkpoints have a pooler; download; next stage.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from vit_explain import analysis, pipeline, ui
from vit_explain.charts import prediction as charts
from vit_explain.charts import experiments as experiment_charts
from vit_explain.charts.common import clicked_patch
from vit_explain.flops import total_flops
from vit_explain.model import ViTForImageClassification, ViTModel, ViTPooler
from vit_explain.pipeline import final_norm_and_head
from vit_explain.weights import KNOWN_CHECKPOINTS, top_k

PAGE = "pages/prediction.py"
#: Occlusion sensitivity runs by itself when all its forward passes cost less than this (FLOPs).
AUTO_SENSITIVITY_FLOPS = 2.5e10
SENSITIVITY_BATCH = 16


# ------------------------------------------------------------------------------ cached helpers
def _has_head(run) -> bool:
    return run.is_classifier and isinstance(getattr(run.model, "classifier", None), torch.nn.Linear)


@ui.cached
def _pooler_pre_activation(run) -> np.ndarray:
    """dense(CLS) before the tanh: the pooler's pre-activations [D]."""
    return pipeline.pooler_pre_activation(run.model, run.core["last_hidden_state"][0])


@ui.cached
def _logit_lens(run) -> dict:
    """Probabilities of all classes read off the CLS token after every layer: {"probs": [L+1, K], ...}."""
    norm, head = final_norm_and_head(run.model)
    out = analysis.logit_lens(run.core["hidden_states"][:, :1, :], norm, head, top_k=1)
    return {"probs": out["probs"].astype(np.float32), "top1": out["top_indices"][:, 0].astype(np.int64)}


@ui.cached(max_entries=8)
def _rollout_map(run) -> np.ndarray:
    return analysis.cls_rollout_map(analysis.attention_rollout(run.core["attentions"]),
                                    run.config.grid_size).astype(np.float32)


@ui.cached
def _picture(run) -> str:
    """The picture the model saw as a compressed data URI (drawn under several maps)."""
    return charts.image_source(run.image)


@ui.cached(max_entries=64, show_spinner="Running the model on the image with the patches hidden ...")
def _occluded_logits(run, masked: tuple[int, ...], fill: str) -> np.ndarray:
    """Logits of a plain forward pass (no trace) on the picture with ``masked`` patches filled."""
    return pipeline.occluded_output(run.model, run.core["pixel_values"], masked, fill)


#: Occlusion-sensitivity maps, kept for all sessions (computing one takes a forward pass per patch).
SENSITIVITY = "pred:sensitivity"
#: Gradient relevance maps (Chefer et al. 2021), kept for all sessions (a forward and a backward pass each).
RELEVANCE = "pred:relevance"


def _sensitivity(run, target: int | None, progress) -> np.ndarray:
    """Drop of the target class's probability (or of the feature's cosine similarity) per hidden patch."""
    return pipeline.occlusion_sensitivity_map(run.model, run.core["pixel_values"], target, batch=SENSITIVITY_BATCH,
                                              progress=lambda done, total: progress(done / total,
                                                                                    f"{done} of {total} forward passes"))


def _label(run, index: int) -> str:
    labels = run.id2label or {}
    return str(labels.get(int(index), labels.get(str(int(index)), f"LABEL_{int(index)}")))


def _clamped_masked(run) -> list[int]:
    """The hidden patches of this page, reset when the grid changed (patch or image size slider)."""
    grid = (run.config.image_size, run.config.patch_size)
    saved = st.session_state.get("pred:masked")
    if not isinstance(saved, dict) or tuple(saved.get("grid", ())) != grid:
        saved = {"grid": grid, "patches": []}
        st.session_state["pred:masked"] = saved
    n = run.config.num_patches
    return sorted({int(i) for i in saved["patches"] if 0 <= int(i) < n})


def _toggle_clicked(run, chart_key: str) -> None:
    """on_select callback of the occlusion picture: flip the clicked patch in or out of the hidden set."""
    patch = clicked_patch(st.session_state.get(chart_key))
    if patch is not None and 0 <= patch < run.config.num_patches:
        _set_masked(run, set(_clamped_masked(run)) ^ {patch})
    # a fresh chart (new key) starts with no selection, so the same patch can be clicked again
    st.session_state["pred:clicks"] = st.session_state.get("pred:clicks", 0) + 1


def _set_masked(run, patches) -> None:
    st.session_state["pred:masked"] = {"grid": (run.config.image_size, run.config.patch_size),
                                      "patches": sorted({int(i) for i in patches})}


# ------------------------------------------------------------------------------ sections
def model_kind(run) -> None:
    name = type(run.model).__name__
    if _has_head(run) and not run.has_pooler:
        st.info(f"**This model is a `{name}`: it has no pooler.** Its classifier reads the CLS token straight "
                f"after the final layer norm and gives {len(run.core['logits'])} class scores.", icon=":material/flag:")
    elif _has_head(run):
        st.info(f"**This model is a `{name}` with a pooler and a classifier.**", icon=":material/flag:")
    elif run.has_pooler:
        st.info(f"**This model is a `{name}` with a pooler and no classifier.** It stops at a feature vector "
                "(`pooler_output` = tanh(dense(CLS))): there are no classes to predict, so the class views "
                "below are replaced by what the model does give.", icon=":material/flag:")
    else:
        st.info(f"**This model is a `{name}` without pooler or classifier.** It ends at `last_hidden_state`.",
                icon=":material/flag:")


def shapes_and_code(run) -> None:
    c = run.config
    rows = [("encoder output `hidden_states[-1]`", "[batch, tokens, embed_dim]", (1, c.num_tokens, c.hidden_size)),
            ("final layer norm → `last_hidden_state`", "[batch, tokens, embed_dim]", (1, c.num_tokens, c.hidden_size)),
            ("CLS token `last_hidden_state[:, 0]`", "[batch, embed_dim]", (1, c.hidden_size))]
    lines = [f"x = layernorm(hidden_states[-1])   # [b, t, d] = [1, {c.num_tokens}, {c.hidden_size}]",
             f"cls = x[:, 0]                     # [b, d] = [1, {c.hidden_size}]  (token 0 is CLS)"]
    if run.has_pooler:
        rows.append(("pooler: dense + tanh → `pooler_output`", "[batch, embed_dim]", (1, c.hidden_size)))
        lines.append(f'pooled = tanh(einsum(cls, W_pool, "b d, e d -> b e") + b_pool)   # [1, {c.hidden_size}]')
    if _has_head(run):
        k = len(run.core["logits"])
        rows.append(("classifier → `logits`", "[batch, num_labels]", (1, k)))
        rows.append(("softmax → probabilities", "[batch, num_labels]", (1, k)))
        lines.append(f'logits = einsum(cls, W_head, "b d, k d -> b k") + b_head   # [1, {k}]')
        lines.append(f"probs = logits.softmax(dim=-1)    # [1, {k}], each row sums to 1")
    ui.shapes(rows)
    ui.einops_expression("\n".join(lines), "Only the CLS token goes on: the other tokens were needed to build it, "
                                           "through attention, but the head never reads them.")


def final_norm_section(run) -> None:
    st.header("The final layer norm")
    st.markdown("After the last layer, every token is normalised once more: its D numbers are shifted to mean 0 "
                "and scaled to standard deviation 1, then multiplied and shifted by the learned `γ` and `β` of "
                "`layernorm`. The head reads the result, so tokens whose size grew over the layers all arrive "
                "on the same footing.")
    before, after = run.core["hidden_states"][-1], run.core["last_hidden_state"]
    ui.plot(charts.cls_before_after(before[0], after[0]), key="pred:cls_strip")
    ui.plot(charts.token_stats(analysis.token_mean_std(before), analysis.token_mean_std(after)), key="pred:token_stats")


def pooler_section(run) -> None:
    st.header("The pooler: CLS → dense → tanh")
    if not run.has_pooler:
        st.markdown("**This model has no pooler.** `ViTForImageClassification` builds its `ViTModel` with "
                    "`add_pooling_layer=False`: the classifier reads the normed CLS token directly. Load a "
                    "`ViTModel` such as `google/vit-base-patch16-224-in21k` (trained pooler, no classifier) to see "
                    "this step.")
        return
    st.markdown("The pooler takes the normed CLS token, multiplies it by a D × D matrix and squashes every "
                "number into (-1, 1) with tanh. Pre-training used this vector as the image's summary; the "
                "dots below are this image's D values on the tanh curve.")
    pre = _pooler_pre_activation(run)
    post = run.core["pooler_output"]
    cols = st.columns(3)
    cols[0].metric("features", f"{post.size}")
    cols[1].metric("saturated (|tanh| > 0.95)", f"{float(np.mean(np.abs(post) > 0.95)):.0%}")
    cols[2].metric("largest |pre-activation|", f"{float(np.abs(pre).max()):.2f}")
    ui.plot(charts.tanh_figure(pre, post), key="pred:tanh")


def head_section(run) -> list[tuple[str, float]] | None:
    st.header("The classifier head: logits, softmax, top-k")
    if not _has_head(run):
        st.markdown("**This model has no classifier.** It was trained to give features (`pooler_output`, "
                    "or the normed CLS token), not classes; a head is trained on top of it for each task.")
        return None
    logits = run.core["logits"]
    K = len(logits)
    st.markdown(f"One linear layer turns the {run.config.hidden_size} numbers of the normed CLS token into "
                f"{K} scores, one per class (the **logits**). Softmax makes them positive and sum to 1: "
                "`p_i = exp(z_i) / Σ_j exp(z_j)`." + ("" if run.trained else
                " With random weights the head has learned nothing, so the probabilities are close to uniform."))
    ui.model_knowledge(run)
    k = st.slider("How many classes to show (k)", 1, min(20, K), min(5, K), key="pred:k") if K > 1 else 1
    top = top_k(logits, run.id2label, k)
    order = analysis.top_indices(logits, k)
    cols = st.columns(3)
    cols[0].metric("prediction", top[0][0])
    cols[1].metric("probability", f"{top[0][1]:.1%}")
    cols[2].metric("uniform would be", f"{1 / K:.1%}")
    left, right = st.columns(2)
    with left:
        ui.plot(charts.logits_bar([name for name, _ in top], logits[order]), key="pred:logits")
    with right:
        ui.plot(charts.probability_bar([name for name, _ in top], np.array([p for _, p in top])), key="pred:probs")
    return top


def logit_lens_section(run, k: int) -> None:
    if not _has_head(run):
        st.markdown("The logit lens needs a classifier; this model has none.")
        return
    st.markdown("What if the model stopped early? Here the final layer norm and the classifier are applied to "
                "the CLS token after **every** layer (row 0: the embeddings, before any layer). Each column is "
                "one of the final top classes: watch where its probability lights up.")
    L = run.config.num_hidden_layers
    lens = _logit_lens(run)
    probs = lens["probs"]
    final = analysis.top_indices(probs[-1], k)
    stages = ["embeddings"] + [f"after layer {i}" for i in range(L)]  # hidden_states[k]: after layer k - 1
    names = [_label(run, i) for i in final]
    top1 = [_label(run, i) for i in lens["top1"]]
    ui.plot(charts.logit_lens_heatmap(probs[:, final], stages, names, top1), key="pred:lens")
    settled = next((s for s in range(len(stages)) if all(t == lens["top1"][-1] for t in lens["top1"][s:])), L)
    st.caption(f"The final answer, **{names[0]}**, is the top class from **{stages[settled]}** on "
               f"(probability there {probs[settled, final[0]]:.1%}, at the end {probs[-1, final[0]]:.1%}).")
    if run.config.use_distillation_head:
        st.caption("This distilled DeiT answers with the average of two heads: `classifier` on the CLS token and "
                   "`distillation_classifier` on the distillation token (token 1). The lens reads the CLS head "
                   "only, so its last row can differ a little from the model's final probabilities above.")


@st.fragment
def occlusion_section(run) -> None:
    st.header("Occlusion: is attention an explanation?")
    c = run.config
    g, P = c.grid_size, c.patch_size
    masked = _clamped_masked(run)
    st.markdown("Click patches on the picture to hide them (click again to bring one back), then compare the "
                + ("class probabilities" if _has_head(run) else "image's feature vector with the original one")
                + ". If the patches the CLS token attends to most really carry the evidence, hiding them should "
                "change the result more than hiding others. The colours show the last layer's CLS attention.")
    fill = st.radio("Hide with", ["grey", "black"], horizontal=True, key="pred:fill",
                    format_func={"grey": "mean grey (0 after normalisation)", "black": "black pixels"}.get)
    attention = analysis.cls_attention_map(run.core["attentions"][-1], g, renormalise=True)
    n_top = max(1, round(0.1 * g * g))
    buttons = st.columns([3, 1, 2])
    if buttons[0].button(f"Hide the {n_top} most-attended", key="pred:mask_top", icon=":material/visibility_off:"):
        masked = [int(i) for i in analysis.top_indices(attention, n_top)]
        _set_masked(run, masked)
    if buttons[1].button("Clear", key="pred:clear", icon=":material/restart_alt:", disabled=not masked):
        masked = []
        _set_masked(run, masked)

    left, right = st.columns([3, 2])
    with left:
        chart_key = f"pred:occ_{st.session_state.get('pred:clicks', 0)}"
        ui.plot(charts.occlusion_view(run.image, attention, P, masked, source=_picture(run)), key=chart_key,
                on_select=lambda: _toggle_clicked(run, chart_key), selection_mode="points")
    with right:
        after = _occluded_logits(run, tuple(masked), fill)
        if _has_head(run):
            before_p = analysis.softmax(run.core["logits"])
            after_p = analysis.softmax(after)
            k = min(st.session_state.get("pred:k", 5), len(before_p))
            classes = analysis.top_indices(before_p, k)
            ui.plot(charts.before_after_bars([_label(run, i) for i in classes], before_p[classes], after_p[classes]),
                    key="pred:occ_bars")
            new_top = int(np.argmax(after_p))
            cols = st.columns(2)
            change = after_p[classes[0]] - before_p[classes[0]]
            cols[0].metric(f"p({_label(run, classes[0])})", f"{after_p[classes[0]]:.1%}",
                           charts.change_label(change) if masked else None,
                           delta_color="normal" if masked and abs(change) >= 0.0005 else "off")
            cols[1].metric("prediction now", _label(run, new_top),
                           "unchanged" if new_top == classes[0] else f"was {_label(run, classes[0])}", delta_color="off",
                           delta_arrow="off")
            share = float(attention.ravel()[masked].sum()) if masked else 0.0
            st.caption(f"{len(masked)} of {g * g} patches hidden; they held {share:.0%} of the last layer's "
                       "CLS attention.")
        else:
            reference = _occluded_logits(run, (), fill)
            similarity = float(analysis.cosine_similarity(after, reference))
            st.metric("feature similarity to the original", f"{similarity:.4f}",
                      f"{similarity - 1:+.4f}" if masked else None,
                      help="Cosine similarity of the feature vector (pooler output, or the normed CLS token) of "
                           "the picture with the patches hidden and of the original picture.")
            st.caption("Without a classifier there are no class probabilities; instead this is how far the "
                       "feature vector moved when the patches were hidden.")


@st.fragment
def side_by_side_section(run) -> None:
    c = run.config
    g = c.grid_size
    head = _has_head(run)
    target = int(np.argmax(run.core["logits"])) if head else None
    what = f"the probability of **{_label(run, target)}**" if head else "the feature vector's similarity to the original"
    st.markdown("Three answers to *which patches mattered?*: the CLS token's **raw attention** in the last layer "
                "(mean over heads); **attention rollout**, which follows attention back through all layers, "
                "counting the skip connections; and **occlusion sensitivity**, how much " + what + " drops when "
                "that one patch is hidden (grey). Each map is divided by its largest absolute value and all "
                "three share one colour scale.")
    raw = analysis.cls_attention_map(run.core["attentions"][-1], g, renormalise=True)
    rollout = _rollout_map(run)
    sensitivity = ui.stored(SENSITIVITY, run, (target,))
    if sensitivity is None:
        flops = g * g * total_flops(c, has_pooler=run.has_pooler, classifier=run.is_classifier)
        start = flops <= AUTO_SENSITIVITY_FLOPS or st.button(
            f"Compute occlusion sensitivity ({g * g} forward passes)", key="pred:sens_go", icon=":material/play_arrow:",
            help=f"About {flops / 1e9:,.0f} GFLOP: this can take a while on a CPU. The result is kept.")
        if start:
            sensitivity = ui.cached_with_progress(SENSITIVITY, run, (target,), lambda progress: _sensitivity(
                run, target, progress), label=f"Hiding each of the {g * g} patches in turn ...")
    maps = [analysis.normalise_map(raw), analysis.normalise_map(rollout)]
    titles = ["raw attention (last layer)", "attention rollout (all layers)"]
    if sensitivity is not None:
        maps.append(analysis.normalise_map(sensitivity))
        titles.append("occlusion sensitivity")
    lo, hi = analysis.shared_scale(*maps)
    signed = lo < 0
    if signed:
        lo, hi = analysis.shared_scale(*maps, symmetric=True)
    else:
        lo, hi = 0.0, max(hi, 1.0)
    ui.plot(charts.side_by_side(run.image, [m.astype(np.float32) for m in maps], titles, zmin=lo, zmax=hi,
                                signed=signed, colorbar_title="share of the maximum", source=_picture(run)),
            key="pred:side")
    if sensitivity is None:
        st.caption("Occlusion sensitivity is not computed yet: press the button above.")
    else:
        agreement = analysis.map_correlation(raw, sensitivity)
        st.caption(f"Correlation between raw attention and occlusion sensitivity over the {g * g} patches: "
                   f"{agreement:+.2f}." + (" Negative occlusion values (blue) are patches whose hiding *raised* "
                                           "the score." if signed else ""))

    st.markdown("**A fourth answer, from gradients: relevance** (Chefer, Gur and Wolf 2021). Rollout follows "
                "every attention weight back through the layers, whatever it carried, so it looks the same for "
                "every class. Relevance first weighs each weight by its gradient, how much nudging it would change "
                "the score of " + (f"**{_label(run, target)}**" if head else "the chosen class")
                + ", and keeps only the weights that pushed that class up: it answers *which patches mattered for "
                "this class*.")
    if not head:
        st.caption("Relevance explains one class's score, and this model has no classifier.")
        return
    relevance = ui.stored(RELEVANCE, run, (target,))
    if relevance is None:
        flops = 3 * total_flops(c, has_pooler=run.has_pooler, classifier=run.is_classifier)  # forward + backward
        slot = st.empty()  # the button, gone once the map is computed
        if flops <= AUTO_SENSITIVITY_FLOPS or slot.button(
                "Compute the relevance (one forward and one backward pass)", key="pred:relevance_go",
                icon=":material/play_arrow:", help=f"About {flops / 1e9:,.0f} GFLOP. The result is kept."):
            slot.empty()
            relevance = ui.cached_with_progress(RELEVANCE, run, (target,), lambda progress: analysis.attention_relevance(
                run.model, torch.from_numpy(run.core["pixel_values"])[None], target).astype(np.float32),
                label="Running the model forward and back ...")
    if relevance is not None:
        ui.plot(experiment_charts.maps_in_a_row(
            run.image, [analysis.normalise_map(rollout), analysis.normalise_map(relevance)],
            ["attention rollout", f"relevance of {_label(run, target)}"],
            "Rollout and gradient relevance of the same prediction, one colour scale"), key="pred:relevance")
        st.caption(f"Correlation between rollout and relevance over the {g * g} patches: "
                   f"{analysis.map_correlation(rollout, relevance):+.2f}; between raw attention and relevance: "
                   f"{analysis.map_correlation(raw, relevance):+.2f}.")


def checkpoints_table(run) -> None:
    with st.expander("Which checkpoints have a pooler, and which classify from the normed CLS token?",
                     icon=":material/help:", expanded=False):
        lines = ["| model | class | pooler | classifier |", "|---|---|---|---|"]
        for repo, info in KNOWN_CHECKPOINTS.items():
            if info.num_labels:
                lines.append(f"| `{repo}` | ViTForImageClassification | no (dropped) | {info.num_labels} classes, on the normed CLS token |")
            else:
                lines.append(f"| `{repo}` | ViTModel | **trained** (dense + tanh) | none |")
        lines.append("| bundled CIFAR-10 model | ViTForImageClassification | no | 10 CIFAR-10 classes, on the normed CLS token |")
        lines.append("| bundled shapes model | ViTForImageClassification | no | 8 shape classes, on the normed CLS token |")
        lines.append("| random weights | ViTForImageClassification | no | 10 untrained classes |")
        st.markdown("\n".join(lines))
        here = ("a pooler" if run.has_pooler else "no pooler") + " and " + ("a classifier" if _has_head(run) else "no classifier")
        st.caption(f"The model running now (`{run.source}`) has {here}. A Hub classifier checkpoint may still store "
                   "pooler weights from pre-training; `ViTForImageClassification` does not use them.")


# ------------------------------------------------------------------------------ the page
run = ui.open_page("pages/prediction.py")

ui.stage_header(
    "6 · Pooler and prediction",
    "The encoder hands over one vector per token. A last layer norm evens them out; then only the **CLS "
    "token** is used: a classifier turns it into one score per class, and softmax turns the scores into "
    "probabilities. Some models (those trained without labels for a task) instead end with a **pooler**, "
    "a dense layer and tanh that make the CLS token into the image's feature vector.",
    ["ViTModel.layernorm", "ViTPooler", "ViTForImageClassification.classifier"],
)
model_kind(run)
shapes_and_code(run)
ui.show_source(ViTPooler, ViTForImageClassification, ViTModel.forward)

final_norm_section(run)
pooler_section(run)
top = head_section(run)
ui.lazy_section("Logit lens: when does the answer appear?", "pred:open_lens",
                lambda: logit_lens_section(run, len(top) if top else 1),
                what="the classifier applied to the CLS token after every layer")
occlusion_section(run)
ui.lazy_section("Attention, rollout and occlusion, side by side", "pred:open_side",
                lambda: side_by_side_section(run), what="three answers to which patches mattered, on one scale")
checkpoints_table(run)

ui.close_page(run, "pages/prediction.py")
