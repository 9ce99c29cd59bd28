"""Figures for the Compare page: two models on one picture, side by side, on shared scales.

Pure functions: numpy arrays in, Plotly figures out; no Streamlit. The numbers come from
:mod:`vit_explain.compare` and :mod:`vit_explain.analysis`. Model A is drawn in blue, model B in
orange everywhere (a colour-blind safe pair); maps of the two models share one colour scale,
relative to uniform attention (1 = the share every patch would get if attention were even), so
grids of different sizes compare.

Every figure is built in one ``go.Figure(data, layout)`` call from plain dicts, with the look of
:func:`.common.style`: the page redraws all of them after every picker change, and Plotly's
step-by-step updates (``update_layout``, ``add_hline`` ...) cost ten times as much.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..pipeline import enlarge
from .common import ATTENTION_SCALE, FONT, f32, image_source

#: The two models' colours, on every chart of the page.
COLOUR_A = "#4c78a8"
COLOUR_B = "#f58518"
MARK_COLOUR = "#ff2d55"  #: the chosen layer and the query patch
#: Pictures are sent at least this many pixels wide (pixel-repeated), so a 32 px picture stays crisp.
PICTURE_PX = 224
#: Depth axes: relative depth 0 (the first layer) to 1 (the last).
DEPTH_TICKS = [0.0, 0.25, 0.5, 0.75, 1.0]
BARE_AXIS = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False, constrain="domain")


def state_ticks(count: int) -> list[str]:
    """Tick labels of ``count`` hidden states: "emb." (the embeddings), then "0", "1" ... (after layer i)."""
    return ["emb."] + [str(i) for i in range(count - 1)]


def _figure(data: list[dict], title: str, *, height: int, subtitle: str | None = None, margin: dict | None = None,
            **layout) -> go.Figure:
    """One constructor call: the traces, the title (and subtitle), fonts and margins of :func:`.common.style`."""
    heading = dict(text=title, x=0.0, xanchor="left")
    if subtitle:
        heading["subtitle"] = dict(text=subtitle)
    return go.Figure(data=data, layout=dict(title=heading, font=FONT, height=height,
                                            margin=margin or dict(l=10, r=10, t=60, b=10), **layout))


def _axis(title: str | None = None, **more) -> dict:
    axis = dict(automargin=True, **more)
    if title is not None:
        axis["title"] = dict(text=title)
    return axis


def _vline(x: float, colour: str = MARK_COLOUR, dash: str = "dot", width: float = 1.0) -> dict:
    return dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1, line=dict(color=colour, dash=dash,
                                                                                         width=width))


def _hline(y: float, colour: str, dash: str = "dash", width: float = 1.5) -> dict:
    return dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=y, y1=y, line=dict(color=colour, dash=dash,
                                                                                       width=width))


# ------------------------------------------------------------------------------ predictions
def prediction_bars(names: list[str], probs: np.ndarray, title: str, *, colour: str,
                    uniform: float | None = None) -> go.Figure:
    """One model's top classes as horizontal bars (probability), the uniform share as a dashed line."""
    p = f32(probs)
    top = float(p.max()) if p.size else 1.0
    bars = dict(type="bar", x=p, y=list(names), orientation="h", marker=dict(color=colour),
                text=[f"{v:.1%}" for v in p], textposition="outside", cliponaxis=False,
                hovertemplate="%{y}: %{x:.2%}<extra></extra>")
    shapes = [] if uniform is None else [dict(type="line", xref="x", yref="paper", x0=float(uniform),
                                              x1=float(uniform), y0=0, y1=1, layer="below",
                                              line=dict(color="#888888", dash="dash", width=1))]
    return _figure([bars], title, height=70 + 30 * max(len(names), 2), margin=dict(l=10, r=30, t=60, b=10),
                   xaxis=_axis("probability", range=[0, min(1.0, top * 1.3 + 0.02)], tickformat=".0%"),
                   yaxis=_axis(autorange="reversed"), shapes=shapes)


