"""Stage 2, ViTEmbeddings: the CLS token goes in front, then every token gets its position added."""

from functools import partial

import numpy as np
import streamlit as st

from vit_explain import model as vit, ui
from vit_explain.charts import embeddings as charts

SELECTED = "emb:selected"


@ui.cached(on="model", max_entries=4)
def position_similarity(run) -> np.ndarray:
    """Cosine similarity of every pair of patch position embeddings, [N, N] (depends only on the model)."""
    g = run.config.grid_size
    return charts.cosine_matrix(run.core["position_embeddings"][-g * g:])  # the patches' rows, after the prefix


run = ui.open_page("pages/embeddings.py")
cfg = run.config
S, P, g, N, T, D = cfg.image_size, cfg.patch_size, cfg.grid_size, cfg.num_patches, cfg.num_tokens, cfg.hidden_size
ui.stage_header(
    "2 · CLS token and position embeddings",
    f"Two learned extras join the {N} patch vectors. A **CLS token** (short for *classification*) is put in front: "
    f"it starts as the same learned vector for every picture and, layer by layer, gathers a summary of the "
    f"picture that the classifier reads at the end. Then every token gets a **position embedding** added, "
    f"one learned vector per place in the sequence: without it the layers would see the patches as a bag, "
    f"with no idea which patch sat where.",
    ["ViTEmbeddings"],
)
ui.shapes([
    ("patch embeddings", "[batch, num_patches, embed_dim]", (1, N, D)),
    ("CLS token (learned)", "[1, 1, embed_dim]", (1, 1, D)),
    ("cat(CLS, patches)", "[batch, num_patches+1, embed_dim]", (1, T, D)),
    ("position embeddings (learned)", "[1, num_patches+1, embed_dim]", (1, T, D)),
    ("embeddings = tokens + positions", "[batch, num_patches+1, embed_dim]", (1, T, D)),
])
ui.einops_expression(
    f"""
    cls = repeat(cls_token, "1 1 d -> b 1 d", b=batch)      # [1, 1, {D}]
    tokens = torch.cat([cls, patch_embeddings], dim=1)      # [1, {N} + 1, {D}] = [1, {T}, {D}]
    embeddings = tokens + position_embeddings               # [1, {T}, {D}] + [1, {T}, {D}]
    """,
    "The addition is element by element: token i gets position vector i. The CLS token gets one too (row 0).",
)

if cfg.num_prefix_tokens > 1:
    extra = []
    if cfg.use_distillation_token:
        extra.append("a **distillation token** (DIST, row 1) that DeiT trained to copy a teacher network's answer; "
                     "its own head reads it at the end and the two heads' logits are averaged" if cfg.use_distillation_head
                     else "a **distillation token** (DIST, row 1) that DeiT trained to copy a teacher network's answer")
    if cfg.num_register_tokens:
        first = cfg.num_prefix_tokens - cfg.num_register_tokens
        extra.append(f"{cfg.num_register_tokens} **register tokens** (rows {first} to {cfg.num_prefix_tokens - 1}): "
                     "spare learned vectors the model may use as scratch space; they get no position (a zero row)")
    st.info(f"This model puts {cfg.num_prefix_tokens} tokens in front of the patches: CLS, then " + "; ".join(extra)
            + f". The patches are rows {cfg.num_prefix_tokens} to {T - 1}.", icon=":material/playlist_add:")
if cfg.position_grid_size != g:
    st.caption(f"The position embeddings were trained for a {cfg.position_grid_size}x{cfg.position_grid_size} grid; "
               f"before they are added they are resized (bicubic) to this picture's {g}x{g} grid, as DINOv2 does.")

