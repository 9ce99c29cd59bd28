"""3 · Self-attention: queries, keys and values; scores and softmax; where every head looks.

Top to bottom: what attention does, the live shapes, the einops lines and the real source; the
layer/head pickers; click a patch to see where every head looks from it; one head's Q, K, V (a
closed section, drawn only when opened); its scores before and after the softmax; what CLS looks at;
then two more closed sections: how focused each head is, and the output projection (ViTSelfOutput). Changing the
layer, the head or the query never reruns the model: the layer's taps come from ``run.layer``
(cached) and the pictures from the caches below.
"""


import numpy as np
import streamlit as st

from vit_explain import analysis, ui
from vit_explain.charts import attention as charts
from vit_explain.charts.common import attention_range, clicked_patch, scale_label
from vit_explain.model import ViTAttention, ViTSelfAttention, ViTSelfOutput, backbone

PAGE = "pages/attention.py"


# ---------------------------------------------------------------------------------- cached helpers
@ui.cached(max_entries=64)
def query_tiles(run, layer: int, query: int, fixed: bool):
    """Where every head of ``layer`` looks from ``query``: (tiles, maps [H, g, g], to_cls [H], zmax)."""
    maps, to_cls = charts.query_maps(run.layer(layer)["probs"], query, run.config.grid_size)
    _, zmax = attention_range(maps, fixed=fixed)
    return charts.overlay_tiles(run.image, maps, 0.0, zmax), maps, to_cls, zmax


@ui.cached(max_entries=32)
def cls_tiles(run, layer: int, fixed: bool):
    maps, to_self = charts.cls_maps(run.layer(layer)["probs"], run.config.grid_size)
    _, zmax = attention_range(maps, fixed=fixed)
    return charts.overlay_tiles(run.image, maps, 0.0, zmax), maps, to_self, zmax


@ui.cached(max_entries=32)
def head_stats(run, layer: int):
    """(entropy [H] in nats, mean attention distance [H] in pixels, distance of uniform attention)."""
    probs, grid, patch_size = run.layer(layer)["probs"], run.config.grid_size, run.config.patch_size
    entropy = analysis.attention_entropy([probs])[0]
    distance = analysis.mean_attention_distance(probs, grid, patch_size)
    return entropy, distance, analysis.uniform_attention_distance(grid, patch_size)


@ui.cached(max_entries=32)
def head_shares(run, layer: int):
    """Norm of each head's share of the attention output: [H, T] (and the largest reassembly error)."""
    dense = backbone(run.model).encoder.layer[layer].attention.output.dense
    weight = dense.weight.detach().cpu().numpy().astype(np.float32)
    bias = dense.bias.detach().cpu().numpy().astype(np.float64) if dense.bias is not None else 0.0
    heads = run.config.num_attention_heads
    parts = analysis.head_contributions(run.layer(layer)["context"], weight, heads)  # [H, T, D]
    return np.linalg.norm(parts, axis=-1), parts.sum(0) + bias


def flag(value) -> bool:
    return value if isinstance(value, bool) else False


def index_picker(label: str, count: int, key: str, noun: str, help: str | None = None) -> int:
    key = ui.remember(key, ui.clamp_index(count))
    if count == 1:
        st.markdown(f"**{label}:** {noun} 0 (the only one)")
        return 0
    return st.select_slider(label, list(range(count)), key=key, format_func=lambda i: f"{noun} {i}", help=help,
                            persist_state="session")


def patch_label(patch: int, grid: int) -> str:
    row, col = divmod(int(patch), grid)
    return f"query patch {patch} (row {row}, col {col})"


# ---------------------------------------------------------------------------------- the page
run = ui.open_page("pages/attention.py")
cfg = run.config
T, D, H, d, g, P = cfg.num_tokens, cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.grid_size, cfg.patch_size

