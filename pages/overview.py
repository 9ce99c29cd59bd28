"""Overview: the whole model at a glance (box inside box), its prediction, and where to start."""

import streamlit as st

from vit_explain import model as vit, ui
from vit_explain.charts import overview as charts
from vit_explain.flops import architecture, class_summary
from vit_explain.pipeline import enlarge
from vit_explain.weights import top_k

run = ui.open_page("pages/overview.py")
cfg = run.config
ui.stage_header(
    "A Vision Transformer, tensor by tensor",
    "A Vision Transformer (ViT) reads a picture the way a language model reads a sentence. It cuts the picture "
    "into small square patches, turns each patch into a list of numbers (a *token*), and then lets the tokens "
    "swap information through a stack of identical layers. At the end, one extra token, the *CLS* token, holds "
    "a summary of the whole picture, and a final layer turns it into a guess at what the picture shows.",
    ["ViTForImageClassification", "ViTModel", "ViTEmbeddings", "ViTEncoder", "ViTLayer", "ViTPooler"],
)

# ---- the model in numbers
# a classification model whose head is a real linear layer (a head with 0 labels is an identity)
classifier = getattr(run.model, "classifier", None)
num_labels = getattr(classifier, "out_features", 0)
predicts = run.is_classifier and num_labels > 0
blocks = architecture(cfg, has_pooler=run.has_pooler, classifier=classifier is not None, num_labels=num_labels)
root = blocks[0]
cols = st.columns(3) + st.columns(3)  # two rows: six in one row cut their values short at 1024 px
cols[0].metric("Weights", "trained" if run.trained else "random", help=getattr(run.model, "source", run.source))
cols[1].metric("Parameters", charts.human(root.params), help=f"{root.params:,} numbers learned in training")
cols[2].metric("FLOPs per image", charts.human(root.flops),
               help="Floating-point operations of the matrix products for one image (a multiply-add counts 2).")
cols[3].metric("Tokens", f"{cfg.num_tokens}", help=f"{cfg.grid_size} x {cfg.grid_size} patches + "
               + ("1 CLS token" if cfg.num_prefix_tokens == 1 else f"{cfg.num_prefix_tokens} prefix tokens ("
                  + ", ".join(cfg.prefix_token_names()) + ")"))
cols[4].metric("Layers x heads", f"{cfg.num_hidden_layers} x {cfg.num_attention_heads}",
               help=f"hidden size D = {cfg.hidden_size}, {cfg.head_dim} numbers per head, MLP size {cfg.intermediate_size}")
cols[5].metric("Output", "classes" if predicts else "features",
               help="A classifier ends in one score per class; a bare ViTModel ends in token vectors.")
head = f"yes, {num_labels} classes" if predicts else "no"
st.caption(
    f"Model source: **{getattr(run.model, 'source', run.source)}** · class `{type(run.model).__name__}` · "
    f"pooler: **{'yes' if run.has_pooler else 'no'}** · classifier head: "
    f"**{head}** · image `{run.image_name}`"
)

ui.model_knowledge(run)

# ---- the prediction, and how to use the app
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("What the model sees in your picture")
    picture, guess = st.columns([1, 2], vertical_alignment="center")
    picture.image(enlarge(run.image), caption=f"{cfg.image_size} x {cfg.image_size}, as the model sees it"
                  + (" (each square is one pixel)" if cfg.image_size < 128 else ""))
    if predicts:
        top = top_k(run.core["logits"], run.id2label, k=5)
        with guess:
            ui.plot(charts.prediction_figure(top, title=f"Top-{len(top)} prediction for {run.image_name}"),
                    key="overview:prediction")
        if not run.trained:
            st.warning("These weights are random, so this 'prediction' is noise: the model has learned nothing yet. "
                       "Choose trained weights in the sidebar to see a real guess.", icon=":material/casino:")
    else:
        st.info("This checkpoint has **no classifier head**: it is a bare `ViTModel` that turns the picture into "
                "token vectors (features) for other models to use, so there are no class names to show. "
                "The last page shows its pooled CLS vector instead.", icon=":material/info:")
with right:
    st.subheader("How to use this app")
    st.markdown(
        "1. Pick a sample picture or **upload your own** in the sidebar.\n"
        "2. Choose the **weights**: a small model trained by this project (CIFAR-10 photos or drawn shapes), "
        "a pretrained checkpoint, or random numbers.\n"
        "3. Move the **architecture sliders** (patch size, heads, layers ...) and watch every shape and "
        "chart below follow.\n"
        "4. Walk the stages in order; each page shows the real code, the tensor shapes and the numbers "
        "of *your* picture. Many pictures can be clicked to pick a patch."
    )
    st.markdown("**Where to start**")
    for path, title, icon in ui.PAGES[1:]:
        st.page_link(path, label=title, icon=icon)

# ---- the nested class structure, drawn live
st.subheader("The model, box inside box")
st.markdown(
    "Each box is one class of the code, drawn inside the class that uses it. Its size is its share of the "
    "work (FLOPs) or of the learned numbers (parameters) for the current settings; the text gives its output "
    "shape. Notice how nearly all the work happens in the encoder layers, split between attention and the "
    "MLP, and how the attention products grow with the square of the token count (try a smaller patch size)."
)
metric = st.segmented_control("Box size", list(charts.METRICS), format_func=lambda m: charts.METRICS[m].capitalize(),
                              default="flops", key="overview:metric") or "flops"
ui.plot(charts.architecture_treemap(blocks, metric=metric), key="overview:treemap")
with st.expander("The same numbers as a table, one row per class", icon=":material/table:"):
    st.dataframe(charts.summary_rows(class_summary(blocks)), hide_index=True)
    st.caption("FLOPs count the matrix products for one image, a multiply-add being 2 FLOPs; the element-wise work "
               "(biases, layer norms, softmax, GELU, residual adds) is left out and is well under 1 % at ViT-B/16. "
               "Nested classes overlap, so the shares of different rows do not add up to 100 %.")

# ---- shapes from start to end
st.subheader("From pixels to prediction: the shapes")
T, N, D = cfg.num_tokens, cfg.num_patches, cfg.hidden_size
rows = [
    ("pixel_values (input)", "[batch, channels, height, width]", (1, cfg.num_channels, cfg.image_size, cfg.image_size)),
    ("patch embeddings", "[batch, num_patches, embed_dim]", (1, N, D)),
    ("tokens (CLS + patches + positions)", "[batch, tokens, embed_dim]", (1, T, D)),
    (f"after each of the {cfg.num_hidden_layers} ViTLayers", "[batch, tokens, embed_dim]", (1, T, D)),
]
if run.has_pooler:
    rows.append(("pooler output", "[batch, embed_dim]", (1, D)))
if predicts:
    rows.append(("logits", "[batch, num_labels]", (1, num_labels)))
ui.shapes(rows)
ui.einops_expression(
    """
    patches = rearrange(pixels, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=P, p2=P)
    tokens = torch.cat([repeat(cls_token, "1 1 d -> b 1 d", b=B), patches @ W.T + bias], dim=1) + position
    for layer in layers:                      # x: [B, T, D] all the way through
        x = x + attention(layernorm_before(x))
        x = x + mlp(layernorm_after(x))
    logits = classifier(layernorm(x)[:, 0])   # the CLS token's final vector -> one score per class
    """,
    "The whole forward pass in einops-style pseudocode: every stage page opens one of these lines.",
)
ui.show_source(vit.ViTForImageClassification, vit.ViTModel, vit.ViTEncoder)
ui.close_page(run, "pages/overview.py")
