"""Figures for the last stage: final layer norm, pooler, classifier head, logit lens, occlusion.

Pure functions: numpy arrays in, Plotly figures out (no Streamlit). Pictures are embedded as a
compressed PNG or JPEG (``go.Image(source=...)``) rather than as raw pixels, because the side-by-side
view draws the same picture three times and a PNG is several times smaller than the array.
"""

from __future__ import annotations


import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import analysis
from ..config import ViTConfig
from ..flops import total_flops
from .common import ATTENTION_SCALE, SIGNED_SCALE, click_layer, equal_axes, f32, image_source, style

#: Colours for "before" and "after" in the comparison charts (colour-blind safe pair).
BEFORE_COLOR = "#4c78a8"
AFTER_COLOR = "#f58518"
MASK_COLOR = "rgba(128,128,128,0.92)"


# ------------------------------------------------------------------------------ kept names
# The numbers come from vit_explain.analysis and vit_explain.flops (their one definition); these
# names only hand them over as float32, ready for a figure.
def cls_attention_map(attention_layer: np.ndarray, grid: int) -> np.ndarray:
    """:func:`vit_explain.analysis.cls_attention_map` of one layer ``[H, T, T]``, heads averaged,
    renormalised over the patches, as ``[grid, grid]`` float32."""
    a = np.asarray(attention_layer)
    if a.ndim != 3:
        raise ValueError(f"expected [H, T, T] with T >= {grid * grid + 1}, got {a.shape}")
    return f32(analysis.cls_attention_map(a, grid, renormalise=True))


def token_mean_std(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`vit_explain.analysis.token_mean_std` as float32: two ``[T]`` arrays."""
    mean, std = analysis.token_mean_std(tokens)
    return f32(mean), f32(std)


def forward_flops(image_size: int, patch_size: int, hidden: int, layers: int, mlp: int, channels: int = 3) -> float:
    """FLOPs of one forward pass of a plain ViT encoder (no head): :func:`vit_explain.flops.total_flops`."""
    config = ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=1, intermediate_size=mlp, num_channels=channels)
    return float(total_flops(config, classifier=False))


# ------------------------------------------------------------------------------ picture helpers
def _picture(source: str, size: int) -> go.Image:
    # with a data URI Plotly cannot know the size before loading it, so give the pixel box explicitly
    return go.Image(source=source, x0=0, dx=1, y0=0, dy=1, hoverinfo="skip", name="picture")


def _patch_heatmap(values: np.ndarray, size: int, *, zmin, zmax, colorscale, zmid=None, opacity=0.6,
                   showscale=True, colorbar_title="", name="", colorbar=None) -> go.Heatmap:
    g = values.shape[0]
    step = size / g
    bar = dict(title=dict(text=colorbar_title, side="right"), thickness=14)
    if colorbar:
        bar.update(colorbar)
    return go.Heatmap(z=f32(values), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=zmin, zmax=zmax,
                      zmid=zmid, colorscale=colorscale, opacity=opacity, showscale=showscale, colorbar=bar, name=name,
                      hovertemplate=(f"{name}<br>" if name else "")
                      + "patch row %{y:.0f}, col %{x:.0f}: %{z:.3f}<extra></extra>")


def _fix_image_axes(fig: go.Figure, size: int, row=None, col=None) -> None:
    equal_axes(fig, row=row, col=col)
    fig.update_xaxes(range=[-0.5, size - 0.5], showgrid=False, zeroline=False, row=row, col=col)
    fig.update_yaxes(range=[size - 0.5, -0.5], autorange=False, showgrid=False, zeroline=False, row=row, col=col)


# ------------------------------------------------------------------------------ final layer norm
def cls_before_after(before: np.ndarray, after: np.ndarray, *, height: int = 300) -> go.Figure:
    """The CLS token's D numbers as two colour strips: before and after the final layer norm.

    Each strip has its own symmetric colour scale (the values before the norm can be much larger).
    """
    before, after = f32(before).ravel(), f32(after).ravel()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.28,
                        subplot_titles=("before: hidden_states[-1][CLS]", "after: last_hidden_state[CLS]"))
    for row, (values, label) in enumerate(((before, "before"), (after, "after")), start=1):
        limit = float(np.abs(values).max()) or 1.0
        fig.add_trace(go.Heatmap(
            z=values[None, :], zmin=-limit, zmax=limit, colorscale=SIGNED_SCALE, name=label,
            colorbar=dict(title=dict(text=label, side="right"), len=0.36, y=0.82 if row == 1 else 0.18,
                          yanchor="middle", thickness=14, nticks=3),
            hovertemplate=f"{label}: feature %{{x}} = %{{z:.4f}}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(showticklabels=False, row=row, col=1)
    fig.update_xaxes(title_text="feature (0 .. D-1)", row=2, col=1)
    return style(fig, "The CLS token before and after the final layer norm", height=height)


def token_stats(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray], *,
                height: int = 340) -> go.Figure:
    """Per-token mean and standard deviation over the D features, before vs after the final norm.

    ``before`` and ``after`` are ``(mean [T], std [T])``. Token 0 is CLS.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("mean over the D features", "standard deviation over the D features"))
    for col, index in ((1, 0), (2, 1)):
        for (stats, label, color) in ((before, "before the norm", BEFORE_COLOR), (after, "after the norm", AFTER_COLOR)):
            values = f32(stats[index])
            fig.add_trace(go.Scatter(x=np.arange(len(values), dtype=np.int32), y=values, mode="lines+markers",
                                     marker=dict(size=4), line=dict(color=color, width=1.5), name=label,
                                     legendgroup=label, showlegend=(col == 1),
                                     hovertemplate=f"{label}<br>token %{{x}}: %{{y:.4f}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="token (0 = CLS)", row=1, col=col)
    fig.update_yaxes(title_text="mean", row=1, col=1)
    fig.update_yaxes(title_text="standard deviation", row=1, col=2)
    fig = style(fig, "Every token, before and after the final layer norm", height=height)
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.1, x=1, xanchor="right"))
    return fig