# ---- the sequence before and after
tokens, position, embedded = run.core["tokens_with_cls"], run.core["position_embeddings"], run.core["embeddings"]
st.subheader("The sequence: CLS in front, positions added")
width = charts.dimension_window(T, D)
start = 0
if D > width:
    start = st.slider(f"Hidden dimensions shown ({width} at a time, of {D})", 0, D - width, 0, step=1,
                      key="emb:dim_start", help="The heatmaps show every token but only a window of the dimensions, "
                                                "to keep the page light. Slide to see others.")
shared = st.toggle("One colour scale for all three panels", key="emb:shared_scale",
                   help="On: colours compare sizes across panels. Off: each panel is scaled on its own, so a small "
                        "part (like freshly initialised position embeddings) is still visible.")
ui.plot(charts.token_heatmaps(tokens, position, embedded, start=start, width=width, shared_scale=shared),
        key="emb:tokens")
st.caption("Each row is one token, each column one of its numbers. Row 0 (outlined) is the CLS token: the same "
           "learned vector whatever the picture. Rows 1 and on are the patch embeddings from the previous stage, "
           "each with its own position vector added.")
ui.plot(charts.token_norms_figure(tokens, position, embedded), key="emb:norms")
st.caption("The length of each vector. If the position part were tiny next to the patch part, the layers could "
           "barely tell where a patch was; freshly initialised weights start that way, training makes it count.")

# ---- what the position embeddings encode
st.subheader("Do the position embeddings know the 2-D grid?")
st.markdown(
    "The model is never told that the patches form a grid: position embeddings are just one learned vector per "
    "place in the sequence. To see what they learned, compare every patch's position vector with every other's "
    "(cosine similarity: 1 = same direction, 0 = unrelated, −1 = opposite) and draw one small map per patch, "
    "placed where the patch is (Figure 7, centre, of Dosovitskiy et al., 2021). "
    + ("**These weights are random**, so the position embeddings are random too: each map is a single bright "
       "cell (the patch itself) on structureless noise near 0. Nothing here knows about rows or columns yet."
       if not run.trained else
       "**With trained weights** the maps show the 2-D grid the model discovered by itself: each patch is most "
       "similar to its neighbours, and often to patches in the same row and the same column.")
)
similarity = position_similarity(run)
maps = similarity.reshape(g, g, g, g)


stretch = st.toggle("Stretch the colours to these numbers' range", key="emb:stretch",
                    help="Off: the full cosine range −1 to 1 (diverging colours). On: from the smallest to the largest "
                         "similarity between two different patches (sequential colours), to bring out weak structure.")
zrange = charts.stretched_range(similarity) if stretch else None


@st.fragment
def similarity_explorer() -> None:
    selected = ui.patch_on_grid(SELECTED, g)
    r, c = divmod(selected, g)
    left, right = st.columns(2, gap="medium")
    with left:
        ui.plot(charts.similarity_grid_figure(maps, selected=selected, height=540, show_scale=False, zrange=zrange), key="emb:grid",
                on_select=partial(ui.store_clicked_patch, "emb:grid", SELECTED), selection_mode="points")
    with right:
        ui.plot(charts.similarity_overlay_figure(run.image, maps[r, c], P, selected, height=540, zrange=zrange), key="emb:overlay",
                on_select=partial(ui.store_clicked_patch, "emb:overlay", SELECTED), selection_mode="points")
    others = np.delete(similarity[selected], selected)
    neighbours = [similarity[selected, rr * g + cc] for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                  if 0 <= rr < g and 0 <= cc < g]
    cols = st.columns(3)
    cols[0].metric("Selected patch", f"{selected} (row {r}, col {c})")
    cols[1].metric("Mean similarity to its 4 neighbours", f"{np.mean(neighbours):.3f}" if neighbours else "–")
    cols[2].metric("Mean similarity to all other patches", f"{others.mean():.3f}" if others.size else "–")


similarity_explorer()
ui.plot(charts.distance_figure(*charts.similarity_by_distance(similarity, g)), key="emb:distance")

ui.show_source(vit.ViTEmbeddings)
ui.close_page(run, "pages/embeddings.py")
