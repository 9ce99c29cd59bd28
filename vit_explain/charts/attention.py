"""Figures of the self-attention page (ViTSelfAttention, ViTSelfOutput, ViTAttention).

Pure functions: numpy arrays in, Plotly figures (or plain arrays/strings) out; no Streamlit.

Token convention (as everywhere in vit_explain): token 0 is CLS, tokens 1..N are the patches in
row-major order, so patch ``p`` at ``(row, col)`` of a ``g x g`` grid is token ``1 + p`` with
``p = row * g + col``.

Pictures over the image (where a query looks, what CLS looks at) are blended in numpy and shipped
as small PNG/JPEG tiles (``go.Image(source=...)``) rather than as float arrays, which keeps a page
with twelve heads at ViT-B/16 to a few tens of kilobytes. A transparent heatmap on top of each
tile still shows the exact weight of every patch on hover, and a dummy scatter draws the shared
colour bar.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go

from .. import analysis
from .common import ATTENTION_SCALE, SIGNED_SCALE, click_layer, f32, grid_lines, image_source, scale_label, style

#: Colour of the query-patch marker (same as the selection box of ``common.click_layer``).
QUERY_COLOR = "#ff2d55"
#: Colour of the CLS row/column marks on token-by-token matrices.
CLS_COLOR = "#ff9f0a"
#: Largest number of token rows/columns a matrix figure ships; bigger ones are averaged in blocks.
MAX_DISPLAY_TOKENS = 256
#: Largest number of head dimensions a Q/K/V figure ships; more are averaged in blocks.
MAX_DISPLAY_DIMS = 128


# ---------------------------------------------------------------------------------- colour helpers
def colormap_lut(colorscale: str = ATTENTION_SCALE, n: int = 256) -> np.ndarray:
    """``[n, 3]`` uint8 colours sampled evenly along a named Plotly colour scale."""
    scale = pcolors.get_colorscale(colorscale)
    positions = np.array([float(p) for p, _ in scale])
    rgb = []
    for _, colour in scale:
        if colour.startswith("#"):
            rgb.append(pcolors.hex_to_rgb(colour))
        else:
            rgb.append(pcolors.unlabel_rgb(colour))
    rgb = np.asarray(rgb, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(t, positions, rgb[:, c]) for c in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray, zmin: float, zmax: float, colorscale: str = ATTENTION_SCALE) -> np.ndarray:
    """Map values to RGB uint8 (``[..., 3]``) on the fixed range ``zmin..zmax`` (clipped)."""
    lut = colormap_lut(colorscale)
    span = float(zmax) - float(zmin)
    scaled = (np.asarray(values, dtype=np.float64) - zmin) / (span if span > 0 else 1.0)
    idx = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0) * (len(lut) - 1)), 0, len(lut) - 1).astype(np.intp)
    return lut[idx]


def tile_size_for(grid: int, target: int = 160) -> int:
    """A tile width near ``target`` pixels that is a whole multiple of the grid (patches stay square)."""
    return grid * max(1, int(round(target / max(grid, 1))))


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 RGB picture resized to ``size x size`` (area filter when shrinking)."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(image)
    method = Image.Resampling.BOX if size < image.shape[0] else Image.Resampling.NEAREST
    return np.asarray(pil.resize((size, size), method), dtype=np.uint8)


def blend_maps(image: np.ndarray, maps: np.ndarray, zmin: float = 0.0, zmax: float = 1.0, *,
               alpha: float = 0.6, colorscale: str = ATTENTION_SCALE, size: int | None = None) -> np.ndarray:
    """``[n, g, g]`` maps coloured on ``zmin..zmax`` and laid over a greyed copy of the picture.

    The picture is resized to ``size`` (a multiple of ``g``; default: the picture's own size if it
    is one, else the nearest multiple) and turned grey so the colours read as the map alone; each
    patch of a map becomes a solid block. Returns uint8 ``[n, size, size, 3]``.
    """
    maps = np.asarray(maps, dtype=np.float64)
    g = maps.shape[-1]
    if size is None:
        size = image.shape[0] if image.shape[0] % g == 0 else tile_size_for(g, image.shape[0])
    if size % g:
        raise ValueError(f"tile size {size} is not a multiple of the {g}x{g} grid")
    grey = resize_rgb(image, size).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = (1.0 - alpha) * grey[..., None]  # [size, size, 1]
    colours = alpha * colorize(maps, zmin, zmax, colorscale).astype(np.float64)  # [n, g, g, 3]
    block = size // g
    out = np.empty(maps.shape[:-2] + (size, size, 3), dtype=np.uint8)
    for i, c in enumerate(colours.reshape((-1, g, g, 3))):
        blended = grey + np.repeat(np.repeat(c, block, axis=0), block, axis=1)
        out.reshape((-1, size, size, 3))[i] = np.clip(np.rint(blended), 0, 255)
    return out


def blend_map(image: np.ndarray, values: np.ndarray, zmin: float = 0.0, zmax: float = 1.0, **kwargs) -> np.ndarray:
    """One ``[g, g]`` map over the greyed picture: :func:`blend_maps` for a single map, ``[size, size, 3]``."""
    return blend_maps(image, np.asarray(values)[None], zmin, zmax, **kwargs)[0]


def overlay_tiles(image: np.ndarray, maps: np.ndarray, zmin: float = 0.0, zmax: float = 1.0, *,
                  tile: int | None = None, colorscale: str = ATTENTION_SCALE, fmt: str = "jpeg") -> list[str]:
    """One blended picture per map (``maps``: ``[n, g, g]``), as data URIs for :func:`overlay_facets`.

    JPEG by default: a dozen tiles encode in milliseconds and weigh a few kilobytes each.
    """
    maps = np.asarray(maps)
    size = tile or tile_size_for(maps.shape[-1], 160 if len(maps) <= 16 else 96)  # many heads: smaller panels
    return [image_source(t, fmt) for t in blend_maps(image, maps, zmin, zmax, size=size, colorscale=colorscale)]


def colorbar_trace(title: str, zmin: float, zmax: float, colorscale: str = ATTENTION_SCALE, **colorbar) -> go.Scatter:
    """An invisible trace whose only job is to draw a colour bar for pictures blended in numpy."""
    return go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                      marker=dict(color=[zmin], cmin=zmin, cmax=zmax, colorscale=colorscale, showscale=True,
                                  colorbar=dict(title=dict(text=title, side="top"), **colorbar)))


# ---------------------------------------------------------------------------------- maps of one layer
def patch_grid(row: np.ndarray, grid: int) -> np.ndarray:
    """The patch part of one attention row ``[T]`` (CLS first) as a ``[g, g]`` map."""
    row = np.asarray(row)
    start = row.shape[-1] - grid * grid  # the patches are the last g*g tokens, after any prefix tokens
    if start < 0:
        raise ValueError(f"{row.shape[-1]} tokens do not fit a {grid}x{grid} grid")
    return row[..., start:].reshape(row.shape[:-1] + (grid, grid))


def query_maps(probs: np.ndarray, query_patch: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Where every head looks from one query patch.

    ``probs``: ``[H, T, T]`` (CLS first). Returns ``(maps [H, g, g], to_cls [H])``: each head's
    attention weights from the query patch's row over the patches, and the weight it gives CLS.
    """
    probs = np.asarray(probs)
    token = probs.shape[-1] - grid * grid + int(query_patch)  # after CLS and any other prefix tokens
    rows = probs[:, token, :]  # [H, T]
    return patch_grid(rows, grid), rows[:, 0]