# ------------------------------------------------------------------------------ pooler
def tanh_figure(pre_activation: np.ndarray, pooled: np.ndarray, *, height: int = 460) -> go.Figure:
    """The tanh curve with the pooler's real pre-activations on it, and their histogram below."""
    pre, post = f32(pre_activation).ravel(), f32(pooled).ravel()
    reach = max(3.0, float(np.abs(pre).max()) * 1.05 if pre.size else 3.0)
    xs = np.linspace(-reach, reach, 241, dtype=np.float32)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=xs, y=np.tanh(xs).astype(np.float32), mode="lines", name="tanh(z)",
                             line=dict(color="#888", width=2), hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Scatter(x=pre, y=post, mode="markers", name="the D features of this image",
                             marker=dict(size=6, color=AFTER_COLOR, opacity=0.6),
                             customdata=np.arange(pre.size, dtype=np.int32),
                             hovertemplate="feature %{customdata}<br>z = %{x:.3f}<br>tanh(z) = %{y:.3f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Histogram(x=pre, nbinsx=60, marker_color=BEFORE_COLOR, name="how many features",
                               hovertemplate="z in %{x}: %{y} features<extra></extra>", showlegend=False), row=2, col=1)
    fig.update_yaxes(title_text="tanh(z) = pooler_output", range=[-1.1, 1.1], row=1, col=1)
    fig.update_yaxes(title_text="count", row=2, col=1)
    fig.update_xaxes(title_text="z = dense(CLS) (pre-activation)", row=2, col=1)
    fig = style(fig, "Pooler: tanh squashes dense(CLS) into (-1, 1)", height=height)
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"))
    return fig


# ------------------------------------------------------------------------------ head
def logits_bar(labels: list[str], logits: np.ndarray, *, height: int = 360) -> go.Figure:
    """The top-k logits (raw scores), most probable on top: horizontal bars, so long class names
    ("automobile", "truck") sit one per row instead of running into each other under the bars."""
    values = f32(logits)
    fig = go.Figure(go.Bar(x=values, y=list(labels), orientation="h", marker_color=BEFORE_COLOR,
                           hovertemplate="%{y}: logit %{x:.3f}<extra></extra>"))
    fig.add_vline(x=0, line=dict(color="#444", width=1))
    fig.update_yaxes(autorange="reversed")
    return style(fig, f"Top {len(values)} logits (raw scores from the classifier)", height=height,
                 x_title="logit", y_title="class")


def probability_bar(labels: list[str], probs: np.ndarray, *, height: int = 360) -> go.Figure:
    """The top-k softmax probabilities as horizontal bars on a fixed 0..1 axis."""
    values = f32(probs)
    fig = go.Figure(go.Bar(x=values, y=list(labels), orientation="h", marker_color=AFTER_COLOR,
                           text=[f"{p:.1%}" for p in values], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1.08], tickformat=".0%")
    return style(fig, f"Top {len(values)} after softmax (probabilities)", height=height,
                 x_title="probability", y_title="class")


# ------------------------------------------------------------------------------ logit lens
def logit_lens_heatmap(probs: np.ndarray, stage_names: list[str], class_names: list[str],
                       top1_names: list[str] | None = None, *, height: int | None = None) -> go.Figure:
    """Probability of the final top classes (columns) read off the CLS token after every layer (rows).

    ``probs`` is ``[S, k]``: stage ``s`` is the CLS token after ``s`` layers pushed through the final
    layer norm and the classifier. Colours on a fixed 0..1 scale.
    """
    z = f32(probs)
    S = z.shape[0]
    custom = None
    template = "%{y}<br>%{x}: %{z:.1%}<extra></extra>"
    if top1_names is not None:
        custom = np.array([[name] * z.shape[1] for name in top1_names], dtype=object)
        template = "%{y}<br>%{x}: %{z:.1%}<br>top-1 at this depth: %{customdata}<extra></extra>"
    fig = go.Figure(go.Heatmap(z=z, x=list(class_names), y=list(stage_names), zmin=0.0, zmax=1.0,
                               colorscale=ATTENTION_SCALE, customdata=custom, hovertemplate=template,
                               texttemplate="%{z:.0%}" if z.size <= 400 else None, textfont=dict(size=12),
                               colorbar=dict(title=dict(text="probability", side="right"))))
    fig.update_yaxes(autorange="reversed")
    return style(fig, "Logit lens: the final prediction's top classes, read after every layer",
                 height=height or max(300, 26 * S + 140), x_title="class (final top-k)",
                 y_title="CLS token after ...")


