"""Stage 4 · MLP: each token on its own goes D -> M -> D through a GELU, and is added back to the stream."""

import numpy as np
import streamlit as st
import torch

from vit_explain import analysis, ui
from vit_explain.charts import mlp as charts
from vit_explain.charts.common import click_layer, clicked_patch
from vit_explain.model import ViTIntermediate, ViTOutput, backbone

PAGE = "pages/mlp.py"


@ui.cached(on="model")
def activation_curve(run, layer: int, lo: float, hi: float):
    """The model's own activation module (intermediate_act_fn of this layer) evaluated on a grid of x."""
    act = backbone(run.model).encoder.layer[layer].intermediate.intermediate_act_fn
    xs = torch.linspace(lo, hi, 401, dtype=torch.float32)
    with torch.no_grad():
        ys = act(xs)
    return xs.numpy(), ys.detach().to(torch.float32).numpy()


@ui.cached
def layer_summary(run, layer: int):
    """Everything this page derives from one layer's MLP taps (small arrays and numbers)."""
    taps, grid = run.layer(layer), run.config.grid_size
    pre, post = taps["mlp_pre_act"], taps["mlp_post_act"]
    return {
        "stats": analysis.activation_stats(pre, post),
        "range": charts.curve_range(pre),
        "active_map": charts.f32(analysis.active_share_map(post, grid)),
        "ratio": charts.f32(analysis.update_ratio(taps["residual"], taps["mlp_output"])),
    }


run = ui.open_page("pages/mlp.py")
cfg = run.config
T, D, M, L, g = cfg.num_tokens, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.grid_size
act_name = cfg.hidden_act
ACT_LABELS = {"gelu": "GELU", "gelu_new": "GELU (tanh)", "gelu_pytorch_tanh": "GELU (tanh)", "gelu_fast": "GELU (fast)",
              "quick_gelu": "QuickGELU", "relu": "ReLU", "silu": "SiLU", "swish": "SiLU", "tanh": "tanh",
              "sigmoid": "sigmoid"}
act_label = ACT_LABELS.get(act_name, act_name)
act_fn_name = act_name.replace("gelu_pytorch_tanh", "gelu_tanh")

ui.stage_header(
    "4 · MLP: every token thinks on its own",
    "After attention has let the tokens share information, each token goes through a small two-layer "
    f"network by itself: its {D} numbers are stretched to {M}, passed through a bend ({act_label}) that "
    "switches most negative values off, and squeezed back to "
    f"{D}. The result is added to the token instead of replacing it, so the layer only nudges the stream.",
    ["ViTIntermediate", "ViTOutput"],
)

# ---- which layer (layer i is encoder.layer[i], counted from 0 as everywhere in the app)
if L > 1:
    index = st.select_slider("Layer", list(range(L)), key=ui.remember("mlp:layer", ui.clamp_index(L)), persist_state="session",
                             format_func=lambda i: f"layer {i}",
                             help="Every layer has its own MLP with its own weights: layer i is encoder.layer[i].")
else:
    index = 0
    st.caption("This model has a single layer: layer 0 (encoder.layer[0]).")
taps = run.layer(index)
summary = layer_summary(run, index)

ui.shapes([
    ("x: stream after the attention half of the layer", "[batch, tokens, hidden_size]", (1, T, D)),
    ("layernorm_after(x)", "[batch, tokens, hidden_size]", (1, T, D)),
    ("ViTIntermediate.dense: expand", "[batch, tokens, intermediate_size]", (1, T, M)),
    (f"{act_label}: bend", "[batch, tokens, intermediate_size]", (1, T, M)),
    ("ViTOutput.dense: project back", "[batch, tokens, hidden_size]", (1, T, D)),
    ("ViTOutput: + x (residual)", "[batch, tokens, hidden_size]", (1, T, D)),
])
ui.einops_expression(
    f"""
    h = layernorm_after(x)                         # [b, t, d]   d = {D}
    u = einsum(h, W1, "b t d, m d -> b t m") + b1  # [b, t, m]   m = {M}, ViTIntermediate.dense
    {"a = " + act_fn_name + "(u)":<46} # [b, t, m]   one number at a time
    y = einsum(a, W2, "b t m, d m -> b t d") + b2  # [b, t, d]   ViTOutput.dense
    x = x + y                                      # [b, t, d]   the residual, inside ViTOutput
    """,
    "The same two weight matrices are applied to every token separately: no token sees another here. "
    f"W1 has {M} x {D} = {M * D:,} numbers, W2 {D} x {M}; together about two thirds of a layer's parameters.",
)
ui.show_source(ViTIntermediate, ViTOutput)

