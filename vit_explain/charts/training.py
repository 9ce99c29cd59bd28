"""Figures of the Training stage: curves over the steps and the views of one snapshot. Pure functions."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import ATTENTION_SCALE, f32, frame_slider, image_source, play_buttons, style
from .embeddings import similarity_grid_figure
from .overview import prediction_figure
from .patching import filter_pca_figure, subtitle

#: Most points a curve sends to the browser (longer runs are averaged in buckets).
MAX_CURVE_POINTS = 400


def bucket_mean(steps: list[int] | np.ndarray, values: list[float] | np.ndarray,
                max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive values in equal buckets so at most ``max_points`` remain (x: each bucket's last step)."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    n = len(values)
    if n <= max_points:
        return steps.astype(np.float32), values.astype(np.float32)
    edges = np.linspace(0, n, max_points + 1).round().astype(np.int64)
    sums = np.add.reduceat(values, edges[:-1])
    counts = np.diff(edges)
    return steps[edges[1:] - 1].astype(np.float32), (sums / counts).astype(np.float32)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (the first points average what there is)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values.astype(np.float32)
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - window)
    return ((c[i] - c[lo]) / (i - lo)).astype(np.float32)


def curves_figure(steps: list[int], train_loss: list[float], train_accuracy: list[float], held_steps: list[int],
                  held_loss: list[float], held_accuracy: list[float], *, chance: float, marker_step: int | None = None,
                  height: int = 380) -> go.Figure:
    """Loss (left) and accuracy (right) over the steps: training batches (smoothed) and the held-out set."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09,
                        subplot_titles=("Loss (cross-entropy)", "Accuracy"))
    window = max(1, len(steps) // 50)
    for col, (train, held, name) in enumerate(((train_loss, held_loss, "loss"), (train_accuracy, held_accuracy, "accuracy")), 1):
        if len(steps):
            x, y = bucket_mean(steps, smooth(np.asarray(train), window))
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color="#4a90c2", width=1.8),
                                     name="training batches (smoothed)", legendgroup="train", showlegend=col == 1,
                                     hovertemplate=f"step %{{x:.0f}}: training {name} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
        if len(held_steps):
            fig.add_trace(go.Scatter(x=f32(held_steps), y=f32(held), mode="lines+markers",
                                     line=dict(color="#ff7f0e", width=2), marker=dict(size=5),
                                     name="held-out pictures", legendgroup="held", showlegend=col == 1,
                                     hovertemplate=f"step %{{x:.0f}}: held-out {name} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
    fig.add_hline(y=chance, line=dict(color="#888", dash="dot", width=1), row=1, col=2,
                  annotation_text=f"chance {chance:.0%}", annotation_position="bottom right",
                  annotation_font=dict(size=12, color="#666"))
    if marker_step is not None:
        for col in (1, 2):
            fig.add_vline(x=marker_step, line=dict(color="#ff2d55", width=1.5), row=1, col=col)
    fig.update_yaxes(rangemode="tozero", row=1, col=1, title_text="loss")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2, title_text="accuracy")
    fig.update_xaxes(title_text="optimiser step", rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"))
    style(fig, "Training curves", height=height)
    fig.update_layout(margin=dict(b=70))
    return subtitle(fig, "red line: the snapshot shown below" if marker_step is not None else "training batches and held-out pictures")


def probe_attention_figure(image: np.ndarray, cls_attention: np.ndarray, layer: int, head: int, *, step: int,
                           relative: bool = True, height: int = 380) -> go.Figure:
    """The probe picture beside the CLS token's attention over its patches, for one layer and head.

    ``cls_attention`` ``[L, H, N]``; with ``relative`` the colours span this head's own range,
    otherwise the fixed 0..max over all heads of the snapshot.
    """
    L, H, N = cls_attention.shape
    g = int(round(N ** 0.5))
    size = image.shape[0]
    values = f32(cls_attention[layer, head]).reshape(g, g)
    zmax = float(values.max()) if relative else float(cls_attention.max())
    zmax = zmax if zmax > 0 else 1.0
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=("the probe picture", f"CLS attention, layer {layer}, head {head}"))
    uri = image_source(image, "PNG")
    cell = size / g
    for col in (1, 2):
        fig.add_trace(go.Image(source=uri, x0=0, dx=1, y0=0, dy=1, hoverinfo="skip"), row=1, col=col)
    fig.add_trace(go.Heatmap(z=values, x0=cell / 2 - 0.5, dx=cell, y0=cell / 2 - 0.5, dy=cell, zmin=0.0, zmax=zmax,
                             colorscale=ATTENTION_SCALE, opacity=0.7,
                             colorbar=dict(title=dict(text="attention weight", side="right"), thickness=14),
                             hovertemplate="attention weight %{z:.4f}<extra></extra>"), row=1, col=2)
    for col, axis in ((1, ""), (2, "2")):  # each picture keeps square pixels on its own axes
        fig.update_xaxes(range=[-0.5, size - 0.5], showgrid=False, zeroline=False, title_text="x (pixels)",
                         constrain="domain", row=1, col=col)
        fig.update_yaxes(range=[size - 0.5, -0.5], autorange=False, showgrid=False, zeroline=False,
                         scaleanchor=f"x{axis}", constrain="domain", row=1, col=col)
    fig.update_yaxes(title_text="y (pixels)", row=1, col=1)
    style(fig, f"Where the CLS token looks at step {step:,}", height=height)
    uniform = 1.0 / N
    return subtitle(fig, f"colours: 0 to {'this head' if relative else 'the largest weight of any head'}'s "
                         f"largest weight ({zmax:.3f}); even attention would be {uniform:.3f} per patch")


def heads_figure(cls_attention: np.ndarray, *, step: int, height: int | None = None) -> go.Figure:
    """Every layer (rows) and head (columns) as a small map of the CLS token's attention; one shared scale."""
    L, H, N = cls_attention.shape
    g = int(round(N ** 0.5))
    titles = [f"layer {i}, head {h}" for i in range(L) for h in range(H)]
    fig = make_subplots(rows=L, cols=H, subplot_titles=titles, horizontal_spacing=0.015,
                        vertical_spacing=min(0.08, 0.3 / max(1, L)))
    zmax = float(cls_attention.max()) or 1.0
    for i in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=f32(cls_attention[i, h]).reshape(g, g), zmin=0.0, zmax=zmax,
                                     colorscale=ATTENTION_SCALE, showscale=(i == 0 and h == 0),
                                     colorbar=dict(title=dict(text="attention weight", side="right")),
                                     hovertemplate=f"layer {i}, head {h}<br>patch row %{{y}}, col %{{x}}: %{{z:.3f}}<extra></extra>"),
                          row=i + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", constrain="domain")
    for k in range(L * H):
        axis = "" if k == 0 else str(k + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    style(fig, f"The CLS token's attention in every layer and head, step {step:,}",
          height=height or max(260, 150 * L + 110))
    return subtitle(fig, "rows: layers 0 (first) down; columns: heads; one colour scale for all")


def distance_figure(distances: list[np.ndarray], steps: list[int], *, grid: int, patch_size: int,
                    marker_step: int | None = None, height: int = 340) -> go.Figure:
    """Mean attention distance of every head over the snapshots (how far, in pixels, the patches look)."""
    d = np.stack([f32(x) for x in distances])  # [S, L, H]
    S, L, H = d.shape
    fig = go.Figure()
    colours = ["#4a90c2", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939"]
    for i in range(L):
        for h in range(H):
            fig.add_trace(go.Scatter(x=f32(steps), y=d[:, i, h], mode="lines", name=f"layer {i}",
                                     legendgroup=f"layer {i}", showlegend=h == 0,
                                     line=dict(color=colours[i % len(colours)], width=1.3),
                                     hovertemplate=f"layer {i}, head {h}<br>step %{{x:.0f}}: %{{y:.1f}} px<extra></extra>"))
    r, c = np.divmod(np.arange(grid * grid), grid)
    uniform = float(np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :]).mean() * patch_size)
    fig.add_hline(y=uniform, line=dict(color="#888", dash="dot", width=1),
                  annotation_text=f"even attention: {uniform:.1f} px", annotation_position="bottom left",
                  annotation_font=dict(size=12, color="#666"))
    if marker_step is not None:
        fig.add_vline(x=marker_step, line=dict(color="#ff2d55", width=1.5))
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, x=0, xanchor="left"))
    style(fig, "How far the heads look", height=height, x_title="optimiser step",
          y_title="mean attention distance (pixels)")
    fig.update_layout(margin=dict(b=70))
    return subtitle(fig, "over the run: one line per head, coloured by layer")


