"""Figures of the overview page: the nested class structure as a treemap, and the prediction."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..flops import Block
from .common import bar, f32, style

#: One colour per class, so the repeated structure of the layers shows at a glance.
CLASS_COLOURS = {
    "ViTForImageClassification": "#eef1f6",
    "ViTModel": "#dde3ee",
    "ViTEmbeddings": "#b9d7ea",
    "PatchEmbeddings": "#4a90c2",
    "Parameter": "#8fbcd9",
    "ViTEncoder": "#e4e0f1",
    "ViTLayer": "#cfc7e8",
    "ViTAttention": "#f6c89f",
    "ViTSelfAttention": "#f2a65e",
    "Linear x3": "#e0863a",
    "matmul": "#c9622b",
    "ViTSelfOutput": "#eab676",
    "ViTIntermediate": "#7cc6a4",
    "ViTOutput": "#4fa883",
    "LayerNorm": "#c8c8c8",
    "ViTPooler": "#e88fa8",
    "Linear": "#d35f85",
}

METRICS = {"flops": "FLOPs", "params": "parameters"}


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (with an optional unit)."""
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip() if unit else f"{n:.0f}"


def shape_text(block: Block) -> str:
    return "[" + ", ".join(str(s) for s in block.shape) + "]"


def architecture_treemap(blocks: list[Block], *, metric: str = "flops", title: str | None = None,
                         maxdepth: int | None = None, height: int = 620) -> go.Figure:
    """The model's nested classes as nested boxes whose areas are FLOPs or parameters.

    ``blocks`` come from :func:`vit_explain.flops.architecture` (parents first). Areas are the
    leaves' values ("remainder" mode: a box is exactly the sum of what it contains, so a box with
    no FLOPs, such as a LayerNorm in FLOPs mode, takes no room). Click a box to zoom in.
    ``maxdepth`` (levels drawn at once) defaults to: down to the insides of ViTSelfAttention for
    up to 4 layers, down to ViTAttention / ViTIntermediate / ViTOutput for more (zoom for the rest).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    root = blocks[0]
    total = {"flops": root.flops, "params": root.params}
    parents = {b.parent for b in blocks}
    if maxdepth is None:
        layers = sum(b.cls == "ViTLayer" for b in blocks)
        deepest = "matmul" if layers <= 4 else "ViTAttention"
        maxdepth = max((b.id.count("/") + 1 for b in blocks if b.cls == deepest), default=-1)
    leaf_values = np.array([0.0 if b.id in parents else getattr(b, metric) for b in blocks], dtype=np.float32)
    texts, hovers = [], []
    for b in blocks:
        flop_share = b.flops / total["flops"] if total["flops"] else 0.0
        param_share = b.params / total["params"] if total["params"] else 0.0
        texts.append(f"{shape_text(b)}<br>{(flop_share if metric == 'flops' else param_share):.1%} of {METRICS[metric]}")
        hovers.append(
            f"<b>{b.label}</b> ({b.cls})<br>output {b.shape_names} = {shape_text(b)}"
            f"<br>parameters: {b.params:,} ({param_share:.2%})<br>FLOPs: {human(b.flops)} ({flop_share:.2%})"
            + (f"<br>{b.note}" if b.note else "")
        )
    trace = go.Treemap(
        ids=[b.id for b in blocks], labels=[b.label for b in blocks], parents=[b.parent for b in blocks],
        values=leaf_values, branchvalues="remainder", sort=False, maxdepth=maxdepth,
        text=texts, hovertext=hovers, texttemplate="<b>%{label}</b><br>%{text}",
        hovertemplate="%{hovertext}<extra></extra>",
        marker=dict(colors=[CLASS_COLOURS.get(b.cls, "#dddddd") for b in blocks], line=dict(width=1, color="white")),
        tiling=dict(pad=2, packing="slice-dice"), pathbar=dict(visible=True), root=dict(color="#f7f7f7"),
    )
    fig = go.Figure(trace)
    title = title or (f"{root.label}: boxes sized by {METRICS[metric]} "
                      f"(total {human(total[metric])}{'FLOPs' if metric == 'flops' else ' parameters'}); "
                      "click a box to zoom in")
    style(fig, title, height=height)
    # Plotly shrinks a label to fit its box; below 12 px it hides it instead (hover and zoom still show it)
    fig.update_layout(margin=dict(l=4, r=4, t=60, b=4), uniformtext=dict(minsize=12, mode="hide"))
    return fig


def summary_rows(rows: list[dict]) -> list[dict]:
    """:func:`vit_explain.flops.class_summary` rows formatted for a table."""
    return [
        {
            "class": r["cls"] + (f" x {r['count']}" if r["count"] > 1 else ""),
            "output shape": r["shape_names"],
            "here": "[" + ", ".join(str(s) for s in r["shape"]) + "]",
            "parameters": f"{r['params']:,}",
            "share of parameters": f"{r['param_share']:.1%}",
            "FLOPs": human(r["flops"]),
            "share of FLOPs": f"{r['flop_share']:.1%}",
        }
        for r in rows
    ]


def prediction_figure(top: list[tuple[str, float]], title: str = "Top-5 prediction") -> go.Figure:
    """Horizontal bars of (label, probability), the most probable on top."""
    labels = [label for label, _ in top]
    probs = f32([p for _, p in top])
    fig = bar(labels, probs, title, x_title="probability", y_title="class", horizontal=True,
              height=max(220, 60 + 34 * len(labels)), color="#4a90c2")
    # room right of 1.0 for the label of a bar near 100 % ("95.4%" was cut off at the figure's edge)
    fig.update_xaxes(range=[0, 1.22], tickvals=[0, 0.5, 1.0], tickformat=".0%")
    fig.update_traces(text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False)
    return fig