ui.stage_header(
    "3 · Self-attention",
    "Self-attention is how the tokens talk to each other. Every token makes three vectors from its own numbers: "
    "a **query** (what am I looking for?), a **key** (what do I contain?) and a **value** (what do I pass on?). "
    "Each token compares its query with every key, turns the match scores into weights that add up to 1 "
    "(the softmax), and collects a weighted mix of the values. Several **heads** do this side by side, each "
    "on its own slice of the numbers, and a final linear layer mixes the heads back together.",
    ["ViTAttention", "ViTSelfAttention", "ViTSelfOutput"],
)
ui.shapes([
    ("input x (after layernorm_before)", "[batch, tokens, hidden]", (1, T, D)),
    ("q, k, v (split into heads)", "[batch, heads, tokens, head_dim]", (1, H, T, d)),
    ("scores = q kᵀ / √d, probs = softmax(scores)", "[batch, heads, tokens, tokens]", (1, H, T, T)),
    ("context = probs v, heads merged", "[batch, tokens, hidden]", (1, T, D)),
    ("attention_output = dense(context)", "[batch, tokens, hidden]", (1, T, D)),
])
ui.einops_expression(
    f"""
    q = rearrange(query(x), "b t (h d) -> b h t d", h={H})     # [1, {T}, {D}] -> [1, {H}, {T}, {d}]
    scores = einsum(q * {d}**-0.5, k, "b h i d, b h j d -> b h i j")   # [1, {H}, {T}, {T}]
    probs = softmax(scores, dim=-1)                               # each row sums to 1
    context = einsum(probs, v, "b h i j, b h j d -> b h i d")    # [1, {H}, {T}, {d}]
    context = rearrange(context, "b h t d -> b t (h d)")          # [1, {T}, {D}]: heads side by side again
    """,
    f"The {D} numbers of every token are read as {H} head{'s' if H > 1 else ''} of d = {D} / {H} = {d} numbers. "
    "These are the lines of ViTSelfAttention.forward below.",
)
ui.show_source(ViTSelfAttention, ViTSelfOutput, ViTAttention)

st.header("Pick a layer and a head")
c1, c2 = st.columns(2, vertical_alignment="bottom")
with c1:
    layer = index_picker("Layer", cfg.num_hidden_layers, "attn:layer", "layer",
                         help="Every encoder layer has its own attention with its own weights: layer i is "
                              "encoder.layer[i] in the code.")
with c2:
    head = index_picker("Head", H, "attn:head", "head", help="The head shown in the Q/K/V and score charts.")
fixed = ui.fixed_attention_scale()
taps = run.layer(layer)
probs = taps["probs"]  # [H, T, T]


@st.fragment
def query_explorer(run, layer: int, head: int, fixed: bool) -> None:
    """Click a patch: it becomes the query, and every head of the layer shows where it looks."""
    g, P, H, T = run.config.grid_size, run.config.patch_size, run.config.num_attention_heads, run.config.num_tokens
    state, n = st.session_state, g * g
    clicked = clicked_patch(state.get("attn:query_image"))
    if clicked is not None and clicked != state.get("attn:last_click") and 0 <= clicked < n:
        state["attn:query"] = clicked
    state["attn:last_click"] = clicked
    query = ui.patch_on_grid("attn:query", g)  # the middle at first; the same spot after a patch-size change
    state["attn:query_input"] = query

    left, right = st.columns([1, 2])
    with left:
        picker = charts.query_picker(run.image, P, query, "Click a patch to make it the query",
                                     source=charts.image_source(run.image))
        ui.plot(picker, key="attn:query_image", on_select="rerun", selection_mode="points")
        st.number_input("... or type the query patch", min_value=0, max_value=n - 1, step=1, key="attn:query_input",
                        on_change=lambda: state.update({"attn:query": int(state["attn:query_input"])}),
                        help=f"Patches are numbered row by row from 0 to {n - 1}; the query is token patch + 1.")
    tiles, maps, to_cls, zmax = query_tiles(run, layer, query, fixed)
    titles = [f"<b>head {h} ◂</b>" if h == head else f"head {h}" for h in range(H)]
    titles = [f"{t}<br>CLS {100 * c:.0f}%" for t, c in zip(titles, to_cls)]
    with right:
        fig = charts.overlay_facets(
            tiles, maps, titles, f"Layer {layer}: where each head looks from {patch_label(query, g)}",
            zmax=zmax, mark_patch=query, hover_label="weight",
            colorbar_title=scale_label("weight", 0.0, zmax, fixed))
        ui.plot(fig, key="attn:query_heads")
        st.caption(
            f"Each panel is one row of that head's attention matrix: the weights token {query + 1} "
            f"({patch_label(query, g)}, outlined) gives to the {n} patches, coloured "
            + ("on the fixed scale 0..1" if fixed else f"from 0 to {zmax:.3f}, the largest weight shown (one scale "
                                                         "for all heads)")
            + ". The rest of each row goes to CLS (percentage under each head). Uniform attention would give every "
            f"token 1/{T} = {1 / T:.4f}."
        )


st.header("Click a patch: where does each head look?")
query_explorer(run, layer, head, fixed)

