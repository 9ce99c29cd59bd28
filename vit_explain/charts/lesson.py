"""Figures of the Lesson page, the motion ones included.

Pure functions: numpy arrays in, Plotly figures out (no Streamlit, no model). Most lesson steps reuse a
stage page's own figure; this module holds what only the lesson draws:

* :func:`patches_to_sequence`: the picture cut into patches that move, in reading order, into the row of
  tokens the encoder reads (motion);
* :func:`attention_through_layers`: where the CLS token looks, layer after layer (motion, with a slider);
* :func:`patch_picker`: the picture to click a patch on; :func:`answer_map`: a map over the picture with
  the student's guess and the right answer outlined;
* :func:`pictures_side_by_side` and :func:`similarity_bars` for the shuffled-patches question.

Motion is drawn by the browser: the figure carries Plotly *frames* and a play button (an ``updatemenus``
button calling Plotly's ``animate``), so playing costs the server nothing, and nothing plays until the
button is pressed.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .common import (ATTENTION_SCALE, click_layer, equal_axes, f32, frame_slider, grid_lines, image_source,
                     image_trace, play_buttons, style)
from .patching import patch_tiles, upscale

#: The student's guess and the right answer, outlined on the maps.
GUESS_COLOR = "#ff2d55"
ANSWER_COLOR = "#00e5ff"
#: The prefix tokens (CLS, registers ...) in the token row.
PREFIX_COLOR = "#ff9f0a"
#: The edge drawn around every patch of the moving picture.
EDGE = (170, 170, 170)
#: Frame length while playing, in milliseconds.
FRAME_MS = 260


# ---------------------------------------------------------------------------------- shared bits
def _bare_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, ticks="", title=None)
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False, ticks="", title=None)


def _ease(t: np.ndarray) -> np.ndarray:
    """Smooth start and stop (0 -> 0, 1 -> 1)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ---------------------------------------------------------------------------------- motion 1: patches to tokens
