"""Stage 5 · Layer stack: the same pre-norm block repeated L times on one residual stream, and what depth does.

Top to bottom: the stream across depth, token norms, where CLS looks in every layer, then "Local and global
heads" (closed: drawn when opened), attention rollout, and the token PCA (closed too).
"""

import numpy as np
import streamlit as st

from vit_explain import analysis, pipeline, ui
from vit_explain.charts import layers as charts
from vit_explain.model import ViTEncoder, ViTLayer

PAGE = "pages/layers.py"
FUSIONS = {"mean": "mean over heads", "max": "max over heads", "min": "min over heads"}


# ---------------------------------------------------------------------------- cached maths
@ui.cached(max_entries=8, show_spinner="Following the residual stream through every layer ...")
def stream(run) -> dict:
    """Norms of the stream and of each branch's update, from every layer's first residual (the ``residual`` tap)."""
    hidden = run.core["hidden_states"]
    residuals = pipeline.layer_tap(run.model, hidden, "residual")  # [L, T, D]: input + attention branch
    return {name: charts.f32(v) for name, v in analysis.stream_norms(hidden, residuals).items()}


@ui.cached(max_entries=8, show_spinner="Measuring every layer and head ...")
def depth(run) -> dict:
    """The per-layer summaries drawn on this page (all small float32 arrays)."""
    hidden, attn = run.core["hidden_states"], run.core["attentions"]
    grid, patch_size = run.config.grid_size, run.config.patch_size
    norms = analysis.token_norms(hidden)
    n = grid * grid
    prefix = norms.shape[-1] - n  # CLS and any other prefix tokens (distillation, registers)
    return {
        "norms": charts.f32(norms),
        "outlier_mask": analysis.high_norm_mask(norms, num_prefix_tokens=prefix),  # patches judged, not registers
        "outliers": analysis.high_norm_outliers(norms, num_prefix_tokens=prefix),
        "similarity": charts.f32(analysis.layer_similarity(hidden)),
        "cls_maps": charts.f32(analysis.cls_attention_map(attn, grid)),  # [L, g, g], raw weights, mean over heads
        "distance": charts.f32(analysis.attention_distance_all(attn, grid, patch_size)),
        "uniform_px": analysis.uniform_attention_distance(grid, patch_size),
        "entropy": charts.f32(analysis.attention_entropy(attn)),
    }


@ui.cached(max_entries=16, show_spinner="Rolling attention out through the layers ...")
def rollout(run, fusion: str, discard: float) -> dict:
    """CLS rollout map and the last layer's raw CLS map, both as shares of the patches, one colour range."""
    attn, grid = run.core["attentions"], run.config.grid_size
    rolled = analysis.cls_rollout_map(analysis.attention_rollout(attn, head_fusion=fusion, discard_ratio=discard), grid)
    raw = analysis.cls_attention_map(attn[-1], grid)  # the last layer, mean over heads
    rolled, raw = analysis.normalise_map(rolled, "sum"), analysis.normalise_map(raw, "sum")
    return {"rollout": charts.f32(rolled), "raw": charts.f32(raw), "scale": analysis.shared_scale(rolled, raw)}


@ui.cached(max_entries=32)
def pca(run, layer: int) -> np.ndarray:
    return charts.f32(analysis.token_pca_rgb(run.core["hidden_states"][layer], run.config.grid_size))


# ---------------------------------------------------------------------------- the page
run = ui.open_page("pages/layers.py")
cfg = run.config
T, D, H, L, g, P = (cfg.num_tokens, cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers,
                    cfg.grid_size, cfg.patch_size)

ui.stage_header(
    "5 · Layer stack: the same block, L times",
    f"The encoder is one block repeated {L} time{'s' if L != 1 else ''}. Every block reads the token vectors, "
    "normalises them, lets attention and then the MLP compute a change, and adds each change back to the "
    "tokens (the residual stream). Nothing is ever overwritten: each layer writes a correction on top of "
    "what the earlier layers wrote, and the pictures below show how the tokens and the attention change with depth.",
    ["ViTLayer", "ViTEncoder"],
)
ui.shapes([
    ("embeddings = hidden_states[0]", "[batch, tokens, hidden_size]", (1, T, D)),
    ("one ViTLayer: in and out", "[batch, tokens, hidden_size]", (1, T, D)),
    ("ViTEncoder: every hidden state", "[layers + 1, batch, tokens, hidden_size]", (L + 1, 1, T, D)),
    ("ViTEncoder: every attention map", "[layers, batch, heads, tokens, tokens]", (L, 1, H, T, T)),
])
left, right = st.columns([5, 7])
with left:
    st.image(charts.layer_block_svg(), width=320)
