"""Figures of the Experiments page: the answer before and after a change to the model, and where it broke.

Pure functions: numpy arrays in, Plotly figures out (no Streamlit, no model). "Before" is always the model
as it is, "after" the model with the experiment's change; both are drawn in the same two colours on every
figure. Maps over the picture are blended in numpy and shipped as small JPEG tiles (as on the
self-attention page), so a page of them stays a few tens of kilobytes even at ViT-B/16.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .attention import overlay_facets, overlay_tiles
from .common import SIGNED_SCALE, f32, style

#: "as it is" and "changed": the same pair of colours as the prediction page's before/after charts.
BEFORE_COLOR = "#4c78a8"
AFTER_COLOR = "#f58518"
#: Marks the chosen head or layer.
CHOSEN_COLOR = "#ff2d55"


def points(delta: float) -> str:
    """A change of probability in percentage points: "+3.2 pts", "−0.4 pts", "±0 pts" when it rounds to 0."""
    value = 100.0 * float(delta)
    if abs(value) < 0.05:
        return "±0 pts"
    return f"{value:+.1f} pts".replace("-", "−")


# ------------------------------------------------------------------------------ the answer
def prediction_bars(labels: list[str], before: np.ndarray, after: np.ndarray, *, after_name: str = "changed",
                    height: int | None = None) -> go.Figure:
    """Probabilities of the same classes as it is and changed, grouped horizontal bars; each "changed" bar
    is labelled with its change in percentage points."""
    b, a = f32(before), f32(after)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=b, y=list(labels), orientation="h", name="as it is", marker_color=BEFORE_COLOR,
                         hovertemplate="%{y}<br>as it is: %{x:.2%}<extra></extra>"))
    fig.add_trace(go.Bar(x=a, y=list(labels), orientation="h", name=after_name, marker_color=AFTER_COLOR,
                         text=[points(d) for d in (a - b)], textposition="outside", cliponaxis=False,
                         textfont=dict(size=12), hovertemplate=f"%{{y}}<br>{after_name}: %{{x:.2%}}<extra></extra>"))
    fig.update_layout(barmode="group", bargap=0.25,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1.38], tickvals=[0, 0.25, 0.5, 0.75, 1.0], tickformat=".0%")
    fig = style(fig, f"Top {len(b)} classes: as it is vs {after_name}", height=height or 110 + 52 * len(b),
                x_title="probability", y_title="class")
    fig.update_layout(margin=dict(b=80))
    return fig


def _pair_scaled(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two maps divided by the larger of their maxima (so they share one 0..1 scale)."""
    top = max(float(np.max(before)), float(np.max(after)), 0.0)
    if top <= 0 or not np.isfinite(top):
        return np.zeros_like(before, dtype=np.float64), np.zeros_like(after, dtype=np.float64)
    return np.asarray(before, dtype=np.float64) / top, np.asarray(after, dtype=np.float64) / top


def maps_before_after(image: np.ndarray, attention: tuple[np.ndarray, np.ndarray],
                      rollout: tuple[np.ndarray, np.ndarray], title: str, *,
                      after_image: np.ndarray | None = None) -> go.Figure:
    """Where the CLS token looks, as it is and changed: the last layer's attention (top row) and the
    rollout through all layers (bottom row), four ``[g, g]`` maps over the picture.

    Each row's two maps share one colour scale: both are divided by the larger of their two maxima, so
    a darker "changed" map really is weaker. ``after_image``: the picture under the "changed" maps,
    when the model was given another one (the shuffled picture); by default ``image``.
    """
    a0, a1 = _pair_scaled(*attention)
    r0, r1 = _pair_scaled(*rollout)
    maps = np.stack([a0, a1, r0, r1]).astype(np.float32)
    second = image if after_image is None else after_image
    tiles = []
    for picture, values in ((image, a0), (second, a1), (image, r0), (second, r1)):
        tiles += overlay_tiles(picture, values[None], 0.0, 1.0, tile=_tile(values.shape[-1]))
    titles = ["last layer:<br>as it is", "last layer:<br>changed", "rollout:<br>as it is", "rollout:<br>changed"]
    return overlay_facets(tiles, maps, titles, title, zmin=0.0, zmax=1.0, cols=2, cell=210,
                          colorbar_title="share of<br>the pair's max", hover_label="share of the max")


