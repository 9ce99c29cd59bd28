"""Figures of the patching page: the patches as tiles, one patch's pixels and embedding, the filters.

Pictures made of many small tiles (the patches, the filter components) are built as ONE uint8
image with gaps between the tiles and shipped as a PNG, which is far smaller than one subplot
per tile or a raw pixel array.
"""

from __future__ import annotations


import numpy as np
import plotly.graph_objects as go
from einops import rearrange

from .. import analysis
from .common import equal_axes, f32, image_source, style

CHANNEL_COLOURS = ("#d62728", "#2ca02c", "#1f77b4")
CHANNEL_NAMES = ("red", "green", "blue")
GAP_FILL = 255  # white between tiles, like the page


# ------------------------------------------------------------------------------- pure helpers
def mosaic(tiles: np.ndarray, cols: int, gap: int = 1, fill=GAP_FILL, gap_y: int | None = None) -> np.ndarray:
    """Lay ``n`` tiles ``[n, h, w]`` or ``[n, h, w, c]`` out on a grid, ``cols`` per row, with gaps.

    Returns one array of the tiles' dtype, ``[rows*(h+gy)-gy, cols*(w+gap)-gap(, c)]``; the gaps
    and any unused cells hold ``fill`` (e.g. 255 for white, NaN for a float map).
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4):
        raise ValueError(f"tiles must be [n, h, w] or [n, h, w, c], got {tiles.shape}")
    n, h, w = tiles.shape[:3]
    cols = max(1, min(int(cols), n))
    rows = -(-n // cols)
    gy = gap if gap_y is None else gap_y
    out = np.full((rows * (h + gy) - gy, cols * (w + gap) - gap) + tiles.shape[3:], fill, dtype=tiles.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gy): r * (h + gy) + h, c * (w + gap): c * (w + gap) + w] = tiles[i]
    return out


def tile_centres(n: int, cols: int, h: int, w: int, gap: int = 1, gap_y: int | None = None) -> np.ndarray:
    """``[n, 2]`` (x, y) pixel centres of the tiles :func:`mosaic` placed."""
    gy = gap if gap_y is None else gap_y
    index = np.arange(n)
    r, c = np.divmod(index, max(1, min(cols, n)))
    return np.stack([c * (w + gap) + (w - 1) / 2, r * (h + gy) + (h - 1) / 2], axis=1).astype(np.float32)


def patch_tiles(image: np.ndarray, patch_size: int) -> np.ndarray:
    """Cut a picture ``[S, S, C]`` into its patches ``[N, P, P, C]``, row by row (the model's order)."""
    return rearrange(np.asarray(image), "(gh p1) (gw p2) c -> (gh gw) p1 p2 c", p1=patch_size, p2=patch_size)


def conv_as_linear(weight: np.ndarray, bias: np.ndarray | None, patch_vector: np.ndarray) -> np.ndarray:
    """:func:`vit_explain.analysis.conv_as_linear` as float32: ``W.reshape(D, C*P*P) @ patch + b``."""
    return f32(analysis.conv_as_linear(weight, bias, patch_vector))


def filter_tiles(components: np.ndarray) -> np.ndarray:
    """Components ``[k, C, P, P]`` scaled to 0..1 -> RGB uint8 tiles ``[k, P, P, 3]`` (grey if C is 1)."""
    comps = np.clip(np.asarray(components, dtype=np.float32), 0.0, 1.0)
    tiles = rearrange(comps, "k c p1 p2 -> k p1 p2 c")
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    elif tiles.shape[-1] != 3:
        tiles = tiles[..., :3] if tiles.shape[-1] > 3 else np.concatenate(
            [tiles, np.zeros(tiles.shape[:-1] + (3 - tiles.shape[-1],), np.float32)], axis=-1)
    return np.rint(tiles * 255).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement (so browsers draw crisp pixels instead of a blur)."""
    factor = max(1, int(factor))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def png_data_uri(image: np.ndarray) -> str:
    return image_source(image, "PNG")


def png_trace(image: np.ndarray, scale: int = 1, fmt: str = "PNG") -> go.Image:
    """An RGB uint8 picture as a compressed image trace (Plotly draws its pixels crisp, not blurred).
    ``scale`` > 1 stores it enlarged that many times while the axes keep the original units."""
    big = upscale(image, scale)
    return go.Image(source=image_source(big, fmt), x0=-0.5 + 0.5 / scale, dx=1.0 / scale, y0=-0.5 + 0.5 / scale,
                    dy=1.0 / scale, hoverinfo="skip")


def compact_images(fig: go.Figure, fmt: str = "JPEG") -> go.Figure:
    """Ship every raw-pixel ``go.Image`` of ``fig`` as a compressed picture instead (same coordinates).

    A 224 x 224 photo as a uint8 array costs ~200 KB of JSON, as a JPEG ~25 KB; fine for a
    background photo, not for pixels someone inspects (keep those raw or PNG).
    """
    for trace in fig.data:
        if trace.type == "image" and trace.z is not None and trace.source is None:
            z = np.asarray(trace.z, dtype=np.uint8)
            trace.update(source=image_source(z, fmt), z=None)
    return fig


def subtitle(fig: go.Figure, text: str) -> go.Figure:
    """A smaller second title line (keeps titles short enough for narrow columns)."""
    # make_subplots puts each panel's title just above the plot area: leave room for both lines above it
    panel_titles = any(a.yref == "paper" and a.yanchor == "bottom" and (a.y or 0) >= 0.99 for a in fig.layout.annotations)
    fig.update_layout(title_subtitle_text=text, margin_t=max(100 if panel_titles else 70, fig.layout.margin.t or 0))
    return fig


def _bare_axes(fig: go.Figure) -> None:
    """Equal axes with no ticks or grid (for pictures made of tiles)."""
    equal_axes(fig)
    for update in (fig.update_xaxes, fig.update_yaxes):
        update(showticklabels=False, showgrid=False, zeroline=False, ticks="", showline=False)


# ------------------------------------------------------------------------------- figures
def patch_tiles_figure(image: np.ndarray, patch_size: int, *, selected: int | None = None,
                       title: str | None = None, height: int = 460) -> go.Figure:
    """The patches pulled apart: a grid of tiles with gaps; click one to select it (customdata = index)."""
    tiles = patch_tiles(image, patch_size)
    n, g = tiles.shape[0], image.shape[0] // patch_size
    gap = max(1, round(patch_size / 6))
    picture = mosaic(tiles, g, gap)
    fig = go.Figure(png_trace(picture, fmt="JPEG"))  # a photo: JPEG is ~5x smaller than PNG
    centres = tile_centres(n, g, patch_size, patch_size, gap)
    rows, cols = np.divmod(np.arange(n), g)
    fig.add_trace(go.Scatter(
        x=centres[:, 0], y=centres[:, 1], customdata=np.arange(n, dtype=np.int32),  # 1-D: one index per point
        text=[f"patch {i} (row {r}, column {c})" for i, r, c in zip(range(n), rows, cols)],
        mode="markers", marker=dict(symbol="square", size=max(6, min(40, int(400 / g))), color="rgba(0,0,0,0)"),
        hovertemplate="%{text}<extra></extra>",
        showlegend=False, name="tiles"))
    if selected is not None and 0 <= selected < n:
        x, y = centres[selected]
        half = patch_size / 2  # the tile's outer pixel edges
        fig.add_shape(type="rect", x0=x - half, x1=x + half, y0=y - half, y1=y + half,
                      line=dict(color="#ff2d55", width=3))
    _bare_axes(fig)
    title = title or f"The {n} patches, pulled apart"
    style(fig, title, height=height, x_title=f"patch column (0 to {g - 1})", y_title=f"patch row (0 to {g - 1})")
    return subtitle(fig, f"{g} x {g} tiles of {patch_size} x {patch_size} pixels, numbered row by row")


def patch_zoom_figure(patch: np.ndarray, title: str, height: int = 330) -> go.Figure:
    """One patch ``[P, P, 3]`` uint8, enlarged, with its pixel coordinates."""
    p = patch.shape[0]
    fig = go.Figure(go.Image(z=np.asarray(patch, dtype=np.uint8),
                             hovertemplate="pixel (x %{x}, y %{y}): RGB %{z}<extra></extra>"))
    equal_axes(fig)
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(showgrid=False)
    return style(fig, title, height=height, x_title=f"x in the patch (0 to {p - 1})", y_title="y in the patch")


def _step_area(x: np.ndarray, y: np.ndarray, name: str, colour: str, hovertemplate: str) -> go.Scatter:
    """Bars without gaps, drawn as one filled step line (one SVG path, however many entries)."""
    return go.Scatter(x=x, y=y, name=name, mode="lines", line=dict(shape="hvh", width=0.6, color=colour),
                      fill="tozeroy", fillcolor=colour, hovertemplate=hovertemplate)


def pixel_vector_figure(vector: np.ndarray, num_channels: int, patch_size: int, title: str,
                        height: int = 330) -> go.Figure:
    """A patch's raw pixel vector (length C*P*P, order (c, p1, p2)), one filled step per entry, coloured by channel.

    Drawn like bars without gaps, but as one filled step line per channel: 768 separate bars (ViT-B/16)
    cost the browser about 0.1 s of CPU more to draw (benchmarks/browser_cost.py --per-figure).
    """
    v = f32(vector)
    per = patch_size * patch_size
    fig = go.Figure()
    for c in range(num_channels):
        name = CHANNEL_NAMES[c] if num_channels == 3 else f"channel {c}"
        colour = CHANNEL_COLOURS[c % 3] if num_channels == 3 else "#7f7f7f"
        fig.add_trace(_step_area(np.arange(c * per, (c + 1) * per, dtype=np.int32), v[c * per:(c + 1) * per], name,
                                 colour, f"{name}, entry %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    return style(fig, title, height=height, x_title=f"entry of the flattened patch (0 to {v.size - 1})",
                 y_title="pixel value (normalised)")


def embedding_vector_figure(conv_out: np.ndarray, linear_out: np.ndarray | None, title: str,
                            height: int = 330) -> go.Figure:
    """A patch's embedding (length D) as filled steps; the same vector computed as W·x + b traced on top.

    The check is drawn as dots while there are few dimensions and as a line along the tops of the
    steps beyond 200 (768 separate dots and bars cost the browser about 0.15 s of CPU more to draw).
    """
    conv_out = f32(conv_out)
    d = conv_out.size
    x = np.arange(d, dtype=np.int32)
    fig = go.Figure(_step_area(x, conv_out, "Conv2d output (the model)", "#4a90c2",
                               "dimension %{x}: %{y:.4f}<extra>conv</extra>"))
    if linear_out is not None:
        many = d > 200
        fig.add_trace(go.Scatter(x=x, y=f32(linear_out), mode="lines" if many else "markers",
                                 name="W · patch + b (one matrix product)", marker=dict(size=5, color="#ff7f0e"),
                                 line=dict(color="#ff7f0e", width=1.2, shape="hvh"),
                                 hovertemplate="dimension %{x}: %{y:.4f}<extra>W·x+b</extra>"))
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    return style(fig, title, height=height, x_title=f"hidden dimension (0 to {d - 1})", y_title="value")


def filter_pca_figure(components: np.ndarray, ratios: np.ndarray, *, cols: int = 7, title: str | None = None,
                      height: int | None = None) -> go.Figure:
    """Principal components of the patch-embedding filters as RGB tiles (Dosovitskiy et al. 2021, Fig. 7 left).

    ``components`` ``[k, C, P, P]`` scaled to 0..1 and ``ratios`` ``[k]`` as returned by
    :func:`vit_explain.analysis.patch_filter_pca`. Each tile is labelled with its rank and the
    share of the filters' variance it explains.
    """
    tiles = filter_tiles(components)
    k, p = tiles.shape[0], tiles.shape[1]
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    gap = max(1, round(p / 4))
    picture = mosaic(tiles, cols, gap)
    fig = go.Figure(png_trace(picture))
    centres = tile_centres(k, cols, p, p, gap)
    ratios = f32(ratios)
    fig.add_trace(go.Scatter(
        x=centres[:, 0], y=centres[:, 1], mode="markers", marker=dict(size=1, color="rgba(0,0,0,0)"),
        customdata=np.stack([np.arange(1, k + 1), ratios * 100], axis=1).astype(np.float32),
        hovertemplate="component %{customdata[0]:.0f}: %{customdata[1]:.2f}% of the variance<extra></extra>",
        showlegend=False))
    fig.update_layout(annotations=[  # one update, not k add_annotation calls (each validates the layout)
        dict(x=float(centres[i, 0]), y=float(centres[i, 1] + p / 2), yanchor="top", yshift=-1, showarrow=False,
             text=f"{i + 1}", font=dict(size=12, color="white"), bgcolor="rgba(0,0,0,0.45)", borderpad=1)
        for i in range(k)])
    _bare_axes(fig)
    title = title or f"Principal components of the {p} x {p} filters"
    style(fig, title, height=height or max(260, int(520 * rows / cols) + 120),
          x_title="component rank, left to right then top to bottom")
    return subtitle(fig, f"the first {k}, each shown as an RGB picture")


def variance_figure(ratios: np.ndarray, *, title: str = "Variance explained",
                    height: int = 320) -> go.Figure:
    """Bars: variance explained per component; line: cumulative share."""
    ratios = f32(ratios)
    k = ratios.size
    x = np.arange(1, k + 1, dtype=np.int32)
    fig = go.Figure(go.Bar(x=x, y=ratios, name="this component", marker_color="#4a90c2",
                           hovertemplate="component %{x}: %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=f32(np.cumsum(ratios)), name="cumulative", mode="lines+markers",
                             line=dict(color="#ff7f0e"), hovertemplate="first %{x}: %{y:.1%}<extra></extra>"))
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    fig.update_layout(legend=dict(x=0.02, y=0.98, xanchor="left", yanchor="top", bgcolor="rgba(255,255,255,0.7)"))
    style(fig, title, height=height, x_title="principal component", y_title="share of the filters' variance")
    return subtitle(fig, "how much of the filters' variety each component accounts for")