with right:
    ui.einops_expression(
        """
        states = [x]                          # embeddings
        for layer in encoder.layer:           # ViTEncoder
            x = x + attention(layernorm_before(x))  # talk
            x = x + mlp(layernorm_after(x))   # alone
            states.append(x)                  # [b, t, d]
        """,
        "Pre-norm: the layer norm sits on the branch, not on the stream, so the stream itself is only ever "
        "added to. No reshape happens here: every layer maps [b, t, d] to [b, t, d].",
    )
    st.markdown("The diagram is one ViTLayer. The dashed yellow lines are the **residual connections**: the input "
                "skips around each branch and the branch's result is added to it. Because of them, a layer with "
                "nothing useful to add can add almost nothing, which is what makes deep stacks trainable.")
ui.show_source(ViTLayer, ViTEncoder)

d = depth(run)
norms = stream(run)

# ---- residual stream and layer similarity
@st.fragment
def stream_view():
    st.subheader("The residual stream across depth")
    left, right = st.columns(2)
    with left:
        which = st.radio("Token", ["CLS", "average patch token"], horizontal=True, key="layers:stream_token")
        ui.plot(charts.stream_figure(norms, 0 if which == "CLS" else None, which), key="layers:stream")
        st.caption("Black: how long the token vector is after each layer. Blue and green: how big a change the "
                   "attention and the MLP branch add in that layer. In trained ViTs the stream grows with depth "
                   "while each update stays comparatively small.")
    with right:
        ui.plot(charts.layer_similarity_figure(d["similarity"]), key="layers:similarity")
        st.caption("The cosine similarity of each token before and after a layer, averaged over tokens. Close to 1: "
                   "the layer barely turned the tokens; dips show the layers that rewrite them most.")


stream_view()

# ---- token norms
st.subheader("Token norms, layer by layer")
@st.fragment
def norms_view():
    relative = st.toggle("Divide each layer by its median patch norm", value=False, key="layers:norms_relative",
                         help="The whole stream grows with depth; relative norms make a layer's outliers stand out.")
    ui.plot(charts.token_norms_figure(d["norms"], d["outlier_mask"], g, relative=relative,
                                      prefix_names=cfg.prefix_token_names()), key="layers:norms")


norms_view()
outliers = [int(t) for t in d["outliers"]]
if outliers:
    names = ", ".join(charts.token_labels(T, g, cfg.prefix_token_names())[t] for t in outliers[:12]) + (" ..." if len(outliers) > 12 else "")
    st.warning(f"{len(outliers)} high-norm outlier token{'s' if len(outliers) != 1 else ''} (ringed): {names}. "
               "Darcet et al. (2023, *Vision Transformers Need Registers*) found that large trained ViTs park "
               "global information in a few unimportant background patches, whose norms then explode.",
               icon=":material/warning:")
else:
    st.caption("No high-norm outlier tokens here (a token is flagged when its norm is far above the median of its "
               "layer by a robust z-score and at least twice the median). Large trained ViTs often have a few: "
               "Darcet et al. (2023, *Vision Transformers Need Registers*) show they are background patches "
               "recycled as scratch space for global information.")

if cfg.num_register_tokens:
    final = d["norms"][-1]
    register_norm = float(np.median(final[cfg.num_prefix_tokens - cfg.num_register_tokens:cfg.num_prefix_tokens]))
    patch_norm = float(np.median(final[cfg.num_prefix_tokens:]))
    st.info(f"This model has {cfg.num_register_tokens} **register tokens** (squares, right after CLS). They are "
            "learned extra tokens that belong to no patch: the model can write image-wide notes into them. "
            "Without them, a big trained ViT overwrites a few background patches for that job, and those are the "
            "high-norm rings above. After the last layer the registers' median norm is "
            f"{register_norm:.3g}, the patches' {patch_norm:.3g}.", icon=":material/inventory_2:")