def _tile(grid: int) -> int:
    return grid * max(1, int(round(160 / max(grid, 1))))


def head_map(image: np.ndarray, values: np.ndarray, title: str) -> go.Figure:
    """One ``[g, g]`` map over the picture (a head's CLS attention), on its own fitted 0..max scale."""
    top = float(np.max(values)) if np.size(values) else 0.0
    top = top if np.isfinite(top) and top > 0 else 1.0
    tiles = overlay_tiles(image, np.asarray(values)[None], 0.0, top, tile=_tile(np.shape(values)[-1]))
    fig = overlay_facets(tiles, f32(values)[None], [""], title, zmin=0.0, zmax=top, cols=1, cell=260,
                         colorbar_title=f"weight<br>fitted 0–{top:.3g}", hover_label="weight")
    fig.update_layout(annotations=[])
    return fig


# ------------------------------------------------------------------------------ heads
def head_importance_heatmap(drops: np.ndarray, title: str, *, what: str, chosen: tuple[int, int] | None = None,
                            height: int | None = None) -> go.Figure:
    """``[L, H]`` drops (probability or similarity, 0..1 units) as a layers x heads heatmap in points,
    centred on 0 (red: the answer suffers without the head; blue: it does better). A transparent marker
    on every cell makes it clickable: its ``customdata`` is ``layer * H + head``."""
    z = 100.0 * np.asarray(drops, dtype=np.float64)
    L, H = z.shape
    limit = float(np.abs(z).max()) if z.size else 0.0
    limit = limit if limit > 0 else 1.0
    show_text = L * H <= 96 and H <= 8
    fig = go.Figure(go.Heatmap(
        z=f32(z), x=np.arange(H, dtype=np.int32), y=np.arange(L, dtype=np.int32), zmin=-limit, zmax=limit, zmid=0.0,
        colorscale=SIGNED_SCALE, texttemplate="%{z:+.1f}" if show_text else None, textfont=dict(size=12),
        colorbar=dict(title=dict(text=f"{what}<br>(points)", side="right"), thickness=14),
        hovertemplate="layer %{y}, head %{x}<br>" + what + ": %{z:+.2f} points<extra></extra>"))
    ys, xs = np.divmod(np.arange(L * H, dtype=np.int32), H)
    fig.add_trace(go.Scatter(x=xs, y=ys, customdata=np.arange(L * H, dtype=np.int32), mode="markers",
                             marker=dict(symbol="square", size=max(8, min(40, int(360 / max(L, H)))),
                                         color="rgba(0,0,0,0)", line=dict(width=0)),
                             hoverinfo="none", showlegend=False, name="heads"))
    if chosen is not None:
        layer, head = chosen
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color=CHOSEN_COLOR, width=3))
    fig.update_xaxes(tickmode="array", tickvals=list(range(H)), range=[-0.5, H - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(tickmode="array", tickvals=list(range(L)), range=[L - 0.5, -0.5], showgrid=False,
                     zeroline=False)
    fig.update_layout(dragmode=False, clickmode="event+select")
    return style(fig, title, height=height or max(300, 30 * L + 150), x_title="head", y_title="layer")


# ------------------------------------------------------------------------------ layers
SWEEP_ROWS = ("whole layer skipped", "only its attention skipped", "only its MLP skipped")
SWEEP_STYLE = (dict(color="#d62728", dash="solid", symbol="circle"), dict(color="#9467bd", dash="dot", symbol="diamond"),
               dict(color="#2ca02c", dash="dash", symbol="square"))


def _band(fig: go.Figure, x: float) -> None:
    fig.add_vrect(x0=x - 0.5, x1=x + 0.5, fillcolor=CHOSEN_COLOR, opacity=0.12, line_width=0, layer="below")


def layer_sweep_chart(score: np.ndarray, plain: float, title: str, *, y_title: str, chosen: int | None = None,
                      height: int = 400) -> go.Figure:
    """The answer when each layer (or one of its branches) is skipped: ``score`` ``[3, L]`` (rows as in
    :data:`SWEEP_ROWS`), probabilities or similarities in 0..1, against the unchanged ``plain`` value."""
    score = np.asarray(score, dtype=np.float64)
    L = score.shape[1]
    x = np.arange(L, dtype=np.int32)
    fig = go.Figure()
    for row, (name, look) in enumerate(zip(SWEEP_ROWS, SWEEP_STYLE)):
        fig.add_trace(go.Scatter(x=x, y=f32(score[row]), mode="lines+markers", name=name,
                                 line=dict(color=look["color"], dash=look["dash"], width=2),
                                 marker=dict(symbol=look["symbol"], size=8, color=look["color"]),
                                 hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.1%}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[-0.5, L - 0.5], y=[float(plain)] * 2, mode="lines", name="as it is",
                             line=dict(color=BEFORE_COLOR, dash="dash", width=2), hoverinfo="skip"))
    if chosen is not None:
        _band(fig, chosen)
    fig.update_xaxes(tickmode="array", tickvals=list(range(L)), range=[-0.5, L - 0.5])
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig = style(fig, title, height=height, x_title="skipped layer", y_title=y_title)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left"), margin=dict(b=100))
    return fig


def lens_before_after(before: np.ndarray, after: np.ndarray, class_name: str, title: str, *,
                      after_name: str = "changed", chosen: int | None = None, height: int = 380) -> go.Figure:
    """The logit lens of one class, as it is and changed: its probability read off the CLS token after every
    layer (``before`` / ``after`` ``[L + 1]``, the embeddings first). ``chosen``: the changed layer (shaded)."""
    S = len(before)
    stages = ["embeddings"] + [f"after {i}" for i in range(S - 1)]
    x = np.arange(S, dtype=np.int32)
    fig = go.Figure()
    for values, name, color, dash in ((before, "as it is", BEFORE_COLOR, "solid"), (after, after_name, AFTER_COLOR, "dot")):
        fig.add_trace(go.Scatter(x=x, y=f32(values), mode="lines+markers", name=name, customdata=stages,
                                 line=dict(color=color, width=2.5, dash=dash), marker=dict(size=8, color=color),
                                 hovertemplate=f"{name}<br>%{{customdata}}: p({class_name}) = %{{y:.1%}}<extra></extra>"))
    if chosen is not None:
        _band(fig, chosen + 1)  # stage i + 1 is "after layer i"
    step = max(1, int(np.ceil(S / 8)))
    fig.update_xaxes(tickmode="array", tickvals=list(range(0, S, step)),
                     ticktext=["emb." if i == 0 else f"{i - 1}" for i in range(0, S, step)], range=[-0.3, S - 0.7])
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig = style(fig, title, height=height, x_title="read after layer", y_title=f"p({class_name})")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.28, x=0, xanchor="left"), margin=dict(b=100))
    return fig


# ------------------------------------------------------------------------------ explanations (prediction page)
def maps_in_a_row(image: np.ndarray, maps: list[np.ndarray], titles: list[str], title: str, *,
                  colorbar_title: str = "share of<br>the maximum") -> go.Figure:
    """Several ``[g, g]`` maps over the same picture, side by side on one 0..1 colour scale (each map already
    divided by its maximum). Used by the prediction page to set gradient relevance beside rollout."""
    maps = np.clip(np.stack([np.asarray(m, dtype=np.float64) for m in maps]), 0.0, 1.0)
    g = maps.shape[-1]
    tiles = [overlay_tiles(image, m[None], 0.0, 1.0, tile=_tile(g))[0] for m in maps]
    return overlay_facets(tiles, maps.astype(np.float32), titles, title, zmin=0.0, zmax=1.0, cols=len(maps),
                          cell=230, colorbar_title=colorbar_title, hover_label="share of the max")
