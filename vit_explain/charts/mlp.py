"""Figures for the MLP page (ViTIntermediate, ViTOutput): expand, activate, project back, add.

Pure functions: numpy arrays in, Plotly figures or small summaries out; no Streamlit, no torch.
The [tokens, features] matrices of ViT-B/16 are big (197 x 3072 float32 is 2.4 MB), so the heat
maps show a window of them: the CLS token and evenly spaced patch tokens as rows, the first
features as columns (the same share of D and of M, so the 4x widening stays visible).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import analysis
from .common import SIGNED_SCALE, f32, style
from .layers import picture_trace

#: A value counts as "switched off" by the activation when its magnitude is below this (defined in analysis).
NEAR_ZERO = analysis.NEAR_ZERO


# ------------------------------------------------------------------------------- token and feature windows
def token_subset(num_tokens: int, max_tokens: int = 40) -> np.ndarray:
    """Row indices to draw: all tokens if they fit, else CLS plus evenly spaced patch tokens."""
    if num_tokens <= max_tokens:
        return np.arange(num_tokens)
    patches = np.unique(np.linspace(1, num_tokens - 1, max_tokens - 1).round().astype(int))
    return np.concatenate([[0], patches])


def token_name(index: int, grid: int) -> str:
    """ "CLS" for token 0, else "patch k (r, c)" with the patch's row and column."""
    if index == 0:
        return "CLS"
    r, c = divmod(index - 1, grid)
    return f"patch {index - 1} ({r},{c})"


def feature_windows(d: int, m: int, max_d: int = 96, max_m: int = 384) -> tuple[int, int]:
    """How many leading features of D and of M to draw, keeping their ratio where possible."""
    nd = min(d, max_d)
    nm = min(m, max_m, max(1, int(round(nd * m / d))))
    return nd, nm