def position_similarity_figure(similarity: np.ndarray, *, step: int, height: int = 460) -> go.Figure:
    """Fig. 7 (centre) of the ViT paper at this snapshot: one small cosine-similarity map per patch."""
    sim = f32(similarity)
    g = int(round(sim.shape[0] ** 0.5))
    fig = similarity_grid_figure(sim.reshape(g, g, g, g), title=f"Position-embedding similarity, step {step:,}",
                                 height=height)
    return subtitle(fig, f"{g} x {g} maps, one per patch, placed where the patch is; colour: cosine similarity")


def filters_figure(filters: np.ndarray, variance: np.ndarray, *, step: int, height: int = 340) -> go.Figure:
    """Fig. 7 (left) at this snapshot: principal components of the patch-embedding filters (``filters`` uint8 [k, C, P, P])."""
    components = np.asarray(filters, dtype=np.float32) / 255.0
    k = components.shape[0]
    fig = filter_pca_figure(components, variance, cols=min(8, k), title=f"Patch-embedding filters, step {step:,}",
                            height=height)
    return subtitle(fig, f"the first {k} principal components, each an RGB picture of one patch")


def top5_figure(top5: list[tuple[str, float]], *, true_label: str, step: int) -> go.Figure:
    """The probe's top-5 at this snapshot; the true class is named in the title."""
    fig = prediction_figure(top5, title=f"Top-5 for the probe at step {step:,}")
    colours = ["#2ca02c" if label == true_label else "#4a90c2" for label, _ in top5]
    fig.update_traces(marker_color=colours)
    return subtitle(fig, f"the probe is a {true_label} (green when it is among the five)")