def cls_maps(probs: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """What the CLS token looks at in each head: ``(maps [H, g, g], to_itself [H])``, raw weights
    (:func:`vit_explain.analysis.cls_attention_map` with the heads kept)."""
    probs = np.asarray(probs)
    return f32(analysis.cls_attention_map(probs, grid, head_fusion=None)), probs[:, 0, 0]


# The numbers below have their one definition in vit_explain.analysis; the names stay here for
# existing callers.
uniform_attention_distance = analysis.uniform_attention_distance
head_contributions = analysis.head_contributions


def block_mean(matrix: np.ndarray, max_rows: int | None = None, max_cols: int | None = None,
               keep_first: bool = False) -> tuple[np.ndarray, int, int]:
    """Shrink a matrix for display by averaging blocks of rows/columns.

    With ``keep_first`` the first row and column (the CLS token) stay on their own and only the
    rest is averaged. Returns ``(shrunk, row_block, col_block)``; blocks of 1 mean untouched.
    """
    m = np.asarray(matrix, dtype=np.float32)

    def shrink(a: np.ndarray, axis: int, limit: int | None) -> tuple[np.ndarray, int]:
        n = a.shape[axis]
        if limit is None or n <= limit:
            return a, 1
        head = 1 if keep_first else 0
        block = math.ceil((n - head) / (limit - head))
        rest = np.moveaxis(np.take(a, np.arange(head, n), axis=axis), axis, 0)
        groups = [rest[i:i + block].mean(axis=0) for i in range(0, rest.shape[0], block)]
        pooled = np.moveaxis(np.stack(groups), 0, axis)
        if head:
            pooled = np.concatenate([np.take(a, [0], axis=axis), pooled], axis=axis)
        return pooled, block

    m, rb = shrink(m, 0, max_rows)
    m, cb = shrink(m, 1, max_cols)
    return m, rb, cb


# ---------------------------------------------------------------------------------- figures
def query_picker(image: np.ndarray, patch_size: int, query_patch: int, title: str, *, height: int = 400,
                 source: str | None = None) -> go.Figure:
    """The picture with its patch grid, clickable patches and the query patch outlined.

    ``source``: a ready data URI of ``image`` (cached by the caller); encoded here if missing.
    """
    size = image.shape[0]
    fig = go.Figure(go.Image(source=source or image_source(image), hoverinfo="skip"))
    grid_lines(fig, size, patch_size, width=0.6)
    click_layer(fig, size, patch_size, selected=query_patch)
    fig.update_xaxes(range=[-0.5, size - 0.5], showgrid=False, zeroline=False, showticklabels=False, ticks="")
    fig.update_yaxes(range=[size - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x", constrain="domain",
                     showticklabels=False, ticks="")
    fig.update_layout(dragmode=False, clickmode="event+select")
    fig = style(fig, title, height=height)
    fig.update_layout(margin=dict(l=4, r=4, t=50, b=4))
    return fig


def panel_layout(n: int, cols: int, *, h_gap: float = 0.012, v_gap: float = 0.06,
                 titles: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Axes for ``n`` equal panels in a grid (what make_subplots does, without its overhead).

    Returns ``(layout, annotations)``: ``xaxis``/``yaxis``, ``xaxis2``/``yaxis2`` ... keyed for
    ``go.Figure(layout=...)``, and one title annotation above each panel. Panel ``i`` uses the
    axes ``x{i+1}``/``y{i+1}`` (``x``/``y`` for the first).
    """
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    width = (1.0 - h_gap * (cols - 1)) / cols
    height = (1.0 - v_gap * (rows - 1)) / rows
    layout, notes = {}, []
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = c * (width + h_gap)
        y1 = 1.0 - r * (height + v_gap)
        suffix = "" if i == 0 else str(i + 1)
        bare = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False, constrain="domain")
        layout[f"xaxis{suffix}"] = dict(domain=[_unit(x0), _unit(x0 + width)], anchor=f"y{suffix}", **bare)
        layout[f"yaxis{suffix}"] = dict(domain=[_unit(y1 - height), _unit(y1)], anchor=f"x{suffix}",
                                        scaleanchor=f"x{suffix}", autorange="reversed", **bare)
        if titles:
            notes.append(dict(text=titles[i], x=x0 + width / 2, y=y1, xref="paper", yref="paper",
                              xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=12)))
    return layout, notes


def _unit(x: float) -> float:
    return float(min(1.0, max(0.0, round(x, 6))))


def overlay_facets(tiles: list[str], maps: np.ndarray, titles: list[str], title: str, *, zmin: float = 0.0,
                   zmax: float = 1.0, colorbar_title: str = "attention", colorscale: str = ATTENTION_SCALE,
                   mark_patch: int | None = None, cols: int | None = None, cell: int | None = None,
                   hover_label: str = "attention") -> go.Figure:
    """Small multiples of pictures blended with a map each (one per head), one shared colour bar.

    ``tiles``: data URIs from :func:`overlay_tiles`; ``maps``: the ``[n, g, g]`` values they show
    (sent as float32 for the hover read-out). Every panel is drawn in patch coordinates (patch
    ``(r, c)`` is centred on ``x = c, y = r``). ``mark_patch`` outlines one patch (the query) in
    every panel.
    """
    maps = f32(maps)
    n, g = len(tiles), maps.shape[-1]
    cols = max(1, min(cols or facet_columns(n), n))
    rows = -(-n // cols)
    # panel + its two-line title, in pixels, for a chart about 420 px wide (half of a 1024 px screen's page)
    cell = cell or int(min(230, max(110, 380 / cols + 46)))
    v_gap = min(0.16, 0.45 / rows) if rows > 1 else 0.0
    layout, notes = panel_layout(n, cols, v_gap=v_gap, titles=titles)
    size = _uri_size(tiles[0]) if tiles else g
    px = 1.0 / (size / g)  # one tile pixel in patch units
    clear = [[0.0, "rgba(0,0,0,0)"], [1.0, "rgba(0,0,0,0)"]]
    traces, shapes = [], []
    for i, uri in enumerate(tiles):
        suffix = "" if i == 0 else str(i + 1)
        axes = dict(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        traces.append(go.Image(source=uri, x0=px / 2 - 0.5, dx=px, y0=px / 2 - 0.5, dy=px, hoverinfo="skip", **axes))
        traces.append(go.Heatmap(z=maps[i], colorscale=clear, showscale=False, zmin=zmin, zmax=zmax,
                                 hovertemplate=f"{titles[i]}<br>patch row %{{y}}, col %{{x}}"
                                               f"<br>{hover_label} %{{z:.4f}}<extra></extra>", **axes))
        if mark_patch is not None:
            pr, pc = divmod(int(mark_patch), g)
            shapes.append(dict(type="rect", x0=pc - 0.5, x1=pc + 0.5, y0=pr - 0.5, y1=pr + 0.5, xref=axes["xaxis"],
                               yref=axes["yaxis"], line=dict(color=QUERY_COLOR, width=2)))
        layout[f"xaxis{suffix}"]["range"] = [-0.5, g - 0.5]
        layout[f"yaxis{suffix}"]["range"] = [g - 0.5, -0.5]
        layout[f"yaxis{suffix}"].pop("autorange")
    traces.append(colorbar_trace(colorbar_title, zmin, zmax, colorscale, len=min(1.0, 0.75 + 0.1 * rows),
                                 thickness=12, y=0.5, yanchor="middle"))
    fig = go.Figure(data=traces, layout=dict(shapes=shapes, annotations=notes, **layout))
    fig = style(fig, title, height=rows * cell + 90)
    fig.update_layout(margin=dict(l=10, r=10, t=84, b=10))
    return fig


def facet_columns(n: int) -> int:
    """Columns for ``n`` head panels, wrapped onto rows so each panel stays near 100 px or more on a
    1024 px screen: 2 up to 4 heads, 3 up to 9, 4 up to 16 (12 heads: 3 rows of 4), then 6."""
    if n <= 2:
        return n
    if n <= 4:
        return 2
    if n <= 9:
        return 3
    return 4 if n <= 16 else 6


def _uri_size(uri: str) -> int:
    from PIL import Image

    data = base64.b64decode(uri.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).size[0]


def head_split(vector: np.ndarray, num_heads: int, head: int, title: str, *, height: int = 260) -> go.Figure:
    """One token's D-vector read as H rows of d numbers (``"(h d) -> h d"``), the chosen head outlined."""
    v = f32(vector)
    d = v.shape[-1] // num_heads
    grid = v.reshape(num_heads, d)
    bound = float(np.abs(grid).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=grid, zmin=-bound, zmax=bound, zmid=0.0, colorscale=SIGNED_SCALE,
        colorbar=dict(title=dict(text="value", side="right"), thickness=12),
        hovertemplate="head %{y}, head dim %{x} (column %{customdata} of D): %{z:.4f}<extra></extra>",
        customdata=np.arange(v.shape[-1], dtype=np.int32).reshape(num_heads, d)))
    fig.add_shape(type="rect", x0=-0.5, x1=d - 0.5, y0=head - 0.5, y1=head + 0.5,
                  line=dict(color=QUERY_COLOR, width=2.5))
    fig.update_yaxes(autorange="reversed", dtick=1 if num_heads <= 16 else None)
    return style(fig, title, height=height, x_title="head dimension (d)", y_title="head (h)")


def qkv_heatmaps(q: np.ndarray, k: np.ndarray, v: np.ndarray, title: str, *, height: int = 470) -> go.Figure:
    """Q, K and V of one head (each ``[T, d]``, tokens down, head dimensions across), one shared
    colour scale centred on 0. Big matrices are averaged in blocks for display (noted in the titles)."""
    mats = [np.asarray(m, dtype=np.float32) for m in (q, k, v)]
    shrunk = [block_mean(m, MAX_DISPLAY_TOKENS, MAX_DISPLAY_DIMS, keep_first=False) for m in mats]
    note = ""
    rb, cb = shrunk[0][1], shrunk[0][2]
    if rb > 1 or cb > 1:
        note = f" (averaged in blocks of {rb} tokens x {cb} dims)"
    names = ["Q (queries)", "K (keys)", "V (values)"]
    layout, notes = panel_layout(3, 3, h_gap=0.04, titles=names)
    bound = max(float(np.abs(m).max()) for m, _, _ in shrunk) or 1.0
    traces = []
    for i, (m, _, _) in enumerate(shrunk):
        suffix = "" if i == 0 else str(i + 1)
        traces.append(go.Heatmap(
            z=f32(m), zmin=-bound, zmax=bound, zmid=0.0, colorscale=SIGNED_SCALE, showscale=(i == 0),
            colorbar=dict(title=dict(text="value", side="right")), xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            hovertemplate=f"{names[i]}<br>token %{{y}}, dim %{{x}}: %{{z:.4f}}<extra></extra>"))
        layout[f"xaxis{suffix}"].update(showticklabels=True, title=dict(text="head dimension"), constrain=None)
        layout[f"yaxis{suffix}"].update(showticklabels=(i == 0), scaleanchor=None, constrain=None)
    layout["yaxis"]["title"] = dict(text="token (0 = CLS)")
    fig = go.Figure(data=traces, layout=dict(annotations=notes, **layout))
    return style(fig, title + note, height=height)


def _mark_cls(fig: go.Figure, n: int) -> None:
    """Outline row 0 and column 0 (the CLS token) of an ``n x n`` token matrix."""
    for kw in (dict(x0=-0.5, x1=n - 0.5, y0=-0.5, y1=0.5), dict(x0=-0.5, x1=0.5, y0=-0.5, y1=n - 0.5)):
        fig.add_shape(type="rect", line=dict(color=CLS_COLOR, width=1.5), **kw)


def token_matrix(matrix: np.ndarray, title: str, *, kind: str, zmax: float = 1.0, height: int = 460,
                 fixed: bool = True) -> go.Figure:
    """A ``[T, T]`` query-by-key matrix with the CLS row and column outlined.

    ``kind="scores"``: raw scores, diverging colours centred on 0 over a symmetric range;
    ``kind="probs"``: softmax weights on a scale from 0 to ``zmax`` (``fixed``: the full 0..1; else
    fitted to what is shown, said on the colour bar).
    """
    m, rb, _ = block_mean(matrix, MAX_DISPLAY_TOKENS, MAX_DISPLAY_TOKENS, keep_first=True)
    n = m.shape[0]
    if kind == "scores":
        bound = float(np.abs(m).max()) or 1.0
        colour = dict(zmin=-bound, zmax=bound, zmid=0.0, colorscale=SIGNED_SCALE)
        bar_title = "q·k / √d"
    elif kind == "probs":
        colour = dict(zmin=0.0, zmax=float(zmax), colorscale=ATTENTION_SCALE)
        bar_title = scale_label("attention", 0.0, float(zmax), fixed)
    else:
        raise ValueError(f"kind must be 'scores' or 'probs', not {kind!r}")
    fig = go.Figure(go.Heatmap(z=f32(m), colorbar=dict(title=dict(text=bar_title, side="top"), thickness=12),
                               hovertemplate="query %{y} → key %{x}: %{z:.4f}<extra></extra>", **colour))
    _mark_cls(fig, n)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_xaxes(constrain="domain")
    axis = "token (0 = CLS)" if rb == 1 else f"token block (0 = CLS, then blocks of {rb} patches)"
    return style(fig, title, height=height, x_title="key " + axis, y_title="query " + axis)


def cls_destinations(probs: np.ndarray, prefix_names: list[str], grid: int,
                     artefacts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`vit_explain.analysis.cls_destinations` as float32: {group name: [H] shares of CLS's attention}."""
    return {k: f32(v) for k, v in analysis.cls_destinations(probs, prefix_names, grid, artefacts).items()}


def cls_destination_bars(groups: dict[str, np.ndarray], title: str, height: int = 340) -> go.Figure:
    """Stacked bars per head: the share of the CLS token's attention each group of tokens receives."""
    colours = {"CLS itself": "#888888", "distillation token": "#b279a2", "register tokens": "#f58518",
               "high-norm patches": "#e45756", "other patches": "#4c78a8"}
    fig = go.Figure()
    for name, share in groups.items():
        heads = [f"h{h}" for h in range(len(share))]
        fig.add_trace(go.Bar(x=heads, y=share, name=name, marker_color=colours.get(name, "#72b7b2"),
                             hovertemplate=f"%{{x}}: %{{y:.1%}} to {name}<extra></extra>"))
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return style(fig, title, height=height, x_title="head", y_title="share of CLS attention")


def reference_line(fig: go.Figure, y: float, label: str) -> None:
    """A dashed horizontal reference line, named in the legend below the chart (a label written on the line
    sat on top of the bars or dots that reach it)."""
    fig.add_hline(y=y, line=dict(color="#555", dash="dash"))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="#555", dash="dash"), name=label,
                             hoverinfo="skip", showlegend=True))
    fig.update_layout(showlegend=True, legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.25, yanchor="top"))


