"""Stage 1, PatchEmbeddings: the picture cut into patches, each patch turned into one vector.

Top to bottom: the picture cut into patches (click one), that patch from pixels to its embedding, then
"What the filters look for" (a closed section, drawn when opened) and the real source.
"""

from functools import partial

import numpy as np
import streamlit as st

from vit_explain import analysis, model as vit, ui
from vit_explain.model import backbone
from vit_explain.charts import common, patching as charts

SELECTED = "patch:selected"


@ui.cached(on="model", max_entries=4, show_spinner="Finding the principal components of the patch filters ...")
def filter_pca(run, k: int = 28):
    """PCA of the projection's D filters (depends only on the model, not on the picture)."""
    weight, _ = projection(run.model)
    components, ratios = analysis.patch_filter_pca(weight, k=k)
    return components.astype(np.float32), ratios.astype(np.float32)


def projection(model):
    """The Conv2d of PatchEmbeddings as float32 numpy (a read-only view; the shared model is untouched)."""
    conv = backbone(model).embeddings.patch_embeddings.projection
    bias = conv.bias.detach().cpu().numpy() if conv.bias is not None else None
    return conv.weight.detach().cpu().numpy(), bias


run = ui.open_page("pages/patching.py")
cfg = run.config
C, S, P, g, N, D = cfg.num_channels, cfg.image_size, cfg.patch_size, cfg.grid_size, cfg.num_patches, cfg.hidden_size
ui.stage_header(
    "1 · Patching: from a picture to a row of tokens",
    f"A transformer works on a *sequence* of vectors, so first the picture is cut into a grid of square "
    f"patches, {P} x {P} pixels each, read row by row like the words of a sentence. Each patch's "
    f"{C} x {P} x {P} = {C * P * P} pixel values are then multiplied by one shared weight matrix, which turns "
    f"them into a vector of {D} numbers: the patch's *embedding*. The same matrix is used for every patch.",
    ["PatchEmbeddings"],
)
ui.shapes([
    ("pixel_values", "[batch, channels, height, width]", (1, C, S, S)),
    ("patches (flattened)", "[batch, num_patches, channels*patch*patch]", (1, N, C * P * P)),
    ("patch embeddings", "[batch, num_patches, embed_dim]", (1, N, D)),
])
ui.einops_expression(
    f"""
    patches = rearrange(pixels, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1={P}, p2={P})  # [1, {N}, {C * P * P}]
    embeddings = patches @ W.reshape({D}, {C * P * P}).T + b                                # [1, {N}, {D}]
    # what the model actually runs (the same numbers): Conv2d(kernel_size={P}, stride={P})
    """,
    f"A {g} x {g} grid: h = w = {g} patches per side, p1 = p2 = {P} pixels per patch side.",
)


@st.fragment
def patch_explorer() -> None:
    selected = ui.patch_on_grid(SELECTED, g)
    row, col = divmod(selected, g)

    st.subheader("Your picture, cut into patches")
    left, right = st.columns(2, gap="medium")
    with left:
        fig = common.image_with_grid(run.image, P, f"The {S} x {S} picture with its {g} x {g} patch grid", height=440)
        common.click_layer(fig, S, P, selected=selected)
        ui.plot(fig, key="patch:image", on_select=partial(ui.store_clicked_patch, "patch:image", SELECTED), selection_mode="points")
    with right:
        ui.plot(charts.patch_tiles_figure(run.image, P, selected=selected, height=440), key="patch:tiles",
                on_select=partial(ui.store_clicked_patch, "patch:tiles", SELECTED), selection_mode="points")
    st.caption(f"**Click a patch** on either picture to open it below. Selected: patch **{selected}** "
               f"(row {row}, column {col}); patches are numbered row by row, 0 to {N - 1}.")

    st.subheader(f"Patch {selected}: from pixels to a vector")
    left, right = st.columns([1, 2], gap="medium")
    patch = charts.patch_tiles(run.image, P)[selected]
    vector = run.core["patches"][selected]
    with left:
        ui.plot(charts.patch_zoom_figure(patch, f"Patch {selected} enlarged ({P} x {P} pixels)"), key="patch:zoom")
    with right:
        ui.plot(charts.pixel_vector_figure(
            vector, C, P, f"Its {C * P * P} pixel values in one row (red block, then green, then blue)"),
            key="patch:pixels")

    weight, bias = projection(run.model)
    linear = charts.f32(analysis.conv_as_linear(weight, bias, vector))
    conv = run.core["patch_embeddings"][selected]
    gap = float(np.abs(linear - conv).max())
    st.markdown(
        f"**A convolution with stride = patch size is one matrix product per patch.** The model runs a `Conv2d` "
        f"with a {P} x {P} kernel that jumps {P} pixels at a time, so each placement covers exactly one patch and "
        f"never overlaps the next. At each placement it multiplies the patch's {C * P * P} numbers with each of its "
        f"{D} filters and adds a bias: that is the matrix product below, with the kernel `[{D}, {C}, {P}, {P}]` "
        f"reshaped to a `[{D}, {C * P * P}]` matrix W. Here it is, computed on this page for patch {selected}:"
    )
    st.latex(rf"\underbrace{{e}}_{{{D}}} = \underbrace{{W}}_{{{D}\times{C * P * P}}}\;"
             rf"\underbrace{{x}}_{{{C * P * P}}} + \underbrace{{b}}_{{{D}}}")
    cols = st.columns(3)
    cols[0].metric("Pixel vector x", f"{C * P * P} numbers")
    cols[1].metric("Embedding e", f"{D} numbers")
    cols[2].metric("Largest |conv − (W·x + b)|", f"{gap:.1e}",
                   help="Difference between the model's Conv2d output and the matrix product, over all dimensions: "
                        "float32 rounding, i.e. the same numbers.")
    ui.plot(charts.embedding_vector_figure(
        conv, linear, f"Patch {selected}'s embedding: {D} numbers (bars: the model's Conv2d; dots: W · x + b)"),
        key="patch:embedding")


patch_explorer()

def filters_section() -> None:
    """The principal components of the patch filters (the rows of W), as in the ViT paper's Figure 7."""
    st.markdown(
        f"Each of the {D} rows of W is a little {P} x {P} colour picture (a *filter*): the embedding's number is "
        f"large when the patch looks like that picture. The {D} filters are too many to look at, so we find the few "
        "patterns they are mostly made of (principal components), as in Figure 7 (left) of the original ViT paper "
        "(Dosovitskiy et al., 2021). "
        + ("These weights are **random**: the components look like noise, and each explains about the same small "
           "share, because nothing has been learned." if not run.trained else
           "A **trained** model's first components are smooth: blobs, colour contrasts and stripes of rising "
           "frequency, much like the basis pictures that image compression uses. A few of them explain most of the variety.")
    )
    components, ratios = filter_pca(run, k=28)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        pca_figure = charts.filter_pca_figure(components, ratios)
        ui.plot(pca_figure, key="patch:pca")
    with right:
        ui.plot(charts.variance_figure(ratios, height=pca_figure.layout.height), key="patch:variance")
    st.caption(f"The first {len(ratios)} components together explain {float(ratios.sum()):.0%} of how the filters differ. "
               "Each tile is scaled to the full brightness range on its own; a component's sign is arbitrary.")


ui.lazy_section("What the filters look for", "patch:open_filters", filters_section,
                what="the few patterns the model's patch filters are mostly made of")

ui.show_source(vit.PatchEmbeddings)
ui.close_page(run, "pages/patching.py")