def robust_limit(*arrays: np.ndarray, q: float = 99.5) -> float:
    """A symmetric colour limit: the q-th percentile of |values| over all arrays (never 0)."""
    vals = np.concatenate([np.abs(np.asarray(a, dtype=np.float32)).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 1.0
    lim = float(np.percentile(vals, q))
    return lim if lim > 0 else float(vals.max()) or 1.0


def mapping_figure(left: np.ndarray, right: np.ndarray, *, grid: int, title: str, left_title: str,
                   right_title: str, left_axis: str, right_axis: str, max_tokens: int = 24,
                   max_left: int = 96, max_right: int = 384, zmax: float | None = None) -> go.Figure:
    """Two [T, features] matrices side by side with the same token rows (one row per token).

    The left panel is a window of the first features of ``left``, the right one of ``right``; the
    panels' widths follow the number of features drawn. Both share one symmetric colour scale.
    """
    left, right = np.asarray(left), np.asarray(right)
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"mapping_figure: token counts differ ({left.shape[0]} vs {right.shape[0]})")
    rows = token_subset(left.shape[0], max_tokens)
    if left.shape[1] <= right.shape[1]:
        nl, nr = feature_windows(left.shape[1], right.shape[1], max_left, max_right)
    else:
        nr, nl = feature_windows(right.shape[1], left.shape[1], max_left, max_right)
    a, b = f32(left[rows, :nl]), f32(right[rows, :nr])
    lim = zmax if zmax is not None else robust_limit(a, b)
    labels = [token_name(int(i), grid) for i in rows]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                        column_widths=[max(nl, 1), max(nr, 1)],
                        subplot_titles=[f"{left_title}<br>features 0-{nl - 1} of {left.shape[1]}",
                                        f"{right_title}<br>features 0-{nr - 1} of {right.shape[1]}"])
    for col, (z, name) in enumerate(((a, left_title), (b, right_title)), start=1):
        fig.add_trace(go.Heatmap(
            z=z, y=labels, x0=0, dx=1, zmin=-lim, zmax=lim, zmid=0, colorscale=SIGNED_SCALE, showscale=(col == 2),
            colorbar=dict(title=dict(text="value", side="right")),
            hovertemplate=f"{name}<br>%{{y}}, feature %{{x}}: %{{z:.3f}}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(autorange="reversed", type="category", tickfont=dict(size=12))
    fig.update_xaxes(title_text=left_axis, row=1, col=1)
    fig.update_xaxes(title_text=right_axis, row=1, col=2)
    shown = "all tokens" if len(rows) == left.shape[0] else f"CLS + {len(rows) - 1} of {left.shape[0] - 1} patches"
    return style(fig, f"{title} ({shown})", height=max(360, 17 * len(rows) + 150))


# ------------------------------------------------------------------------------- the activation
def activation_stats(pre: np.ndarray, post: np.ndarray, tol: float = NEAR_ZERO) -> dict[str, float]:
    """Shares of the M x T activations below zero before, and near zero after, the activation
    (:func:`vit_explain.analysis.activation_stats`)."""
    return analysis.activation_stats(pre, post, tol)


def active_share_map(post: np.ndarray, grid: int, tol: float = NEAR_ZERO) -> np.ndarray:
    """:func:`vit_explain.analysis.active_share_map` as float32: [g, g] share of each patch's units left on."""
    return f32(analysis.active_share_map(post, grid, tol))


def curve_range(pre: np.ndarray, low_q: float = 0.1, high_q: float = 99.9, at_least: float = 4.0) -> tuple[float, float]:
    """The x range to draw the activation over: the bulk of the real pre-activations, and at least +-at_least."""
    pre = np.asarray(pre, dtype=np.float32).ravel()
    pre = pre[np.isfinite(pre)]
    if pre.size == 0:
        return -at_least, at_least
    lo, hi = np.percentile(pre, [low_q, high_q])
    return float(min(lo, -at_least)), float(max(hi, at_least))


def activation_figure(xs: np.ndarray, ys: np.ndarray, pre: np.ndarray, act_name: str, *,
                      bins: int = 90, tol: float = NEAR_ZERO) -> go.Figure:
    """The activation curve y = act(x) over a histogram of this image's real pre-activations.

    ``xs``, ``ys``: the curve (evaluated with the model's own activation module). ``pre``: every
    pre-activation of the chosen layer. Values outside the drawn range are counted in the edge bins.
    """
    xs, ys = f32(xs), f32(ys)
    lo, hi = float(xs.min()), float(xs.max())
    flat = np.clip(np.asarray(pre, dtype=np.float32).ravel(), lo, hi)
    counts, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    share = counts / max(flat.size, 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=f32(centres), y=f32(share), width=float(edges[1] - edges[0]), name="this image's pre-activations",
                         marker=dict(color="rgba(120,130,150,0.45)", line=dict(width=0)),
                         hovertemplate="x ≈ %{x:.2f}: %{y:.2%} of the values<extra></extra>"), secondary_y=True)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{act_name}(x)", line=dict(color="#d62728", width=3),
                             hovertemplate=f"{act_name}(%{{x:.2f}}) = %{{y:.3f}}<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=xs, y=xs, mode="lines", name="y = x (no activation)",
                             line=dict(color="#999999", dash="dot", width=1), hoverinfo="skip"), secondary_y=False)
    fig.add_hrect(y0=-tol, y1=tol, fillcolor="rgba(214,39,40,0.08)", line_width=0, secondary_y=False)
    ymin = float(min(ys.min(), -0.5))
    ymax = float(max(ys.max(), 1.0))
    fig.update_yaxes(title_text=f"{act_name}(x)", range=[ymin - 0.1 * (ymax - ymin), ymax], secondary_y=False)
    fig.update_yaxes(title_text="share of the values", tickformat=".1%", showgrid=False, rangemode="tozero",
                     secondary_y=True)
    fig.update_layout(bargap=0)
    style(fig, f"{act_name} and where this layer's real inputs fall", height=460,
          x_title="pre-activation x (output of the D → M projection)")
    fig.update_layout(legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.22, yanchor="top"),
                      margin=dict(b=70))
    return fig