def inside_head() -> None:
    st.markdown(
        f"The linear layers `query`, `key` and `value` each turn a token's {D} numbers into {D} new ones. "
        f"`rearrange(x, \"b t (h d) -> b h t d\", h={H})` then cuts those {D} numbers into "
        + (f"{H} consecutive blocks of {d}" if H > 1 else f"a single block of {d} (one head keeps them all)")
        + f": head {head} owns numbers {head * d} to {(head + 1) * d - 1}. "
        "Nothing is copied or computed: it is the same vector read as a grid."
    )
    heads_word = "heads" if H > 1 else "head"
    ui.plot(charts.head_split(taps["q"][:, 0, :].reshape(-1), H, head,
                              f"The CLS token's query vector ({D} numbers) read as {H} {heads_word} x {d} dims"),
            key="attn:split")
    ui.plot(charts.qkv_heatmaps(taps["q"][head], taps["k"][head], taps["v"][head],
                                f"Layer {layer}, head {head}: Q, K and V, each [tokens {T}, head_dim {d}]"),
            key="attn:qkv")


st.header(f"Inside head {head}: queries, keys and values")
st.markdown(
    f"Head {head} reads its own {d} of each token's {D} query, key and value numbers. Open the section to see "
    f"how one vector is cut into {H} head{'s' if H > 1 else ''}, and this head's Q, K and V as matrices of "
    f"{T} tokens x {d} numbers: the scores below are Q times K transposed."
)
ui.lazy_section("Q, K and V of the chosen head", "attn:open_qkv", inside_head,
                what="the head split and the three matrices")

st.header("Scores before and after the softmax")
st.markdown(
    f"Entry (i, j) of the score matrix is q_i · k_j / √{d}: how well query token i matches key token j "
    f"(dividing by √d = {d ** 0.5:.2f} keeps the numbers in a range where the softmax still spreads). "
    "The softmax along each row turns the scores into weights between 0 and 1 that add up to 1: that is the "
    "attention matrix. Row 0 and column 0 (outlined in orange) belong to the CLS token."
)
mean_heads = st.toggle("Average over all heads", key=ui.remember("attn:mean_heads", flag), persist_state="session",
                       help="Show the mean of the layer's heads instead of the chosen head.")
which = f"mean of {H} heads" if mean_heads else f"head {head}"
scores = taps["scores"].mean(0) if mean_heads else taps["scores"][head]
weights = probs.mean(0) if mean_heads else probs[head]
left, right = st.columns(2)
with left:
    ui.plot(charts.token_matrix(scores, f"Scores q·kᵀ/√d, layer {layer}, {which}", kind="scores"),
            key="attn:scores")
_, wmax = attention_range(weights, fixed=fixed)
with right:
    ui.plot(charts.token_matrix(weights, f"Attention = softmax(scores), layer {layer}, {which}", kind="probs",
                                zmax=wmax, fixed=fixed), key="attn:probs")
row_error = float(np.abs(weights.sum(-1) - 1.0).max())
st.caption(f"Check: every row of the attention matrix sums to 1 (largest deviation here: {row_error:.1e}). "
           f"Scores here run from {scores.min():.2f} to {scores.max():.2f}; the heatmap centres them on 0.")

st.header("What the CLS token looks at")
st.markdown(
    "CLS is the token the classifier reads at the end, so its row of the attention matrix shows which patches "
    "feed the prediction in this layer. One panel per head, on one shared colour scale."
)
tiles, cmaps, to_self, czmax = cls_tiles(run, layer, fixed)
ui.plot(charts.overlay_facets(
    tiles, cmaps, [f"head {h}<br>to itself {100 * s:.0f}%" for h, s in enumerate(to_self)],
    f"Layer {layer}: attention of the CLS token over the {g}x{g} patches, per head", zmax=czmax,
    cols=min(H, 4 if H <= 16 else 6), cell=int(500 / min(H, 4 if H <= 16 else 6) + 46), hover_label="weight",
    colorbar_title=scale_label("weight", 0.0, czmax, fixed)), key="attn:cls")

prefix_names = cfg.prefix_token_names()
final_norms = np.linalg.norm(run.core["hidden_states"][-1], axis=-1)  # [T] after the last layer
artefacts = analysis.high_norm_mask(final_norms, num_prefix_tokens=len(prefix_names))[len(prefix_names):]
ui.plot(charts.cls_destination_bars(charts.cls_destinations(probs, prefix_names, g, artefacts),
                                    f"Layer {layer}: where the CLS token's attention goes, per head"), key="attn:cls_dest")