def entropy_bars(entropy: np.ndarray, num_tokens: int, title: str, *, chosen: int | None = None,
                 height: int = 340) -> go.Figure:
    """Attention entropy of each head (nats) with ``log T`` (attention spread evenly) as a reference."""
    entropy = f32(entropy)
    labels = [f"h{h}" for h in range(len(entropy))]
    colours = [QUERY_COLOR if h == chosen else "#4c78a8" for h in range(len(entropy))]
    fig = go.Figure(go.Bar(x=labels, y=entropy, marker_color=colours, showlegend=False,
                           hovertemplate="%{x}: %{y:.3f} nats<extra></extra>"))
    uniform = math.log(num_tokens)
    reference_line(fig, uniform, f"uniform attention: log {num_tokens} = {uniform:.2f}")
    fig.update_yaxes(range=[0, uniform * 1.12])
    return style(fig, title, height=height, x_title="head", y_title="entropy (nats)")


def distance_bars(distance: np.ndarray, uniform: float, title: str, *, chosen: int | None = None,
                  height: int = 340) -> go.Figure:
    """Mean attention distance of each head (pixels) with the value of evenly spread attention."""
    distance = f32(np.nan_to_num(distance, nan=0.0))
    labels = [f"h{h}" for h in range(len(distance))]
    colours = [QUERY_COLOR if h == chosen else "#54a24b" for h in range(len(distance))]
    fig = go.Figure(go.Bar(x=labels, y=distance, marker_color=colours, showlegend=False,
                           hovertemplate="%{x}: %{y:.1f} px<extra></extra>"))
    reference_line(fig, uniform, f"uniform attention: {uniform:.1f} px")
    top = max(float(distance.max()) if len(distance) else 0.0, uniform) * 1.15 or 1.0
    fig.update_yaxes(range=[0, top])
    return style(fig, title, height=height, x_title="head", y_title="mean distance (pixels)")


