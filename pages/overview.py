"""Overview: the whole model at a glance, the prediction, and where to start."""

import streamlit as st

from vit_explain import ui

run = ui.sidebar()
ui.stage_header(
    "A Vision Transformer, tensor by tensor",
    "A Vision Transformer (ViT) reads a picture the way a language model reads a sentence: it cuts the "
    "picture into small square patches, turns each patch into a vector (a *token*), and lets the tokens "
    "exchange information through layers of self-attention and small neural networks. Every page of this app "
    "opens one of those steps on your own picture.",
)
if run is None:
    st.stop()
st.write(f"Model: `{type(run.model).__name__}` with {sum(p.numel() for p in run.model.parameters()):,} parameters, "
         f"{run.config.num_tokens} tokens.")
ui.next_stage("pages/overview.py")
