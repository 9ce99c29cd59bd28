"""Placeholder while the page is being written."""

import streamlit as st

from vit_explain import ui

run = ui.sidebar()
st.title("embeddings")
ui.next_stage("pages/embeddings.py")
