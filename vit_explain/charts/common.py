"""Shared figure builders for every stage page."""

from __future__ import annotations

import collections
import threading

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: Colour scale for attention weights (softmax outputs, 0..1).
ATTENTION_SCALE = "Viridis"
#: Diverging scale for signed values (embeddings, scores, similarities), centred on 0.
SIGNED_SCALE = "RdBu_r"
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13)


def attention_range(*maps, fixed: bool = False) -> tuple[float, float]:
    """The colour range of an attention figure: 0 to the largest weight it shows, or 0..1 when ``fixed``.

    One range for all the panels of a figure (every head, every layer), so they stay comparable. Trained
    attention spread over many patches peaks far below 1 (0.08 is typical), and random weights give
    about 1 / tokens everywhere: on a fixed 0..1 scale both look blank.
    """
    if fixed:
        return 0.0, 1.0
    top = max((float(np.nanmax(m)) for m in maps if np.size(m)), default=0.0)
    return 0.0, (top if np.isfinite(top) and top > 0 else 1.0)


def scale_label(what: str, zmin: float, zmax: float, fixed: bool) -> str:
    """A colour bar title that says the scale: "attention<br>fitted 0–0.083" or "attention<br>fixed 0–1"."""
    if fixed:
        return f"{what}<br>fixed 0–1"
    return f"{what}<br>fitted {_short(zmin)}–{_short(zmax)}"