if cfg.num_register_tokens:
    st.caption(f"This model has {cfg.num_register_tokens} register tokens: spare tokens with no patch of their own. "
               "Compare with the same family without registers (facebook/dinov2-small against "
               "facebook/dinov2-with-registers-small): there, late layers send much of CLS's attention to a few "
               "high-norm background patches, which the model uses as scratch space; here that share moves to the "
               "registers and the patch map above stays on the object (Darcet et al. 2023).")
else:
    st.caption("Red: high-norm patches after the last layer (see the Layer stack page). In big trained ViTs without "
               "register tokens, CLS often sends much of its attention to such background patches: the model has "
               "turned them into scratch space. Models with registers (facebook/dinov2-with-registers-small) get "
               "spare tokens for that job, and their share moves there instead.")


def head_focus() -> None:
    """Entropy and mean distance of every head of the chosen layer."""
    entropy, distance, uniform = head_stats(run, layer)
    left, right = st.columns(2)
    with left:
        ui.plot(charts.entropy_bars(entropy, T, f"Attention entropy per head, layer {layer}", chosen=head),
                key="attn:entropy")
        st.caption(f"Entropy of each attention row, averaged over the {T} queries. log {T} = {np.log(T):.2f} means "
                   "the weight is spread evenly over all tokens; 0 means each query looks at one token only.")
    with right:
        ui.plot(charts.distance_bars(distance, uniform, f"Mean attention distance per head, layer {layer}", chosen=head),
                key="attn:distance")
        st.caption("How far, in pixels, a patch looks on average (weights times distances between patch centres; "
                   "the ViT paper's Figure 7). Small: local, like a convolution; near the dashed line: global. "
                   "The Layer stack page shows every layer at once.")
    if not run.trained:
        st.info("These are random weights: every score is close to 0, so every head spreads its attention almost "
                "evenly. Choose trained weights in the sidebar to see heads that focus.", icon=":material/casino:")


def output_projection() -> None:
    """ViTSelfOutput: the dense layer that mixes the heads, split into one term per head; then the residual."""
    shares, rebuilt = head_shares(run, layer)
    st.markdown(
        f"The heads' outputs sit side by side in `context` [{T}, {D}]. The `dense` layer of ViTSelfOutput "
        f"(a {D} x {D} matrix plus a bias) mixes them into `attention_output` [{T}, {D}]: every output number "
        f"draws on all {H} heads. Splitting its weight matrix into the heads' column blocks writes the output "
        f"as a sum of one term per head (plus the bias); the heatmap shows how big each head's term is per token."
    )
    left, right = st.columns(2)
    with left:
        norms = {"x after layernorm_before (input)": np.linalg.norm(taps["layernorm_before"], axis=-1),
                 "context (heads merged)": np.linalg.norm(taps["context"], axis=-1),
                 "attention_output (after dense)": np.linalg.norm(taps["attention_output"], axis=-1)}
        ui.plot(charts.token_norm_lines(norms, f"Token sizes before and after the projection, layer {layer}"),
                key="attn:norms")
    with right:
        ui.plot(charts.contribution_heatmap(shares, f"Size of each head's share of attention_output, layer {layer}"),
                key="attn:shares")
    stream = np.linalg.norm(run.core["hidden_states"][layer], axis=-1).mean()
    update = np.linalg.norm(taps["attention_output"], axis=-1).mean()
    st.markdown(
        f"**Then the residual.** ViTAttention hands `attention_output` back to ViTLayer, which *adds* it to the "
        f"layer's input (the un-normalised x, not the layernorm output): `x = x + attention_output`. Here the "
        f"update is on average {update:.2f} long against {stream:.2f} for the tokens it is added to "
        f"({update / max(stream, 1e-12):.0%}), so attention nudges the residual stream rather than replacing it. "
        "The MLP and Layer stack pages follow the stream from there."
    )
    st.caption(f"Check: the per-head terms plus the bias rebuild attention_output to within "
               f"{float(np.abs(rebuilt - taps['attention_output']).max()):.1e}.")


ui.lazy_section("How focused is each head?", "attn:open_focus", head_focus,
                what="entropy and mean attention distance of every head of this layer")
ui.lazy_section("The output projection (ViTSelfOutput)", "attn:open_projection", output_projection,
                what="how the dense layer mixes the heads back together, and the residual add")

ui.close_page(run, "pages/attention.py")