def sequence_columns(num_tokens: int, widest: int = 32) -> int:
    """Tokens per row of the token sequence: as even rows as possible, at most ``widest`` per row."""
    rows = -(-num_tokens // widest)
    return -(-num_tokens // rows)


def token_row_positions(num_tokens: int, columns: int, *, top: float, gap: float = 0.25) -> np.ndarray:
    """Top-left corners ``[T, 2]`` (x, y, in patch widths) of the tokens laid out ``columns`` per row,
    read like text: left to right, then the next row."""
    index = np.arange(num_tokens)
    row, col = np.divmod(index, columns)
    return np.stack([col * (1 + gap), top + row * (1 + gap)], axis=1).astype(np.float64)


def patches_to_sequence(image: np.ndarray, patch_size: int, prefix_names: list[str], title: str, *,
                        moves: int = 9, widest: int = 32) -> go.Figure:
    """The picture cut into its ``g x g`` patches, which then move, in reading order, into the row of tokens
    the encoder reads; the prefix tokens (CLS, registers ...) appear in front at the end.

    Frames: "picture" (the patches touching), "cut" (gaps between them), ``moves`` frames of travel, and
    "tokens" (the sequence, prefix tokens shown). Each patch is its own small image trace, so a frame only
    says where each patch is (a few numbers per patch), never its pixels again.
    """
    image = np.asarray(image, dtype=np.uint8)
    S, P = image.shape[0], int(patch_size)
    g = S // P
    N, prefix = g * g, len(prefix_names)
    T = N + prefix
    cols = sequence_columns(T, widest)
    width = cols * 1.25 - 0.25  # the token rows set the figure's width, in patch widths
    scale = max(1, int(np.ceil(16 / P)))  # at least 16 pixels a patch, so the browser does not blur small ones
    tiles = [upscale(t, scale) if scale > 1 else np.array(t) for t in patch_tiles(image, P)]
    for t in tiles:  # a thin grey edge on every patch, so white patches still show as tokens on a white page
        t[0, :], t[-1, :], t[:, 0], t[:, -1] = EDGE, EDGE, EDGE, EDGE
    sources = [image_source(t, "png") for t in tiles]
    px = 1.0 / (P * scale)  # one tile pixel, in patch widths

    rows = -(-T // cols)
    # the picture is drawn larger than the tokens (``zoom`` patch widths a patch) while the whole figure
    # stays at most about 0.6 times as tall as it is wide; the patches shrink to token size on their way
    zoom = float(np.clip((0.6 * width - 1.2 - rows * 1.25) / (g * 1.18), 1.0, 3.0))
    cut_gap = 0.18 * zoom
    picture_left = (width - g * zoom) / 2
    cut_left = (width - (g * zoom + (g - 1) * cut_gap)) / 2
    r, c = np.divmod(np.arange(N), g)
    whole = np.stack([picture_left + c * zoom, r * zoom], axis=1).astype(np.float64)
    cut = np.stack([cut_left + c * (zoom + cut_gap), r * (zoom + cut_gap)], axis=1)
    top = g * (zoom + cut_gap) + 1.2  # the token rows start under the cut picture, with room for their label
    seq = token_row_positions(T, cols, top=top)
    bottom = top + rows * 1.25 - 0.25

    def patch_traces(corners: np.ndarray, size) -> list[dict]:
        size = np.broadcast_to(np.asarray(size, dtype=np.float64), (len(corners),))
        return [dict(type="image", x0=float(x) + px * z / 2, y0=float(y) + px * z / 2, dx=px * z, dy=px * z)
                for (x, y), z in zip(corners, size)]

    traces = [go.Image(source=uri, hoverinfo="skip", name=f"patch {n}", **{k: v for k, v in spec.items() if k != "type"})
              for n, (uri, spec) in enumerate(zip(sources, patch_traces(whole, zoom)))]
    # the prefix tokens: one coloured tile each, hidden until the last frame
    block = np.zeros((16, 16, 3), dtype=np.uint8) + np.array([255, 159, 10], dtype=np.uint8)
    block[:2], block[-2:], block[:, :2], block[:, -2:] = 120, 120, 120, 120
    prefix_uri = image_source(block, "png")
    for k in range(prefix):
        x, y = seq[k]
        traces.append(go.Image(source=prefix_uri, x0=float(x) + 1 / 32, y0=float(y) + 1 / 32, dx=1 / 16, dy=1 / 16,
                               opacity=0.0, hoverinfo="skip", name=prefix_names[k]))
    fig = go.Figure(traces)

    labels = {"CLS": "CLS"}
    prefix_label = (" + ".join(labels.get(p, p) for p in prefix_names[:2]) if prefix <= 2
                    else f"CLS + {prefix - 1} more")
    notes = [dict(text=f"the picture: {g} x {g} patches of {P} x {P} pixels", x=0.0, y=-0.35, xref="x", yref="y",
                  xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=13)),
             dict(text=f"the token sequence, read left to right: {prefix_label} in front, then patch 0 to {N - 1}",
                  x=0.0, y=top - 0.35, xref="x", yref="y", xanchor="left", yanchor="bottom", showarrow=False,
                  font=dict(size=13))]
    fig.update_layout(annotations=notes)

    patch_ids = list(range(N))
    prefix_ids = list(range(N, N + prefix))
    hidden, shown = [dict(type="image", opacity=0.0)] * prefix, [dict(type="image", opacity=1.0)] * prefix
    frames = [go.Frame(name="picture", data=patch_traces(whole, zoom) + hidden, traces=patch_ids + prefix_ids),
              go.Frame(name="cut", data=patch_traces(cut, zoom) + hidden, traces=patch_ids + prefix_ids)]
    start = np.arange(N) / max(N, 1) * 0.55  # patch n leaves a little after patch n - 1: reading order
    for m in range(1, moves + 1):
        t = _ease((m / moves - start) / 0.45)
        where = cut + (seq[prefix:] - cut) * t[:, None]
        frames.append(go.Frame(name=f"move {m}", data=patch_traces(where, zoom + (1.0 - zoom) * t) + hidden,
                               traces=patch_ids + prefix_ids))
    frames.append(go.Frame(name="tokens", data=patch_traces(seq[prefix:], 1.0) + shown, traces=patch_ids + prefix_ids))
    fig.frames = frames

    fig.update_xaxes(range=[-0.3, width + 0.3], constrain="domain")
    fig.update_yaxes(range=[bottom + 0.3, -1.4], scaleanchor="x", constrain="domain")
    _bare_axes(fig)
    fig.update_layout(updatemenus=[play_buttons("picture", frame_ms=FRAME_MS)], dragmode=False)
    height = int(np.clip((bottom + 1.7) / (width + 0.6) * 640, 240, 640)) + 100
    fig = style(fig, title, height=height)
    fig.update_layout(margin=dict(l=8, r=8, t=40, b=64))
    return fig


# ---------------------------------------------------------------------------------- motion 2: attention by layer
def attention_through_layers(image: np.ndarray, maps: np.ndarray, title: str, *, height: int = 560) -> go.Figure:
    """Where the CLS token looks in each layer: ``maps`` ``[L, g, g]`` (one map per layer, mean of the heads,
    each a share of the patches) over the picture, one frame per layer, a slider to scrub and a play button.

    One colour scale for every layer (0 to the largest share any layer gives a patch, written on the colour
    bar), so a layer that spreads its attention looks pale and one that focuses looks bright.
    """
    maps = f32(maps)
    L, g = maps.shape[0], maps.shape[-1]
    S = image.shape[0]
    step = S / g
    zmax = float(maps.max()) if maps.size and float(maps.max()) > 0 else 1.0
    heat = go.Heatmap(z=maps[0], x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=0.0, zmax=zmax,
                      colorscale=ATTENTION_SCALE, opacity=0.62,
                      colorbar=dict(title=dict(text=f"share<br>fitted 0–{zmax:.3g}", side="right"), thickness=14),
                      hovertemplate="patch row %{y:.0f}, col %{x:.0f}: %{z:.3f}<extra></extra>")
    fig = go.Figure([image_trace(image), heat])
    names = [f"layer {i}" for i in range(L)]
    fig.frames = [go.Frame(name=names[i], data=[dict(type="heatmap", z=maps[i])], traces=[1]) for i in range(L)]
    slider = frame_slider(names, [str(i) if L <= 16 or i % 2 == 0 else "" for i in range(L)],
                          prefix="CLS attention in layer ")
    play = play_buttons(names[0], back=False, frame_ms=2 * FRAME_MS)
    fig.update_layout(sliders=[slider], updatemenus=[play], dragmode=False)
    equal_axes(fig)
    fig.update_xaxes(range=[-0.5, S - 0.5])
    fig.update_yaxes(range=[S - 0.5, -0.5], autorange=None)
    _bare_axes(fig)
    fig = style(fig, title, height=height)
    fig.update_layout(margin=dict(l=8, r=8, t=40, b=110))
    return fig


# ---------------------------------------------------------------------------------- the picture
def picture_figure(image: np.ndarray, title: str, *, height: int = 420) -> go.Figure:
    """The picture as the model gets it, pixel by pixel, with its size in pixels on the axes."""
    S = image.shape[0]
    fig = go.Figure(image_trace(image))
    equal_axes(fig)
    fig.update_xaxes(range=[-0.5, S - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(range=[S - 0.5, -0.5], autorange=None, showgrid=False, zeroline=False)
    fig.update_layout(dragmode=False)
    return style(fig, title, height=height, x_title="x (pixels)", y_title="y (pixels)")


# ---------------------------------------------------------------------------------- questions on the picture
def patch_picker(image: np.ndarray, patch_size: int, title: str, *, selected: int | None = None,
                 height: int = 460) -> go.Figure:
    """The picture with its patch grid, every patch clickable (``customdata`` = its index)."""
    S = image.shape[0]
    fig = go.Figure(image_trace(image))
    grid_lines(fig, S, patch_size, width=0.8)
    click_layer(fig, S, patch_size, selected=selected)
    equal_axes(fig)
    fig.update_xaxes(range=[-0.5, S - 0.5])
    fig.update_yaxes(range=[S - 0.5, -0.5], autorange=None)
    _bare_axes(fig)
    fig.update_layout(dragmode=False, clickmode="event+select")
    fig = style(fig, title, height=height)
    fig.update_layout(margin=dict(l=4, r=4, t=40, b=4))
    return fig


def _outline(fig: go.Figure, patch: int, grid: int, step: float, color: str, dash: str) -> None:
    """A patch outlined in ``color`` on a dark halo, so it shows on any colour of the map."""
    r, c = divmod(int(patch), grid)
    box = dict(type="rect", x0=c * step - 0.5, x1=(c + 1) * step - 0.5, y0=r * step - 0.5, y1=(r + 1) * step - 0.5)
    fig.add_shape(**box, line=dict(color="rgba(0,0,0,0.75)", width=7))
    fig.add_shape(**box, line=dict(color=color, width=4, dash=dash))


def answer_map(image: np.ndarray, values: np.ndarray, title: str, *, best: int, guess: int | None,
               colorbar_title: str = "share", height: int = 500) -> go.Figure:
    """A ``[g, g]`` map over the picture with the right patch (``best``, solid yellow) and the student's
    ``guess`` (dashed red) outlined, and a legend that names both."""
    values = f32(values)
    g = values.shape[0]
    S = image.shape[0]
    step = S / g
    zmax = float(values.max()) if float(values.max()) > 0 else 1.0
    fig = go.Figure([image_trace(image), go.Heatmap(
        z=values, x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=0.0, zmax=zmax,
        colorscale=ATTENTION_SCALE, opacity=0.62, colorbar=dict(title=dict(text=colorbar_title, side="right"),
                                                                thickness=14),
        hovertemplate="patch row %{y:.0f}, col %{x:.0f}: %{z:.3f}<extra></extra>")])
    _outline(fig, best, g, step, ANSWER_COLOR, "solid")
    if guess is not None:
        _outline(fig, guess, g, step, GUESS_COLOR, "dash")
    for name, color, dash in (("most attended", ANSWER_COLOR, "solid"), ("your click", GUESS_COLOR, "dash")):
        if name == "your click" and guess is None:
            continue
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=color, width=4, dash=dash)))
    equal_axes(fig)
    fig.update_xaxes(range=[-0.5, S - 0.5])
    fig.update_yaxes(range=[S - 0.5, -0.5], autorange=None)
    _bare_axes(fig)
    fig = style(fig, title, height=height)
    fig.update_layout(legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.02, yanchor="top"),
                      margin=dict(l=4, r=4, t=40, b=56))
    return fig