def token_norm_lines(series: dict[str, np.ndarray], title: str, *, height: int = 400) -> go.Figure:
    """Per-token L2 norms of a few ``[T]`` series (e.g. context before and after the projection)."""
    fig = go.Figure()
    for name, values in series.items():
        values = f32(values)
        fig.add_trace(go.Scatter(x=np.arange(len(values), dtype=np.int32), y=values, mode="lines", name=name,
                                 hovertemplate=f"{name}<br>token %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig = style(fig, title, height=height, x_title="token (0 = CLS)", y_title="L2 norm")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, x=0.0), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def contribution_heatmap(norms: np.ndarray, title: str, *, height: int = 360) -> go.Figure:
    """``[H, T]`` norms of each head's share of the attention output, heads down, tokens across."""
    m, _, cb = block_mean(norms, None, MAX_DISPLAY_TOKENS, keep_first=True)
    fig = go.Figure(go.Heatmap(z=f32(m), zmin=0.0, zmax=float(m.max()) or 1.0, colorscale="Blues",
                               colorbar=dict(title=dict(text="L2 norm", side="right")),
                               hovertemplate="head %{y}, token %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", dtick=1)
    axis = "token (0 = CLS)" if cb == 1 else f"token block (0 = CLS, then blocks of {cb})"
    return style(fig, title, height=height, x_title=axis, y_title="head")