def replay_figure(image: np.ndarray, cls_attention: list[np.ndarray], steps: list[int], held_accuracy: list[float], *,
                  layer: int, chance: float, frame_ms: int = 350, height: int = 500) -> go.Figure:
    """A finished run replayed from its snapshots, drawn by the browser: one frame per snapshot.

    Left, where the CLS token of ``layer`` looks on the probe picture (the mean of the heads of each snapshot's
    ``[L, H, N]`` attention), on one colour scale for the whole run (0 to the largest share any snapshot gives a
    patch; the bar lies under the map), so attention that concentrates as the model learns grows brighter;
    right, the held-out accuracy with a marker at the frame's step. A slider under both scrubs through the
    snapshots; "Play" runs them in order.
    """
    if len(cls_attention) != len(steps) or len(steps) != len(held_accuracy) or not steps:
        raise ValueError("one attention array, step and accuracy per snapshot, and at least one snapshot")
    maps = np.stack([f32(a)[layer].mean(axis=0) for a in cls_attention])  # [S, N]
    S, N = maps.shape
    g = int(round(N ** 0.5))
    maps = maps.reshape(S, g, g)
    size = image.shape[0]
    cell = size / g
    zmax = float(maps.max()) if float(maps.max()) > 0 else 1.0
    spacing, left = 0.14, 0.42
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=spacing, column_widths=[left, 1 - left],
                        subplot_titles=(f"CLS attention, layer {layer}<br>(the mean of its heads)", "held-out accuracy"))
    fig.add_trace(go.Image(source=image_source(image, "PNG"), x0=0, dx=1, y0=0, dy=1, hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=maps[0], x0=cell / 2 - 0.5, dx=cell, y0=cell / 2 - 0.5, dy=cell, zmin=0.0, zmax=zmax,
                             colorscale=ATTENTION_SCALE, opacity=0.7,
                             colorbar=dict(title=dict(text=f"attention share, 0–{zmax:.3g}", side="top"),
                                           orientation="h", thickness=10, x=0.0, xanchor="left", len=left * (1 - spacing),
                                           y=-0.04, yanchor="top"),
                             hovertemplate="patch row %{y:.0f}, col %{x:.0f}: %{z:.3f}<extra></extra>"), row=1, col=1)
    x, y = f32(steps), f32(held_accuracy)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color="#ff7f0e", width=2), name="held-out accuracy",
                             showlegend=False, hovertemplate="step %{x:.0f}: %{y:.1%}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=x[:1], y=y[:1], mode="markers", marker=dict(size=13, color="#ff2d55",
                             line=dict(color="white", width=1.5)), showlegend=False,
                             hovertemplate="step %{x:.0f}: %{y:.1%}<extra>this frame</extra>"), row=1, col=2)
    fig.add_hline(y=chance, line=dict(color="#888", dash="dot", width=1), row=1, col=2,
                  annotation_text=f"chance {chance:.0%}", annotation_position="bottom right",
                  annotation_font=dict(size=12, color="#666"))
    names = [f"step {int(s)}" for s in steps]
    every = max(1, -(-S // 10))  # at most about ten tick labels under the slider
    fig.frames = [go.Frame(name=names[i], traces=[1, 3],
                           data=[dict(type="heatmap", z=maps[i]), dict(type="scatter", x=x[i:i + 1], y=y[i:i + 1])])
                  for i in range(S)]
    slider = frame_slider(names, [f"{int(s):,}" if i % every == 0 or i == S - 1 else "" for i, s in enumerate(steps)],
                          prefix="snapshot at step ", x=0.16, y=-0.34)
    fig.update_layout(sliders=[slider], updatemenus=[play_buttons(names[0], back=False, frame_ms=frame_ms, y=-0.34)],
                      dragmode=False)
    fig.update_xaxes(range=[-0.5, size - 0.5], showgrid=False, zeroline=False, showticklabels=False, ticks="",
                     constrain="domain", row=1, col=1)
    fig.update_yaxes(range=[size - 0.5, -0.5], autorange=False, showgrid=False, zeroline=False, showticklabels=False,
                     ticks="", scaleanchor="x", constrain="domain", row=1, col=1)
    fig.update_xaxes(title_text="optimiser step", range=[0, float(x.max()) * 1.03 + 1], row=1, col=2)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%", row=1, col=2)
    style(fig, "Replay of the run: where the CLS token looks as the model learns", height=height)
    fig.update_layout(margin=dict(l=10, r=10, t=60, b=170))
    return subtitle(fig, f"{S} snapshots, step {int(steps[0]):,} to {int(steps[-1]):,}; press Play, or drag the slider")