def pictures_side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str], title: str, *,
                          height: int = 400) -> go.Figure:
    """Two pictures of the same size next to each other (the picture, and its patches shuffled)."""
    S = left.shape[0]
    fig = go.Figure([go.Image(source=image_source(left), hoverinfo="skip", xaxis="x", yaxis="y"),
                     go.Image(source=image_source(right), hoverinfo="skip", xaxis="x2", yaxis="y2")])
    bare = dict(showgrid=False, zeroline=False, showticklabels=False, ticks="", constrain="domain")
    fig.update_layout(
        xaxis=dict(domain=[0.0, 0.48], range=[-0.5, S - 0.5], **bare),
        yaxis=dict(range=[S - 0.5, -0.5], scaleanchor="x", **bare),
        xaxis2=dict(domain=[0.52, 1.0], range=[-0.5, S - 0.5], **bare),
        yaxis2=dict(range=[S - 0.5, -0.5], scaleanchor="x2", anchor="x2", **bare),
        annotations=[dict(text=t, x=x, y=1.0, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
                          showarrow=False, font=dict(size=13)) for t, x in zip(titles, (0.24, 0.76))])
    fig = style(fig, title, height=height)
    fig.update_layout(margin=dict(l=4, r=4, t=44, b=4))
    return fig


def similarity_bars(values: list[float], labels: list[str], title: str, *, height: int = 300) -> go.Figure:
    """Horizontal bars of cosine similarities (how alike two feature vectors are), labelled with their value."""
    v = f32(values)
    fig = go.Figure(go.Bar(x=v, y=labels, orientation="h", marker_color="#4c78a8",
                           text=[f"{x:.4f}" for x in v], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:.6f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[min(0.0, float(v.min()) if v.size else 0.0), 1.3], tickvals=[0, 0.5, 1.0])
    return style(fig, title, height=height, x_title="cosine similarity to the unshuffled picture's answer")
