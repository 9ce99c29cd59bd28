"""Figures of the CLS-and-position page: the token sequence, the position embeddings and their similarity.

The "grid of small maps" (Dosovitskiy et al. 2021, Fig. 7 centre) is drawn as ONE heatmap: the
g x g maps of a g x g grid are laid side by side with a NaN row/column between them, so 196
maps of 14 x 14 cost a single 209 x 209 float32 array instead of 196 subplots.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import analysis

from .common import SIGNED_SCALE, click_layer, f32, overlay_map, style
from .patching import mosaic, subtitle

#: Largest side (in cells) of the similarity mosaic; bigger grids show every k-th patch's map.
MAX_MOSAIC_SIDE = 320


# ------------------------------------------------------------------------------- pure helpers
def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``x`` ``[n, D]`` as float32 (see analysis.cosine_matrix)."""
    return analysis.cosine_matrix(x).astype(np.float32)


def mosaic_step(grid: int, max_side: int = MAX_MOSAIC_SIDE) -> int:
    """Show every ``step``-th patch's map so the mosaic stays within ``max_side`` cells a side."""
    step = 1
    while -(-grid // step) * (grid + 1) - 1 > max_side and step < grid:
        step += 1
    return step


def similarity_mosaic(maps: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``maps`` ``[g, g, g, g]`` (map of patch (i, j) at ``maps[i, j]``) -> (mosaic, shown).

    The mosaic puts the map of patch (i, j) at block (i, j), separated by one NaN cell; with
    ``step`` > 1 only every step-th row and column of patches is shown. ``shown`` lists the patch
    indices (row-major) in mosaic order.
    """
    maps = np.asarray(maps, dtype=np.float32)
    g = maps.shape[0]
    rows = np.arange(0, g, step)
    chosen = maps[np.ix_(rows, rows)].reshape(-1, g, g)
    shown = (rows[:, None] * g + rows[None, :]).ravel().astype(np.int32)
    return mosaic(chosen, len(rows), gap=1, fill=np.nan), shown


def similarity_by_distance(sim: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`vit_explain.analysis.similarity_by_distance` as float32: ``(distances, means, stds)``."""
    distances, means, stds = analysis.similarity_by_distance(sim, grid)
    return f32(distances), f32(means), f32(stds)


def dimension_window(num_tokens: int, hidden: int, budget: int = 24_576, widest: int = 96) -> int:
    """How many hidden dimensions a [tokens, dims] heatmap may show within ``budget`` numbers."""
    return int(max(1, min(hidden, widest, max(16, budget // max(1, num_tokens)))))


def stretched_range(similarity: np.ndarray) -> tuple[float, float]:
    """min and max of a similarity matrix off its diagonal (the diagonal is always 1)."""
    sim = np.asarray(similarity, dtype=np.float32)
    if sim.shape[0] < 2:
        return -1.0, 1.0
    off = sim[~np.eye(sim.shape[0], dtype=bool)]
    lo, hi = float(off.min()), float(off.max())
    return (lo, hi) if hi > lo else (lo - 1e-3, hi + 1e-3)


def _colours(zrange: tuple[float, float] | None) -> dict:
    if zrange is None:
        return dict(zmin=-1.0, zmax=1.0, zmid=0.0, colorscale=SIGNED_SCALE)
    return dict(zmin=float(zrange[0]), zmax=float(zrange[1]), colorscale="Viridis")


# ------------------------------------------------------------------------------- figures
def token_heatmaps(tokens: np.ndarray, position: np.ndarray, embeddings: np.ndarray, *, start: int = 0,
                   width: int | None = None, shared_scale: bool = False, title: str | None = None,
                   height: int = 520) -> go.Figure:
    """Three [T, dims] heatmaps side by side: tokens (CLS + patches), + position embeddings, = their sum.

    Colour scales are symmetric around 0; with ``shared_scale`` all three use one (so sizes
    compare), otherwise each panel gets its own colour bar (so a small part, such as random
    position embeddings, is still visible). Row 0, the CLS token, is outlined. ``start`` and
    ``width`` pick the window of hidden dimensions shown (all tokens are shown).
    """
    T, D = tokens.shape
    width = width or dimension_window(T, D)
    start = int(np.clip(start, 0, max(0, D - width)))
    window = slice(start, start + width)
    panels = [f32(tokens[:, window]), f32(np.broadcast_to(position, tokens.shape)[:, window]),
              f32(embeddings[:, window])]

    def robust_max(*arrays) -> float:
        return float(np.percentile(np.abs(np.concatenate([a.ravel() for a in arrays])), 99.5)) or 1.0

    limits = [robust_max(*panels)] * 3 if shared_scale else [robust_max(p) for p in panels]
    names = ["tokens:<br>CLS + patches", "+ position<br>embeddings", "= embeddings<br>(into layer 0)"]
    spacing = 0.03 if shared_scale else 0.14  # room for each panel's own colour bar and its tick labels
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=spacing, subplot_titles=names)
    x = np.arange(start, start + width, dtype=np.int32)
    for i, z in enumerate(panels):
        domain_end = fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain[1]
        colorbar = (dict(title=dict(text="value", side="right")) if shared_scale else
                    dict(x=domain_end + 0.005, xanchor="left", thickness=10, len=0.9, tickfont=dict(size=12)))
        fig.add_trace(go.Heatmap(
            z=z, x=x, zmin=-limits[i], zmax=limits[i], zmid=0, colorscale=SIGNED_SCALE,
            showscale=(i == 2) or not shared_scale, colorbar=colorbar,
            hovertemplate=f"{names[i].replace('<br>', ' ')}<br>token %{{y}}, dimension %{{x}}: %{{z:.4f}}<extra></extra>"), row=1, col=i + 1)
        fig.add_shape(type="rect", x0=start - 0.5, x1=start + width - 0.5, y0=-0.5, y1=0.5,
                      line=dict(color="black", width=2), row=1, col=i + 1)
        fig.update_xaxes(title_text="hidden dimension", row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="token (row 0 = CLS, then patches 0, 1, ...)", row=1, col=1)
    fig.add_annotation(x=start, y=0, text="CLS", xanchor="right", xshift=-4, showarrow=False, font=dict(size=12),
                       xref="x", yref="y")
    title = title or f"The token sequence before and after adding positions ({T} tokens, dimensions {start}–{start + width - 1})"
    style(fig, title, height=height)
    return subtitle(fig, "one colour scale for all three panels" if shared_scale else
                    "each panel has its own colour scale (see the lengths below to compare sizes)")


def token_norms_figure(tokens: np.ndarray, position: np.ndarray, embeddings: np.ndarray, *,
                       title: str = "How long each vector is", height: int = 340) -> go.Figure:
    """The length (L2 norm) of each token, of its position embedding and of their sum, token by token."""
    T = tokens.shape[0]
    x = np.arange(T, dtype=np.int32)
    fig = go.Figure()
    for name, values, colour in (("token (CLS or patch embedding)", tokens, "#4a90c2"),
                                 ("position embedding", np.broadcast_to(position, tokens.shape), "#ff7f0e"),
                                 ("sum = embedding", embeddings, "#2ca02c")):
        fig.add_trace(go.Scatter(x=x, y=f32(analysis.token_norms([values])[0]), name=name, mode="lines+markers",
                                 marker=dict(size=3), line=dict(color=colour, width=1.5),
                                 hovertemplate=f"{name}<br>token %{{x}}: length %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    return style(fig, title, height=height, x_title="token (0 = CLS)", y_title="length (L2 norm)")


def similarity_grid_figure(maps: np.ndarray, *, selected: int | None = None, title: str | None = None,
                           height: int = 620, max_side: int = MAX_MOSAIC_SIDE, show_scale: bool = True,
                           zrange: tuple[float, float] | None = None) -> go.Figure:
    """Fig. 7 (centre) of the ViT paper: for each patch, a small map of its position embedding's cosine
    similarity with every other patch's, placed where the patch is. Clicking a small map selects
    its patch (``customdata`` = patch index, as :func:`~vit_explain.charts.common.clicked_patch` reads).
    Colours span -1..1 on a diverging scale, or ``zrange`` on a sequential one (to stretch contrast).
    """
    g = maps.shape[0]
    step = mosaic_step(g, max_side)
    picture, shown = similarity_mosaic(maps, step)
    fig = go.Figure(go.Heatmap(z=picture, **_colours(zrange), showscale=show_scale,
                               colorbar=dict(title=dict(text="cosine similarity", side="right")),
                               hoverongaps=False, hovertemplate="similarity %{z:.3f}<extra></extra>"))
    per_side = -(-g // step)
    blocks = np.arange(per_side * per_side)
    br, bc = np.divmod(blocks, per_side)
    centres_x = (bc * (g + 1) + (g - 1) / 2).astype(np.float32)
    centres_y = (br * (g + 1) + (g - 1) / 2).astype(np.float32)
    rows, cols = np.divmod(shown, g)
    fig.add_trace(go.Scatter(
        x=centres_x, y=centres_y, customdata=shown, mode="markers",  # 1-D: the browser sends it back as a number
        text=[f"map of patch {i} (row {r}, column {c})" for i, r, c in zip(shown, rows, cols)],
        marker=dict(symbol="square", size=max(6, min(40, int(520 / per_side))), color="rgba(0,0,0,0)"),
        hovertemplate="%{text}<extra></extra>",
        showlegend=False, name="maps"))
    if selected is not None and selected in set(shown.tolist()):
        b = int(np.nonzero(shown == selected)[0][0])
        r, c = divmod(b, per_side)
        fig.add_shape(type="rect", x0=c * (g + 1) - 0.5, x1=c * (g + 1) + g - 0.5, y0=r * (g + 1) - 0.5,
                      y1=r * (g + 1) + g - 0.5, line=dict(color="#ff2d55", width=2.5))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False, showgrid=False,
                     zeroline=False, ticks="")
    fig.update_xaxes(constrain="domain", showticklabels=False, showgrid=False, zeroline=False, ticks="")
    title = title or "Position-embedding similarity, one small map per patch"
    style(fig, title, height=height, x_title="patch column →", y_title="patch row →")
    fig.update_layout(margin=dict(l=30, r=10, b=30))
    note = f"{g} x {g} maps of {g} x {g}" if step == 1 else f"every {step}th patch: {per_side} x {per_side} maps of {g} x {g}"
    return subtitle(fig, f"{note}; click a map to enlarge it")


def similarity_overlay_figure(image: np.ndarray, similarity_map: np.ndarray, patch_size: int, selected: int, *,
                              title: str | None = None, height: int = 520,
                              zrange: tuple[float, float] | None = None) -> go.Figure:
    """One patch's similarity map, large, over the picture; click another patch to switch."""
    g = similarity_map.shape[0]
    r, c = divmod(int(selected), g)
    fig = overlay_map(image, similarity_map, title or f"Patch {selected} (row {r}, col {c}) vs. every patch",
                      colorbar_title="cosine similarity", opacity=0.75, height=height,
                      **{k: v for k, v in _colours(zrange).items() if k != "zmid"})
    if zrange is None:
        fig.update_traces(zmid=0, selector=dict(type="heatmap"))
    click_layer(fig, image.shape[0], patch_size, selected=selected)
    fig.update_traces(colorbar=dict(thickness=12), selector=dict(type="heatmap"))
    return subtitle(fig, "click a patch to pick another")


def distance_figure(distances: np.ndarray, means: np.ndarray, stds: np.ndarray, *,
                    title: str = "Similarity against distance", height: int = 360) -> go.Figure:
    """Mean position-embedding similarity of patch pairs by their distance on the grid (band: ±1 std)."""
    d, m, s = f32(distances), f32(means), f32(stds)
    fig = go.Figure([
        go.Scatter(x=np.concatenate([d, d[::-1]]), y=np.concatenate([m + s, (m - s)[::-1]]), fill="toself",
                   fillcolor="rgba(74,144,194,0.2)", line=dict(width=0), hoverinfo="skip", name="± 1 std"),
        go.Scatter(x=d, y=m, mode="lines+markers", line=dict(color="#4a90c2"), marker=dict(size=4), name="mean",
                   hovertemplate="distance %{x} patches: mean similarity %{y:.3f}<extra></extra>"),
    ])
    fig.update_yaxes(range=[-1.05, 1.05])
    fig.update_layout(legend=dict(x=0.02, y=0.02, xanchor="left", yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"))
    style(fig, title, height=height, x_title="distance between the two patches (in patches)",
          y_title="cosine similarity")
    return subtitle(fig, "trained: falls with distance; random: flat near 0")