def active_share_figure(image: np.ndarray, share: np.ndarray) -> go.Figure:
    """The share of hidden units left on, per patch, over the picture (0..1)."""
    size = int(image.shape[0])
    g = share.shape[0]
    step = size / g
    fig = go.Figure(picture_trace(image))
    fig.add_trace(go.Heatmap(z=f32(share), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=0.0, zmax=1.0,
                             colorscale="Plasma", opacity=0.6,
                             colorbar=dict(title=dict(text="share on", side="right"), thickness=14),
                             hovertemplate="patch centre x %{x:.0f}, y %{y:.0f} px: %{z:.1%} of units on<extra></extra>"))
    _picture_axes(fig, size)
    return style(fig, "Hidden units switched on, per patch", height=380)


def _picture_axes(fig: go.Figure, size: int) -> None:
    """Square pixel axes, y downwards, without ticks (the picture speaks for itself)."""
    fig.update_yaxes(scaleanchor="x", range=[size - 0.5, -0.5], showticklabels=False, ticks="", showgrid=False,
                     zeroline=False, constrain="domain")
    fig.update_xaxes(range=[-0.5, size - 0.5], showticklabels=False, ticks="", showgrid=False, zeroline=False,
                     constrain="domain")


# ------------------------------------------------------------------------------- the residual
def update_ratio(residual: np.ndarray, mlp_output: np.ndarray) -> np.ndarray:
    """:func:`vit_explain.analysis.update_ratio` as float32: ‖MLP output‖ / ‖stream before the MLP‖ per token."""
    return f32(analysis.update_ratio(residual, mlp_output))


def update_ratio_figure(image: np.ndarray, ratio: np.ndarray, grid: int) -> go.Figure:
    """The per-patch update ratio over the picture (CLS excluded); click layer added by the page."""
    size = int(image.shape[0])
    step = size / grid
    values = f32(np.asarray(ratio)[-grid * grid:].reshape(grid, grid))
    fig = go.Figure(picture_trace(image))
    fig.add_trace(go.Heatmap(z=values, x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=0.0,
                             zmax=float(max(values.max(), 1e-6)), colorscale="Viridis", opacity=0.55,
                             colorbar=dict(title=dict(text="‖mlp‖ / ‖x‖", side="right"), thickness=14),
                             hovertemplate="patch centre x %{x:.0f}, y %{y:.0f} px: ratio %{z:.3f}<extra></extra>"))
    _picture_axes(fig, size)
    return style(fig, "MLP change per patch (click one)", height=400)


def residual_figure(residual: np.ndarray, mlp_output: np.ndarray, output: np.ndarray, token_label: str,
                    max_dims: int = 768) -> go.Figure:
    """Three rows for one token: the stream x, what the MLP adds, and their sum (ViTOutput's result)."""
    rows = np.stack([residual, mlp_output, output]).astype(np.float32)
    n = min(rows.shape[1], max_dims)
    rows = rows[:, :n]
    lim = robust_limit(rows, q=99.0)
    names = ["x (stream before the MLP)", "+ MLP output", "= layer output"]
    norms = analysis.token_norms([rows])[0]
    fig = go.Figure(go.Heatmap(
        z=f32(rows), y=[f"{name}  ‖·‖={v:.2f}" for name, v in zip(names, norms)], x0=0, dx=1, zmin=-lim, zmax=lim,
        zmid=0, colorscale=SIGNED_SCALE, colorbar=dict(title=dict(text="value", side="right")),
        hovertemplate="%{y}<br>feature %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    suffix = "" if n == residual.shape[-1] else f" (first {n} of {residual.shape[-1]} features)"
    return style(fig, f"The residual add for {token_label}{suffix}", height=260, x_title="feature (of D)")