# ---- CLS attention through the layers
@st.fragment
def cls_view():
    st.subheader("Where CLS looks, layer by layer")
    a, b = st.columns(2)
    with a:
        fixed = ui.fixed_attention_scale()
    relative = b.toggle("Scale each layer to its own maximum", value=False, key="layers:cls_relative",
                        help="Shows every layer's pattern, even where its weights are far smaller than in the "
                             "strongest layer; the layers can then no longer be compared by colour.")
    ui.plot(charts.cls_attention_facets(d["cls_maps"], fixed=fixed, relative=relative,
                                        cols=min(L, 6 if L > 8 else 4)), key="layers:cls_maps")
    st.caption("The CLS token collects the summary the classifier reads. Early layers usually spread its attention "
               "evenly or locally; in trained models later layers focus it on the object.")


cls_view()

# ---- Figure 7 (right) and entropy, drawn when opened
def heads_section() -> None:
    """Mean attention distance and entropy of every head of every layer."""
    left, right = st.columns(2)
    with left:
        ui.plot(charts.attention_distance_figure(d["distance"], uniform_px=d["uniform_px"]), key="layers:distance")
        st.caption("For each head: how far, in pixels, a patch looks on average (weighting each key patch's distance by "
                   "its attention). The ViT paper found early layers mix local heads (low dots) and global ones (high "
                   "dots), while later layers are almost all global. Random weights give nearly uniform attention: "
                   "every dot near the dashed line.")
    with right:
        ui.plot(charts.entropy_figure(d["entropy"], T), key="layers:entropy")
        st.caption("Entropy measures how spread out a head's attention is: dark heads focus on a few tokens, bright "
                   "heads spread over everything. It tells the same story as the distance plot without looking at geometry.")


ui.lazy_section("Local and global heads", "layers:open_heads", heads_section,
                what="how far and how widely every head of every layer looks")


# ---- attention rollout (interactive part reruns alone)
@st.fragment
def rollout_view():
    st.subheader("Attention rollout vs the last layer's raw attention")
    a, b = st.columns(2)
    fusion = a.radio("Fuse heads with", list(FUSIONS), format_func=FUSIONS.get, horizontal=True, key="layers:fusion")
    discard = b.slider("Discard the weakest links (fraction)", 0.0, 0.95, 0.0, 0.05, key="layers:discard",
                       help="Zero this share of the smallest attention weights in every layer before chaining "
                            "(the token's link to itself is always kept).")
    maps = rollout(run, fusion, float(discard))
    zmax = max(float(maps["scale"][1]), 1e-6)
    ui.plot(charts.overlay_panels(
        run.image, [maps["rollout"], maps["raw"]],
        [f"rollout through all {L} layers", f"raw CLS attention, layer {L - 1}<br>(the last; mean over heads)"],
        "Which patches reach the CLS token (one shared colour scale)", colorbar_title="share of CLS attention",
        zmin=0.0, zmax=zmax, patch_size=P), key="layers:rollout")
    st.caption("Raw attention only shows one layer. Rollout (Abnar and Zuidema, 2020) multiplies the layers' "
               "attention maps, each mixed half and half with the identity for the residual connection, to follow "
               "where the information in CLS came from in the input. Both maps sum to 1 over the patches.")


rollout_view()


# ---- token PCA (interactive part reruns alone)
@st.fragment
def pca_view():
    layer = st.select_slider("Tokens", list(range(L + 1)), key=ui.remember("layers:pca_layer", ui.clamp_index(L + 1, L)),
                             format_func=charts.state_name, persist_state="session",
                             help="hidden_states[k]: the embeddings (k = 0), or the stream after layer k - 1 "
                                  "(layer i is encoder.layer[i]).")
    if g * g < 3:
        st.info(f"A {g}x{g} grid has too few patches for three principal components; choose a smaller patch size.")
    rgb = pca(run, layer)
    ui.plot(charts.token_pca_figure(run.image, rgb, layer, P), key="layers:pca")
    st.caption("The patch tokens of the chosen layer are reduced to their three main directions of variation, shown "
               "as red, green and blue. Patches with similar colours have similar vectors. Early on colour follows "
               "the pixels; in deeper layers of a trained model it follows objects and parts.")


ui.lazy_section("Token PCA: what the model groups together", "layers:open_pca", pca_view,
                what="the patch tokens of any layer, coloured by their three main directions")

ui.close_page(run, "pages/layers.py")