# ---- 1. expand
st.subheader("1 · Expand: D → M")
ui.plot(charts.mapping_figure(
    taps["layernorm_after"], taps["mlp_pre_act"], grid=g, title=f"Layer {index}: each token row gets {M / D:.3g}x longer",
    left_title="layernorm_after", right_title="mlp_pre_act", left_axis=f"feature of D = {D}",
    right_axis=f"hidden unit of M = {M}"), key="mlp:expand")
st.caption("Each row is one token. The right panel is the left one multiplied by W1 (plus a bias): every hidden "
           "unit is a weighted sum of all D numbers of the same token, a pattern detector for the token's content.")

# ---- 2. activation
st.subheader(f"2 · Bend: {act_label}")
lo, hi = summary["range"]
xs, ys = activation_curve(run, index, lo, hi)
stats = summary["stats"]
left, right = st.columns([3, 2])
with left:
    ui.plot(charts.activation_figure(xs, ys, taps["mlp_pre_act"], act_label), key="mlp:activation")
with right:
    a = b = st.container()  # one above the other: side by side their labels were cut short at 1024 px
    a.metric("Below zero before", f"{stats['negative']:.1%}", help="Share of the T x M pre-activations that are negative.")
    b.metric(f"Near zero after {act_label}", f"{stats['near_zero']:.1%}",
             help=f"Share of activations with |value| < {charts.NEAR_ZERO}: the units this token left off.")
    act_module = backbone(run.model).encoder.layer[index].intermediate.intermediate_act_fn
    bend = ("Inputs left of zero come out close to zero (GELU dips to at most -0.17), inputs right of zero pass "
            "almost unchanged" if act_name.startswith("gelu") else "Look where the curve flattens")
    st.caption(f"The red curve is this model's own `{act_module!r}` module evaluated on a grid; the grey bars show "
               f"where this layer's real pre-activations fall. {bend}: this bend is what lets the MLP do more "
               "than one big matrix multiplication could.")
    ui.plot(charts.active_share_figure(run.image, summary["active_map"]), key="mlp:active_map")

# ---- 3. project back
st.subheader("3 · Project back: M → D")
ui.plot(charts.mapping_figure(
    taps["mlp_post_act"], taps["mlp_output"], grid=g, title=f"Layer {index}: back to {D} numbers per token",
    left_title="mlp_post_act", right_title="mlp_output", left_axis=f"hidden unit of M = {M}",
    right_axis=f"feature of D = {D}"), key="mlp:project")
st.caption("W2 mixes the switched-on units back into the token's D-dimensional space. Columns where the left "
           "panel is pale (units switched off) contribute nothing.")


# ---- 4. residual
@st.fragment
def residual_view():
    st.subheader("4 · Add it back: the residual")
    state = st.session_state
    if not isinstance(state.get("mlp:token"), int) or not 0 <= state["mlp:token"] < T:
        state["mlp:token"] = 0
    left, right = st.columns([2, 3])
    with left:
        fig = charts.update_ratio_figure(run.image, summary["ratio"], g)
        click_layer(fig, cfg.image_size, cfg.patch_size,
                    selected=state["mlp:token"] - 1 if state["mlp:token"] > 0 else None)
        event = ui.plot(fig, key="mlp:ratio_map", on_select="rerun", selection_mode="points")
        patch = clicked_patch(event)
        if patch is not None and 0 <= patch < T - 1 and state.get("mlp:last_click") != (patch, g):
            state["mlp:last_click"] = (patch, g)
            state["mlp:token"] = patch + 1
            st.rerun(scope="fragment")
    with right:
        token = st.selectbox("Token", list(range(T)), key="mlp:token",
                             format_func=lambda i: charts.token_name(i, g),
                             help="Pick a token here or click a patch on the picture.")
        res, out, y = taps["residual"][token], taps["mlp_output"][token], taps["output"][token]
        ui.plot(charts.residual_figure(res, out, y, charts.token_name(token, g)), key="mlp:residual")
        cos = float(np.dot(res, y) / max(np.linalg.norm(res) * np.linalg.norm(y), 1e-12))
        c1, c2, c3 = st.columns(3)
        c1.metric("‖x‖", f"{np.linalg.norm(res):.2f}")
        c2.metric("‖MLP output‖", f"{np.linalg.norm(out):.2f}", f"{summary['ratio'][token]:.0%} of ‖x‖",
                  delta_color="off")
        c3.metric("cos(x, x + MLP)", f"{cos:.3f}", help="1 means the MLP only stretched the token, not turned it.")
    st.caption("ViTOutput adds the MLP's answer to the token it got (the stream x), so information from earlier "
               "layers is never lost; each layer writes a correction on top. The map shows how big that correction "
               "is compared to the token itself, patch by patch.")


residual_view()

ui.close_page(run, "pages/mlp.py")