# ------------------------------------------------------------------------------ occlusion
def masked_shapes(fig: go.Figure, patches: list[int], grid: int, patch_size: int, row=None, col=None) -> None:
    """Grey squares with a red edge over the masked patches (row-major indices)."""
    for index in patches:
        r, c = divmod(int(index), grid)
        fig.add_shape(type="rect", x0=c * patch_size - 0.5, x1=(c + 1) * patch_size - 0.5, y0=r * patch_size - 0.5,
                      y1=(r + 1) * patch_size - 0.5, fillcolor=MASK_COLOR, line=dict(color="#ff2d55", width=2),
                      layer="above", row=row, col=col)


def occlusion_view(image: np.ndarray, attention_map: np.ndarray, patch_size: int, masked: list[int], *,
                   height: int = 480, source: str | None = None) -> go.Figure:
    """Last-layer CLS attention over the picture, the masked patches in grey, and a click layer.

    ``attention_map`` is ``[g, g]``; it is shown relative to its maximum, on a fixed 0..1 scale.
    """
    size = image.shape[0]
    g = attention_map.shape[0]
    peak = float(np.max(attention_map)) if attention_map.size else 0.0
    relative = attention_map / peak if peak > 0 else np.zeros_like(attention_map)
    fig = go.Figure(_picture(source or image_source(image), size))
    fig.add_trace(_patch_heatmap(relative, size, zmin=0.0, zmax=1.0, colorscale=ATTENTION_SCALE, opacity=0.55,
                                 colorbar_title="attention / max", name="CLS attention"))
    click_layer(fig, size, patch_size)
    masked_shapes(fig, masked, g, patch_size)
    _fix_image_axes(fig, size)
    return style(fig, f"Click patches to hide them ({len(masked)} hidden)", height=height,
                 x_title="x (pixels)", y_title="y (pixels)")


def change_label(delta: float) -> str:
    """A change of probability as text: "+3.2%", "-0.4%", and "no change" when it rounds to zero (not "-0.0%")."""
    if abs(float(delta)) < 0.0005:
        return "no change"
    return f"{float(delta):+.1%}"


def before_after_bars(labels: list[str], before: np.ndarray, after: np.ndarray, *, height: int = 420) -> go.Figure:
    """Probabilities of the same classes before and after hiding patches (grouped horizontal bars)."""
    b, a = f32(before), f32(after)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=b, y=list(labels), orientation="h", name="original image", marker_color=BEFORE_COLOR,
                         hovertemplate="%{y}<br>original: %{x:.4f}<extra></extra>"))
    fig.add_trace(go.Bar(x=a, y=list(labels), orientation="h", name="with patches hidden", marker_color=AFTER_COLOR,
                         text=[change_label(d) for d in (a - b)], textposition="outside", cliponaxis=False,
                         hovertemplate="%{y}<br>hidden: %{x:.4f}<extra></extra>"))
    fig.update_layout(barmode="group", legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1.3], tickvals=[0, 0.5, 1.0], tickformat=".0%")
    fig = style(fig, "Probabilities: original vs patches hidden", height=height, x_title="probability",
                y_title="class")
    fig.update_layout(margin=dict(b=70))
    return fig


# ------------------------------------------------------------------------------ side by side
def side_by_side(image: np.ndarray, maps: list[np.ndarray], titles: list[str], *, zmin: float, zmax: float,
                 signed: bool = False, colorbar_title: str = "relative importance", height: int = 430,
                 source: str | None = None) -> go.Figure:
    """Several ``[g, g]`` explanation maps over the same picture, on ONE shared colour scale.

    ``signed`` picks a diverging scale centred on 0 (occlusion can be negative: hiding a patch can
    make the class more likely); otherwise the attention scale.
    """
    size = image.shape[0]
    n = len(maps)
    src = source or image_source(image)
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=0.03)
    for i, (values, title) in enumerate(zip(maps, titles), start=1):
        fig.add_trace(_picture(src, size), row=1, col=i)
        fig.add_trace(_patch_heatmap(values, size, zmin=zmin, zmax=zmax, zmid=0.0 if signed else None,
                                     colorscale=SIGNED_SCALE if signed else ATTENTION_SCALE, opacity=0.65,
                                     showscale=(i == 1), colorbar_title=colorbar_title, name=title),
                      row=1, col=i)
        _fix_image_axes(fig, size, row=1, col=i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
        fig.update_yaxes(showticklabels=False, row=1, col=i)
    # each panel's y axis must keep its own square aspect
    for i in range(1, n + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    return style(fig, "Three explanations of the same prediction, one colour scale", height=height)
