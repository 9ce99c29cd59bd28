"""Tensors in, Plotly figures out: pure functions, no Streamlit.

``common`` holds the shared building blocks (image with patch grid, heatmaps, facets, the
transparent click layer); one module per stage builds that stage's figures from them. Every
figure has a title, axis labels and a colour bar where colour carries a value, and ships its
numbers as float32 numpy (Plotly encodes them as base64 typed arrays, never as lists).
"""