def _short(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def f32(a) -> np.ndarray:
    """A contiguous float32 copy of ``a`` (what every trace ships)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def style(fig: go.Figure, title: str, *, height: int | None = None, x_title: str | None = None,
          y_title: str | None = None) -> go.Figure:
    """Title, fonts and margins shared by every figure."""
    fig.update_layout(title=dict(text=title, x=0.0, xanchor="left"), font=FONT,
                      margin=dict(l=10, r=10, t=60, b=10), height=height)
    # axis titles and tick labels push the margins out instead of being cut off at the figure's edge
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def image_source(image: np.ndarray, fmt: str = "auto", quality: int = 90) -> str:
    """An RGB uint8 picture as a base64 ``data:`` URI for ``go.Image(source=...)``.

    ``fmt``: "png" (exact pixels), "jpeg" (photos, several times smaller) or "auto" (both, keep the
    smaller: flat synthetic pictures stay lossless PNG, photos become JPEG). Sending a picture this
    way is much lighter than a ``z`` array of its pixels. Pages redraw the same picture on every
    rerun, and encoding a 224 px photo twice takes ~10 ms, so recent results are remembered.
    """
    import hashlib

    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    key = (hashlib.blake2b(pixels.tobytes(), digest_size=16).digest(), pixels.shape, fmt.lower(), quality)
    with _SOURCES_LOCK:
        if key in _SOURCES:
            _SOURCES.move_to_end(key)
            return _SOURCES[key]
    uri = _encode(pixels, fmt.lower(), quality)
    with _SOURCES_LOCK:
        _SOURCES[key] = uri
        while len(_SOURCES) > _SOURCES_MAX:
            _SOURCES.popitem(last=False)
    return uri


_SOURCES: "collections.OrderedDict[tuple, str]" = collections.OrderedDict()
_SOURCES_LOCK = threading.Lock()
_SOURCES_MAX = 64  # a few sessions' pictures; each entry is a compressed image (tens of KB)


def _encode(pixels: np.ndarray, fmt: str, quality: int) -> str:
    import base64
    import io

    from PIL import Image

    picture = Image.fromarray(pixels)
    best = None
    for name in {"png": ["PNG"], "jpeg": ["JPEG"], "auto": ["PNG", "JPEG"]}[fmt]:
        buffer = io.BytesIO()
        picture.save(buffer, format=name, **({"quality": quality} if name == "JPEG" else {"compress_level": 6}))
        if best is None or buffer.tell() < len(best[1]):
            best = (name.lower(), buffer.getvalue())
    return f"data:image/{best[0]};base64," + base64.b64encode(best[1]).decode("ascii")


def image_trace(image: np.ndarray) -> go.Image:
    """An RGB uint8 [H, W, 3] picture as a Plotly trace (pixel centres at integer coordinates, y downwards).

    Sent as a compressed data URI rather than a pixel array (a 224 x 224 photo: ~15 KB instead of ~200 KB).
    """
    return go.Image(source=image_source(image), x0=0, dx=1, y0=0, dy=1, hoverinfo="skip")


def grid_lines(fig: go.Figure, image_size: int, patch_size: int, row=None, col=None, color="rgba(255,255,255,0.85)",
               width: float = 1.0, halo: str | None = "rgba(0,0,0,0.35)") -> None:
    """Draw the patch boundaries on an image axis: light lines on a slightly wider dark ``halo``, so the
    grid shows on white backgrounds (a drawing, a sky) as well as on dark ones (two traces; one with ``halo=None``)."""
    edges = np.arange(0, image_size + 1, patch_size, dtype=np.float32) - 0.5
    xs, ys = [], []
    for e in edges:
        xs += [e, e, None]
        ys += [-0.5, image_size - 0.5, None]
        xs += [-0.5, image_size - 0.5, None]
        ys += [e, e, None]
    lines = [(halo, width + 1.0)] if halo is not None else []
    for line_color, line_width in lines + [(color, width)]:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=line_color, width=line_width),
                                 hoverinfo="skip", showlegend=False), row=row, col=col)


def image_with_grid(image: np.ndarray, patch_size: int, title: str, *, height: int = 460,
                    label_patches: bool = False) -> go.Figure:
    """The picture the model saw with its patch grid on top."""
    size = image.shape[0]
    fig = go.Figure(image_trace(image))
    grid_lines(fig, size, patch_size)
    if label_patches:
        g = size // patch_size
        centres = (np.arange(g) + 0.5) * patch_size - 0.5
        cx, cy = np.meshgrid(centres, centres)
        fig.add_trace(go.Scatter(x=f32(cx.ravel()), y=f32(cy.ravel()), mode="text",
                                 text=[str(i) for i in range(g * g)], textfont=dict(color="white", size=12),
                                 hoverinfo="skip", showlegend=False))
    equal_axes(fig)
    return style(fig, title, height=height, x_title="x (pixels)", y_title="y (pixels)")


def equal_axes(fig: go.Figure, row=None, col=None) -> None:
    fig.update_yaxes(scaleanchor="x", autorange="reversed", constrain="domain", row=row, col=col)
    fig.update_xaxes(constrain="domain", row=row, col=col)


def heatmap(z: np.ndarray, title: str, *, x_title: str, y_title: str, colorbar_title: str,
            zmin: float | None = None, zmax: float | None = None, colorscale: str = SIGNED_SCALE,
            zmid: float | None = None, height: int = 420, x=None, y=None, hover: str | None = None) -> go.Figure:
    """A labelled heatmap with a titled colour bar. Rows run top to bottom."""
    trace = go.Heatmap(z=f32(z), x=x, y=y, zmin=zmin, zmax=zmax, zmid=zmid, colorscale=colorscale,
                       colorbar=dict(title=dict(text=colorbar_title, side="right")),
                       hovertemplate=hover or "row %{y}, column %{x}: %{z:.4f}<extra></extra>")
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed")
    return style(fig, title, height=height, x_title=x_title, y_title=y_title)


def overlay_map(image: np.ndarray, values: np.ndarray, title: str, *, colorbar_title: str, zmin=0.0, zmax=None,
                colorscale: str = ATTENTION_SCALE, opacity: float = 0.6, height: int = 460) -> go.Figure:
    """A [g, g] map stretched over the picture, semi-transparent, with a colour bar."""
    size = image.shape[0]
    g = values.shape[0]
    step = size / g
    fig = go.Figure(image_trace(image))
    fig.add_trace(go.Heatmap(z=f32(values), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step,
                             zmin=zmin, zmax=zmax, colorscale=colorscale, opacity=opacity,
                             colorbar=dict(title=dict(text=colorbar_title, side="right")),
                             hovertemplate="patch row %{y:.0f}, col %{x:.0f}: %{z:.4f}<extra></extra>"))
    equal_axes(fig)
    return style(fig, title, height=height, x_title="x (pixels)", y_title="y (pixels)")


def click_layer(fig: go.Figure, image_size: int, patch_size: int, row=None, col=None, selected: int | None = None
                ) -> None:
    """Transparent square markers at the patch centres, so a click on the picture selects a patch.

    Heatmap and image traces send no selection events in Streamlit; a scatter does. The marker's
    ``customdata`` is the patch index (row-major). ``hoverinfo="none"`` keeps it clickable while
    showing nothing; "skip" would make it unclickable.
    """
    g = image_size // patch_size
    centres = (np.arange(g, dtype=np.float32) + 0.5) * patch_size - 0.5
    cx, cy = np.meshgrid(centres, centres)
    fig.add_trace(go.Scatter(
        x=f32(cx.ravel()), y=f32(cy.ravel()), customdata=np.arange(g * g, dtype=np.int32), mode="markers",
        marker=dict(symbol="square", size=max(6, min(40, int(420 / g))), color="rgba(0,0,0,0)",
                    line=dict(width=0)),
        hoverinfo="none", showlegend=False, name="patches"), row=row, col=col)
    if selected is not None:
        r, c = divmod(int(selected), g)
        fig.add_shape(type="rect", x0=c * patch_size - 0.5, x1=(c + 1) * patch_size - 0.5, y0=r * patch_size - 0.5,
                      y1=(r + 1) * patch_size - 0.5, line=dict(color="#ff2d55", width=3), row=row, col=col)


def clicked_patch(event) -> int | None:
    """The patch index a plotly_chart selection event points at (None if nothing usable was clicked).

    The click layer's ``customdata`` is the patch index; depending on the Plotly/Streamlit
    versions it comes back as a number, a one-element list or a dict. Anything else is ignored.
    """
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError, IndexError):
        return None
    for point in points or []:
        if not isinstance(point, dict):
            continue
        custom = point.get("customdata")
        if isinstance(custom, dict):
            custom = next(iter(custom.values()), None)
        if isinstance(custom, (list, tuple)):
            custom = custom[0] if custom else None
        try:
            return int(custom)
        except (TypeError, ValueError):
            continue
    return None


def facets(maps: np.ndarray, titles: list[str], title: str, *, colorbar_title: str, zmin=0.0, zmax=1.0,
           colorscale: str = ATTENTION_SCALE, cols: int = 6, cell: int = 150, image: np.ndarray | None = None
           ) -> go.Figure:
    """Small multiples: one [g, g] map per panel (e.g. one per head), on one shared colour scale."""
    n = len(maps)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.08 if rows > 1 else 0.02)
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=f32(m), zmin=zmin, zmax=zmax, colorscale=colorscale, showscale=(i == 0),
                                 colorbar=dict(title=dict(text=colorbar_title, side="right")),
                                 hovertemplate=f"{titles[i]}<br>row %{{y}}, col %{{x}}: %{{z:.4f}}<extra></extra>"),
                      row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x")
    for i in range(n):
        axis = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
    return style(fig, title, height=max(220, rows * cell + 80))


def bar(labels: list[str], values: np.ndarray, title: str, *, x_title: str, y_title: str, height: int = 360,
        horizontal: bool = False, color=None) -> go.Figure:
    values = f32(values)
    if horizontal:
        fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=color,
                               hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    else:
        fig = go.Figure(go.Bar(x=labels, y=values, marker_color=color, hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    return style(fig, title, height=height, x_title=x_title, y_title=y_title)


def figure_bytes(fig: go.Figure) -> int:
    """Size of the JSON Streamlit sends for this figure (for payload budgets)."""
    import plotly.io as pio

    return len(pio.to_json(fig, validate=False).encode())


# ---------------------------------------------------------------------------------- motion drawn by the browser
def play_buttons(first_frame: str, *, back: bool = True, frame_ms: int = 260, y: float = -0.02) -> dict:
    """An ``updatemenus`` entry: buttons under the plot that play every frame from the start and (``back``) go
    back to the first one. Plotly never starts an animation by itself: nothing moves until "Play" is pressed,
    and playing costs the server nothing (the frames are in the figure)."""
    buttons = [dict(label="▶ Play", method="animate",
                    args=[None, dict(frame=dict(duration=frame_ms, redraw=True), transition=dict(duration=0),
                                     fromcurrent=False, mode="immediate")])]
    if back:
        buttons.append(dict(label="Back to the start", method="animate",
                            args=[[first_frame], dict(frame=dict(duration=0, redraw=True), transition=dict(duration=0),
                                                      mode="immediate")]))
    return dict(type="buttons", direction="left", buttons=buttons, showactive=False, x=0.0, xanchor="left",
                y=y, yanchor="top", pad=dict(t=4, r=6), font=dict(size=13))


def frame_slider(names: list[str], labels: list[str], *, prefix: str, x: float = 0.2, y: float = -0.02) -> dict:
    """A ``sliders`` entry that shows frame ``names[i]`` (ticked ``labels[i]``) when moved; its current value
    is written after ``prefix``."""
    return dict(active=0, x=x, xanchor="left", len=1.0 - x, y=y, yanchor="top", pad=dict(t=8, b=4),
                currentvalue=dict(prefix=prefix, font=dict(size=13), xanchor="left"), font=dict(size=13), ticklen=4,
                steps=[dict(label=label, method="animate",
                            args=[[name], dict(frame=dict(duration=0, redraw=True), transition=dict(duration=0),
                                               mode="immediate")]) for name, label in zip(names, labels)])