# ------------------------------------------------------------------------------ where CLS looks, layer by layer
def _blocks_layout(counts: list[int], headings: list[str], cols: int, *, cell: int, heading: int, gap: int
                   ) -> tuple[dict, list[dict], list[list[str]], int]:
    """Axes for blocks of square panels, each block (one model) under its heading, ``cols`` panels a row.

    Returns ``(layout, annotations, suffixes, height)``: ``suffixes[b][i]`` names the axes of panel ``i``
    of block ``b`` ("", "2", ...); sizes are in pixels (``cell``: a row of panels with their titles).
    """
    rows = [-(-n // cols) for n in counts]
    height = sum(heading + r * cell for r in rows) + gap * (len(counts) - 1)
    layout, notes, suffixes = {}, [], []
    width = (1.0 - 0.012 * (cols - 1)) / cols
    top, k = 0, 0
    for b, (n, r) in enumerate(zip(counts, rows)):
        notes.append(dict(text=headings[b], x=0.0, y=1.0 - top / height, xref="paper", yref="paper", xanchor="left",
                          yanchor="top", showarrow=False, font=dict(size=13)))
        top += heading
        names = []
        for i in range(n):
            row, col = divmod(i, cols)
            y1 = 1.0 - (top + row * cell + 20) / height  # 20 px: the panel's title
            y0 = 1.0 - (top + (row + 1) * cell) / height
            x0 = col * (width + 0.012)
            suffix = "" if k == 0 else str(k + 1)
            layout[f"xaxis{suffix}"] = dict(domain=[max(0.0, x0), min(1.0, x0 + width)], anchor=f"y{suffix}",
                                            **BARE_AXIS)
            layout[f"yaxis{suffix}"] = dict(domain=[max(0.0, y0), min(1.0, y1)], anchor=f"x{suffix}",
                                            scaleanchor=f"x{suffix}", constraintoward="top", **BARE_AXIS)
            names.append(suffix)
            k += 1
        suffixes.append(names)
        top += r * cell + gap
    return layout, notes, suffixes, height


def cls_depth_facets(maps_a: np.ndarray, maps_b: np.ndarray, label_a: str, label_b: str, *, layer_a: int,
                     layer_b: int, zmax: float, cols: int = 6, head_note: str = "mean over heads") -> go.Figure:
    """Where CLS looks in every layer of A (top block) and of B (under it), one colour scale (× uniform).

    ``maps_*`` ``[L, g, g]`` relative to uniform; the chosen layer of A and the layer of B facing it are
    outlined and marked "◂".
    """
    blocks = [f32(maps_a), f32(maps_b)]
    cols = max(1, min(cols, max(len(m) for m in blocks)))
    cell = int(min(170, max(100, 620 / cols + 26)))  # a panel's width on a 1024 px screen, and its title
    headings = [f"<b>A</b> · {label_a}", f"<b>B</b> · {label_b}"]
    colours = [COLOUR_A, COLOUR_B]
    layout, notes, suffixes, height = _blocks_layout([len(m) for m in blocks], headings, cols, cell=cell,
                                                     heading=26, gap=14)
    for note, colour in zip(notes, colours):
        note["font"]["color"] = colour
    traces, shapes = [], []
    for b, (maps, chosen, who) in enumerate(zip(blocks, (layer_a, layer_b), ("A", "B"))):
        g = maps.shape[-1]
        for i, suffix in enumerate(suffixes[b]):
            first = b == 0 and i == 0
            traces.append(dict(
                type="heatmap", z=maps[i], zmin=0.0, zmax=zmax, colorscale=ATTENTION_SCALE, showscale=first,
                xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                colorbar=dict(title=dict(text=f"× uniform<br>fitted 0–{zmax:.3g}", side="top"), thickness=12,
                              len=0.8, y=0.5, yanchor="middle"),
                hovertemplate=f"{who}, layer {i}<br>patch row %{{y}}, col %{{x}}: %{{z:.2f}} × uniform<extra></extra>"))
            layout[f"xaxis{suffix}"]["range"] = [-0.5, g - 0.5]
            layout[f"yaxis{suffix}"]["range"] = [g - 0.5, -0.5]
            mark = i == chosen
            notes.append(dict(text=f"<b>layer {i} ◂</b>" if mark else f"layer {i}", xref=f"x{suffix} domain",
                              yref=f"y{suffix} domain", x=0.5, y=1.0, xanchor="center", yanchor="bottom",
                              showarrow=False, font=dict(size=12, color=MARK_COLOUR if mark else "#444444")))
            if mark:
                shapes.append(dict(type="rect", xref=f"x{suffix} domain", yref=f"y{suffix} domain", x0=0, x1=1,
                                   y0=0, y1=1, line=dict(color=MARK_COLOUR, width=3)))
    return _figure(traces, f"CLS attention in every layer ({head_note}; one colour scale for both models)",
                   height=height + 30, margin=dict(l=10, r=10, t=20, b=10), shapes=shapes, annotations=notes,
                   **layout)


# ------------------------------------------------------------------------------ two pictures with a map each
def _picture(image: np.ndarray, axes: dict) -> dict:
    """The picture in its own pixel coordinates, repeated pixel by pixel when small so it stays crisp."""
    size = int(image.shape[0])
    big = enlarge(image, PICTURE_PX)
    step = size / big.shape[0]
    return dict(type="image", source=image_source(big, "jpeg", 88), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5,
                dy=step, hoverinfo="skip", **axes)


def map_pair(image_a: np.ndarray, map_a: np.ndarray, image_b: np.ndarray, map_b: np.ndarray, titles: list[str],
             title: str, *, zmax: float, colorbar_title: str, marks: tuple[int | None, int | None] = (None, None),
             clicks: tuple[np.ndarray, np.ndarray] | None = None, height: int = 340) -> go.Figure:
    """Two pictures (A left, B right), each with its ``[g, g]`` map over it, on one colour scale.

    ``marks``: a patch of each grid to outline (the query). ``clicks``: for each picture, the value every
    one of its patches sends when clicked (transparent markers, row by row), e.g. A's patch at that spot.
    """
    data, shapes, layout = [], [], {}
    for k, (image, values, mark) in enumerate(((image_a, map_a, marks[0]), (image_b, map_b, marks[1]))):
        suffix = "" if k == 0 else "2"
        axes = dict(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        size, g = int(image.shape[0]), int(values.shape[0])
        step = size / g
        data.append(_picture(image, axes))
        data.append(dict(
            type="heatmap", z=f32(values), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=0.0,
            zmax=zmax, colorscale=ATTENTION_SCALE, opacity=0.62, showscale=k == 1, name=titles[k],
            colorbar=dict(title=dict(text=colorbar_title, side="top"), thickness=12),
            hovertemplate=f"{'AB'[k]}<br>patch centre x %{{x:.0f}}, y %{{y:.0f}} px: %{{z:.2f}} × uniform<extra></extra>",
            **axes))
        if clicks is not None:
            centres = (np.arange(g, dtype=np.float32) + 0.5) * step - 0.5
            cx, cy = np.meshgrid(centres, centres)
            data.append(dict(
                type="scatter", x=f32(cx.ravel()), y=f32(cy.ravel()), customdata=np.asarray(clicks[k], dtype=np.int32),
                mode="markers", marker=dict(symbol="square", size=max(5, min(36, int(330 / g))),
                                            color="rgba(0,0,0,0)", line=dict(width=0)),
                hoverinfo="none", showlegend=False, name="patches", **axes))
        if mark is not None:
            r, c = divmod(int(mark), g)
            shapes.append(dict(type="rect", x0=c * step - 0.5, x1=(c + 1) * step - 0.5, y0=r * step - 0.5,
                               y1=(r + 1) * step - 0.5, xref=axes["xaxis"], yref=axes["yaxis"],
                               line=dict(color=MARK_COLOUR, width=3)))
        layout[f"xaxis{suffix}"] = dict(domain=[0.0, 0.44] if k == 0 else [0.5, 0.94], range=[-0.5, size - 0.5],
                                        anchor=f"y{suffix}", **BARE_AXIS)
        layout[f"yaxis{suffix}"] = dict(domain=[0.0, 0.9], range=[size - 0.5, -0.5], anchor=f"x{suffix}",
                                        scaleanchor=f"x{suffix}", constraintoward="top", **BARE_AXIS)
    notes = [dict(text=titles[k], x=[0.22, 0.72][k], y=0.91, xref="paper", yref="paper", xanchor="center",
                  yanchor="bottom", showarrow=False, font=dict(size=12, color=[COLOUR_A, COLOUR_B][k]))
             for k in range(2)]
    if clicks is not None:
        layout.update(dragmode=False, clickmode="event+select")
    return _figure(data, title, height=height, margin=dict(l=4, r=4, t=40, b=4), annotations=notes, shapes=shapes,
                   showlegend=False, **layout)


# ------------------------------------------------------------------------------ Figure 7, both models
def distance_figure(depth_a: np.ndarray, share_a: np.ndarray, depth_b: np.ndarray, share_b: np.ndarray,
                    label_a: str, label_b: str, *, uniform_a: float, uniform_b: float, pixels_a: np.ndarray,
                    pixels_b: np.ndarray, marked_depth: float | None = None) -> go.Figure:
    """Mean attention distance of every head of both models against relative depth (the ViT paper's Fig. 7,
    right), as a share of the picture's side; one colour a model; dashed: evenly spread attention."""
    data, shapes, top = [], [], 0.0
    for who, depth, share, pixels, uniform, colour, label in (
            ("A", depth_a, share_a, pixels_a, uniform_a, COLOUR_A, label_a),
            ("B", depth_b, share_b, pixels_b, uniform_b, COLOUR_B, label_b)):
        s, px = f32(share), f32(pixels)
        L, H = s.shape
        spread = 0.03 if L > 1 else 0.0  # the heads of one layer side by side, not on top of each other
        offsets = (np.arange(H) - (H - 1) / 2) * (spread / max(H - 1, 1)) if H > 1 else np.zeros(1)
        x = (np.asarray(depth, dtype=np.float64)[:, None] + offsets[None, :]).ravel()
        layers, heads = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
        custom = np.stack([layers.ravel(), heads.ravel(), px.ravel()], axis=1).astype(np.float32)
        data.append(dict(
            type="scatter", x=f32(x), y=s.ravel(), mode="markers", name=f"{who}: {label}", customdata=custom,
            marker=dict(size=8, color=colour, opacity=0.85, line=dict(width=0.5, color="white"),
                        symbol="circle" if who == "A" else "diamond"),
            hovertemplate=f"{who}, layer %{{customdata[0]:.0f}}, head %{{customdata[1]:.0f}}: "
                          "%{customdata[2]:.1f} px = %{y:.0%} of the side<extra></extra>"))
        shapes.append(_hline(float(uniform), colour))
        top = max(top, float(np.nanmax(s)) if np.isfinite(s).any() else 0.0, float(uniform))
    data.append(dict(type="scatter", x=[None], y=[None], mode="lines", line=dict(color="#777777", dash="dash"),
                     name="evenly spread attention (in each model's colour)", hoverinfo="skip"))
    if marked_depth is not None:
        shapes.append(_vline(float(marked_depth)))
    return _figure(
        data, "How far each head looks, against depth (ViT paper, Fig. 7 right; both models)", height=440,
        xaxis=_axis("relative depth", range=[-0.06, 1.06], tickvals=DEPTH_TICKS,
                    ticktext=["first layer", "25%", "50%", "75%", "last layer"]),
        yaxis=_axis("mean distance (share of the side)", range=[0, top * 1.12 + 1e-6], tickformat=".0%"),
        legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.2, yanchor="top"), shapes=shapes)


# ------------------------------------------------------------------------------ logit lens, both models
def lens_figure(lens_a: dict, lens_b: dict, label_a: str, label_b: str, answer_a: str, answer_b: str,
                top1_a: list[str], top1_b: list[str], *, marked_depth: float | None = None) -> go.Figure:
    """The probability each model gives its own final answer after every layer (the logit lens), by depth."""
    data = []
    for who, lens, label, answer, top1, colour in (("A", lens_a, label_a, answer_a, top1_a, COLOUR_A),
                                                   ("B", lens_b, label_b, answer_b, top1_b, COLOUR_B)):
        stages = [f"after layer {i}" for i in range(len(top1))]
        data.append(dict(
            type="scatter", x=f32(lens["depth"]), y=f32(lens["final_prob"]), mode="lines+markers",
            name=f"{who}: {label} → “{answer}”", line=dict(color=colour, width=2.5),
            marker=dict(size=7, symbol="circle" if who == "A" else "diamond"),
            text=[f"{s}; top class there: {t}" for s, t in zip(stages, top1)],
            hovertemplate=f"{who}, %{{text}}<br>p(“{answer}”) = %{{y:.1%}}<extra></extra>"))
    shapes = [] if marked_depth is None else [_vline(float(marked_depth))]
    return _figure(
        data, "When does each model's answer appear? (logit lens on the CLS token)", height=400,
        xaxis=_axis("relative depth (the layer after which the classifier reads CLS)", range=[-0.04, 1.04],
                    tickvals=DEPTH_TICKS, ticktext=["first layer", "25%", "50%", "75%", "last layer"]),
        yaxis=_axis("probability of the final answer", range=[0, 1.04], tickformat=".0%"),
        legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.2, yanchor="top"), shapes=shapes)


# ------------------------------------------------------------------------------ layer similarity (CKA)
def cka_figure(cross: np.ndarray, within_a: np.ndarray, label_a: str, label_b: str, *,
               pairs: list[int] | None = None, subtitle: str | None = None) -> go.Figure:
    """Two CKA heatmaps on one fixed 0..1 scale: A's hidden states against B's (left) and against A's own (right,
    the reference). Rows: A, from the embeddings down; ``pairs``: the layer of B facing each layer of A, drawn
    as a dotted line (the relative-depth diagonal)."""
    c, w = f32(cross), f32(within_a)
    ticks_a, ticks_b = state_ticks(c.shape[0]), state_ticks(c.shape[1])
    data, layout = [], {}
    for k, (z, xticks, who) in enumerate(((c, ticks_b, "B"), (w, ticks_a, "A"))):
        suffix = "" if k == 0 else "2"
        data.append(dict(
            type="heatmap", z=z, x=xticks, y=ticks_a, zmin=0.0, zmax=1.0, colorscale="Plasma", showscale=k == 1,
            xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            colorbar=dict(title=dict(text="CKA<br>fixed 0–1", side="top"), thickness=12),
            hovertemplate=f"A after layer %{{y}} vs {who} after layer %{{x}}: CKA %{{z:.3f}}<extra></extra>"))
        layout[f"xaxis{suffix}"] = _axis(f"{who}: after layer", type="category", domain=[0.0, 0.4] if k == 0 else
                                         [0.53, 0.93], anchor=f"y{suffix}")
        layout[f"yaxis{suffix}"] = _axis("A: after layer" if k == 0 else None, type="category", autorange="reversed",
                                         anchor=f"x{suffix}")
    if pairs:
        data.append(dict(type="scatter", x=["emb."] + [str(j) for j in pairs], y=ticks_a, mode="lines",
                         line=dict(color="#00e5ff", width=1.5, dash="dot"), hoverinfo="skip", showlegend=False))
    notes = [dict(text=text, x=x, y=1.0, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
                  showarrow=False, font=dict(size=13)) for text, x in (("A against B", 0.2),
                                                                         ("A against itself (reference)", 0.73))]
    return _figure(data, f"Layer similarity (linear CKA): {label_a} against {label_b}", height=460,
                   subtitle=subtitle, annotations=notes, **layout)
