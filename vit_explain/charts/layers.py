"""Figures for the layer-stack page (ViTLayer, ViTEncoder): what happens to the tokens with depth.

Pure functions: numpy arrays in, Plotly figures (or small arrays / strings) out; no Streamlit.
The numbers come from :mod:`vit_explain.analysis`; this module only lays them out. Pictures under
overlays are sent as a compressed JPEG data URI (a few tens of KB) instead of a raw uint8 array
(150 KB per copy at 224 x 224), so a page can show the photo several times within its budget.
"""

from __future__ import annotations


import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import analysis
from .common import ATTENTION_SCALE, attention_range, equal_axes, f32, grid_lines, image_source, scale_label, style

#: Qualitative colours for heads (cycled when there are more heads than colours).
HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173"]


# ------------------------------------------------------------------------------- layer numbering
# One numbering everywhere (as in the code): "layer i" is encoder.layer[i], counted from 0;
# hidden_states[0] is "the embeddings" and hidden_states[i + 1] is the stream "after layer i".
def state_name(k: int) -> str:
    """The name of ``hidden_states[k]``: "embeddings" for 0, else "after layer k-1"."""
    return "embeddings" if k == 0 else f"after layer {k - 1}"


def state_ticks(count: int) -> dict:
    """Axis ticks for the ``count`` hidden states 0..count-1: "emb.", "0", "1" ... (read: after layer i)."""
    step = 1 if count <= 25 else max(1, count // 12)
    values = list(range(0, count, step))
    return dict(tickmode="array", tickvals=values, ticktext=["emb." if k == 0 else str(k - 1) for k in values])


# ------------------------------------------------------------------------------- pictures
def picture_trace(image: np.ndarray, source: str | None = None) -> go.Image:
    """The picture as a light-weight image trace in pixel coordinates (y downwards)."""
    return go.Image(source=source or image_source(image, "jpeg", 88), x0=0, y0=0, dx=1, dy=1, hoverinfo="skip")


def _map_trace(values: np.ndarray, image_size: int, *, zmin, zmax, colorscale, opacity, showscale,
               colorbar_title, name) -> go.Heatmap:
    """A [g, g] map stretched over an image axis of ``image_size`` pixels (cell centres at patch centres)."""
    g = values.shape[0]
    step = image_size / g
    return go.Heatmap(
        z=f32(values), x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step, zmin=zmin, zmax=zmax,
        colorscale=colorscale, opacity=opacity, showscale=showscale, name=name,
        colorbar=dict(title=dict(text=colorbar_title, side="right")),
        hovertemplate=f"{name}<br>patch centre x %{{x:.0f}}, y %{{y:.0f}} px: %{{z:.4f}}<extra></extra>",
    )


def overlay_panels(image: np.ndarray, maps: list[np.ndarray], titles: list[str], title: str, *,
                   colorbar_title: str, zmin: float = 0.0, zmax: float = 1.0,
                   colorscale: str = ATTENTION_SCALE, opacity: float = 0.65, height: int = 430,
                   patch_size: int | None = None) -> go.Figure:
    """Several [g, g] maps side by side, each over the picture, on ONE shared colour scale."""
    n = len(maps)
    size = int(image.shape[0])
    source = image_source(image, "jpeg", 88)
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=0.04)
    for i, values in enumerate(maps):
        fig.add_trace(picture_trace(image, source), row=1, col=i + 1)
        fig.add_trace(_map_trace(values, size, zmin=zmin, zmax=zmax, colorscale=colorscale, opacity=opacity,
                                 showscale=(i == n - 1), colorbar_title=colorbar_title, name=titles[i]),
                      row=1, col=i + 1)
        if patch_size:
            grid_lines(fig, size, patch_size, row=1, col=i + 1, color="rgba(255,255,255,0.25)", width=0.5)
        equal_axes(fig, row=1, col=i + 1)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[-0.5, size - 0.5])
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[size - 0.5, -0.5],
                     autorange=False)
    return style(fig, title, height=height)


# ------------------------------------------------------------------------------- the block
def layer_block_svg(layer_index: int | None = None) -> str:
    """One pre-norm ViTLayer as a small SVG diagram: two branches, each added back to the stream.

    Drawn here as plain SVG (no Graphviz in the browser: its layout engine wanted a web-worker script
    Streamlit does not ship, and warned about it in the console on every visit).
    """
    name = "ViTLayer" if layer_index is None else f"ViTLayer (layer {layer_index})"
    boxes = [  # (y, label, second line, fill)
        (48, "layernorm_before", "", "#eef3fb"),
        (108, "ViTAttention", "heads mix the tokens", "#dbe8ff"),
        (228, "layernorm_after", "", "#eef3fb"),
        (288, "ViTIntermediate + ViTOutput.dense", "MLP: each token alone", "#dff5e1"),
    ]
    cx, w, h = 210, 250, 42
    parts = [f'<text x="{cx}" y="16" text-anchor="middle" font-size="15" font-weight="600">{name}</text>',
             f'<text x="{cx}" y="36" text-anchor="middle" font-size="13">x  [b, t, d]</text>']
    for y, label, second, fill in boxes:
        parts.append(f'<rect x="{cx - w / 2}" y="{y}" width="{w}" height="{h}" rx="8" fill="{fill}" stroke="#5b7db1"/>')
        if second:
            parts.append(f'<text x="{cx}" y="{y + 18}" text-anchor="middle" font-size="13">{label}</text>')
            parts.append(f'<text x="{cx}" y="{y + 34}" text-anchor="middle" font-size="12" fill="#555">{second}</text>')
        else:
            parts.append(f'<text x="{cx}" y="{y + 26}" text-anchor="middle" font-size="13">{label}</text>')
    for y in (192, 372):  # the two "+" nodes
        parts.append(f'<circle cx="{cx}" cy="{y}" r="13" fill="#fff3c4" stroke="#c9a227"/>')
        parts.append(f'<text x="{cx}" y="{y + 5}" text-anchor="middle" font-size="16">+</text>')
    arrows = [(40, 48), (90, 108), (150, 179), (205, 228), (270, 288), (330, 359), (385, 404)]
    for y0, y1 in arrows:
        parts.append(f'<line x1="{cx}" y1="{y0}" x2="{cx}" y2="{y1}" stroke="#444" marker-end="url(#arrow)"/>')
    for y0, y1 in ((40, 192), (205, 372)):  # residual connections: around each branch
        parts.append(f'<path d="M {cx} {y0 + 4} H 40 V {y1} H {cx - 13}" fill="none" stroke="#c9a227" '
                     f'stroke-width="2" stroke-dasharray="6 4" marker-end="url(#gold)"/>')
        parts.append(f'<text x="46" y="{(y0 + y1) / 2 + 4}" font-size="12" fill="#8a6d00">residual</text>')
    parts.append(f'<text x="{cx}" y="420" text-anchor="middle" font-size="13">x  [b, t, d]</text>')
    defs = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker>'
            '<marker id="gold" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#c9a227"/></marker></defs>')
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 360 430" width="100%" style="max-width:360px" '
            'font-family="Helvetica, Arial, sans-serif" role="img" aria-label="one ViTLayer">'
            + defs + "".join(parts) + "</svg>")


# ------------------------------------------------------------------------------- residual stream
def stream_norms(hidden_states: np.ndarray, residuals: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`vit_explain.analysis.stream_norms` as float32: ``stream`` [L+1, T], ``attention`` and ``mlp`` [L, T]."""
    return {name: f32(values) for name, values in analysis.stream_norms(hidden_states, residuals).items()}


def stream_figure(norms: dict[str, np.ndarray], token: int | None, token_label: str) -> go.Figure:
    """Lines over depth: the stream's norm after each layer and the size of each branch's update.

    ``token`` None averages over the patch tokens (index 1 onwards); otherwise that one token.
    """
    def pick(a: np.ndarray) -> np.ndarray:
        if token is None:
            return f32(a[:, 1:].mean(axis=1) if a.shape[1] > 1 else a[:, 0])
        return f32(a[:, token])

    stream, attn, mlp = pick(norms["stream"]), pick(norms["attention"]), pick(norms["mlp"])
    L = len(attn)
    fig = go.Figure()
    layers = np.arange(L, dtype=np.int32)
    fig.add_trace(go.Scatter(x=np.arange(L + 1, dtype=np.int32), y=stream, mode="lines+markers", name="‖stream x‖",
                             line=dict(color="#333333", width=3), text=[state_name(k) for k in range(L + 1)],
                             hovertemplate="%{text}: ‖x‖ = %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=np.arange(1, L + 1, dtype=np.int32), y=attn, mode="lines+markers", customdata=layers,
                             name="‖attention update‖", line=dict(color="#3b6fd4"),
                             hovertemplate="layer %{customdata}: attention adds ‖·‖ = %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=np.arange(1, L + 1, dtype=np.int32), y=mlp, mode="lines+markers", customdata=layers,
                             name="‖MLP update‖", line=dict(color="#2e9e52"),
                             hovertemplate="layer %{customdata}: the MLP adds ‖·‖ = %{y:.3f}<extra></extra>"))
    fig.update_xaxes(range=[-0.3, L + 0.3], **state_ticks(L + 1))
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", x=0.0, y=-0.3, xanchor="left", yanchor="top"))
    fig = style(fig, f"The residual stream across depth ({token_label})", height=400,
                x_title="after layer (emb. = the embeddings)", y_title="vector length (L2 norm)")
    fig.update_layout(margin=dict(b=10))
    return fig


def layer_similarity_figure(similarity: np.ndarray) -> go.Figure:
    """Line: mean cosine similarity of each token before and after every layer."""
    sim = f32(similarity)
    x = np.arange(len(sim), dtype=np.int32)  # layer i = encoder.layer[i]
    fig = go.Figure(go.Scatter(x=x, y=sim, mode="lines+markers", line=dict(color="#8a3ffc", width=3),
                               hovertemplate="layer %{x}: cos(x before, x after) = %{y:.4f}<extra></extra>",
                               name="cosine similarity"))
    low = float(min(0.0, sim.min())) if sim.size else 0.0
    fig.update_yaxes(range=[low - 0.02, 1.02])
    fig.update_xaxes(dtick=1 if len(sim) <= 24 else None)
    return style(fig, "How much each layer turns the tokens", height=380,
                 x_title="layer", y_title="cos(token before, token after)")


# ------------------------------------------------------------------------------- token norms
def token_labels(num_tokens: int, grid: int, prefix_names: list[str] | None = None) -> list[str]:
    """Readable names: the prefix tokens ("CLS", "DIST", "REG0" ...), then "patch k (row r, col c)"."""
    out = list(prefix_names or ["CLS"])
    for k in range(num_tokens - len(out)):
        r, c = divmod(k, grid)
        out.append(f"patch {k} (row {r}, col {c})")
    return out


def token_norms_figure(norms: np.ndarray, mask: np.ndarray, grid: int, *, relative: bool = False,
                       prefix_names: list[str] | None = None) -> go.Figure:
    """Heatmap layers x tokens of token norms; flagged high-norm tokens marked with a ring.

    ``relative`` divides each layer's row by the median norm of its patch tokens, so outliers stand
    out even though the whole stream grows with depth. ``prefix_names`` (default ["CLS"]) names the
    tokens before the patches; register tokens ("REG...") get a square marker on every layer.
    """
    norms = f32(norms)
    Lp1, T = norms.shape
    prefix = list(prefix_names or ["CLS"])
    if relative:
        body = norms[:, len(prefix):] if T > len(prefix) else norms
        med = np.median(body, axis=1, keepdims=True)
        shown = f32(np.divide(norms, med, out=np.ones_like(norms), where=med > 0))
        bar, hover = "‖token‖ / layer median", "%{text}, token %{x}: %{z:.2f} x the median<extra></extra>"
    else:
        shown = norms
        bar, hover = "‖token‖", "%{text}, token %{x}: ‖x‖ = %{z:.3f}<extra></extra>"
    names = np.array([[state_name(k)] * T for k in range(Lp1)])
    fig = go.Figure(go.Heatmap(
        z=shown, x0=0, dx=1, y0=0, dy=1, colorscale="Plasma", zmin=0, text=names,
        colorbar=dict(title=dict(text=bar, side="right")), hovertemplate=hover))
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if len(xs):
        fig.add_trace(go.Scatter(x=xs.astype(np.int32), y=ys.astype(np.int32), mode="markers",
                                 marker=dict(symbol="circle-open", size=9, color="#00e5ff", line=dict(width=2)),
                                 name="high-norm outlier", showlegend=True,
                                 text=[state_name(int(k)) for k in ys],
                                 hovertemplate="outlier: token %{x}, %{text}<extra></extra>"))
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    registers = [i for i, name in enumerate(prefix) if name.startswith("REG")]
    if registers:
        xs = np.repeat(np.asarray(registers, dtype=np.int32), Lp1)
        ys = np.tile(np.arange(Lp1, dtype=np.int32), len(registers))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="register token",
                                 marker=dict(symbol="square-open", size=9, color="#ffffff", line=dict(width=2)),
                                 text=[state_name(int(k)) for k in ys],
                                 hovertemplate="register token %{x}, %{text}<extra></extra>"))
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    fig.update_yaxes(autorange="reversed", **state_ticks(Lp1))
    fig.update_xaxes(range=[-0.5, T - 0.5])
    first = ", ".join(prefix) if len(prefix) <= 3 else f"{prefix[0]}, {prefix[1]} ... {prefix[-1]}"
    return style(fig, f"Token norms after every layer (tokens {first}, then patches row by row)"
                 if len(prefix) > 1 else "Token norms after every layer (token 0 = CLS, then patches row by row)",
                 height=max(300, 26 * Lp1 + 140), x_title="token", y_title="after layer (emb. = the embeddings)")


# ------------------------------------------------------------------------------- CLS attention per layer
def cls_attention_maps(attentions: np.ndarray, grid: int) -> np.ndarray:
    """CLS query's raw attention on each patch, averaged over heads, per layer: [L, g, g] float32
    (:func:`vit_explain.analysis.cls_attention_map` of every layer)."""
    a = np.asarray(attentions)
    if a.ndim != 4:
        raise ValueError(f"cls_attention_maps: expected [L, H, T, T] with T >= {grid * grid + 1}, got {a.shape}")
    return f32(analysis.cls_attention_map(a, grid))


def cls_attention_facets(maps: np.ndarray, *, fixed: bool = False, relative: bool = False, cols: int = 6,
                         cell: int = 150) -> go.Figure:
    """Small multiples of the per-layer CLS attention maps (panel ``i`` is encoder.layer[i]) on ONE colour scale.

    The scale runs from 0 to the largest weight shown (``fixed``: 0..1), written on the colour bar.
    ``relative`` instead divides each map by its own maximum (each layer's strongest patch is 1), which
    shows every layer's pattern but no longer compares layers. Hover always shows the raw weight.
    """
    maps = f32(maps)
    L, g, _ = maps.shape
    if relative:
        shown = maps / np.maximum(maps.reshape(L, -1).max(axis=1), 1e-12)[:, None, None]
        zmin, zmax, bar = 0.0, 1.0, "share of<br>layer max"
    else:
        shown = maps
        zmin, zmax = attention_range(maps, fixed=fixed)
        bar = scale_label("weight", zmin, zmax, fixed)
    cols = max(1, min(cols, L))
    rows = -(-L // cols)
    titles = [f"layer {i}" for i in range(L)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.015,
                        vertical_spacing=min(0.12, 0.3 / rows) if rows > 1 else 0.02)
    for i in range(L):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(
            z=f32(shown[i]), customdata=maps[i], zmin=zmin, zmax=zmax, colorscale=ATTENTION_SCALE, showscale=(i == 0),
            colorbar=dict(title=dict(text=bar, side="top"), thickness=12),
            hovertemplate=f"layer {i}<br>patch row %{{y}}, col %{{x}}<br>weight %{{customdata:.4f}}<extra></extra>"),
            row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, autorange="reversed")
    for i in range(L):
        axis = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
        fig.layout[f"yaxis{axis}"].constrain = "domain"
        fig.layout[f"xaxis{axis}"].constrain = "domain"
    what = "each map scaled to its own maximum" if relative else "one colour scale for all layers"
    return style(fig, f"Where CLS looks, layer by layer (mean over heads; {what})", height=rows * cell + 90)


# ------------------------------------------------------------------------------- Figure 7 (right)
def attention_distance_figure(distance: np.ndarray, *, uniform_px: float | None = None,
                              image_size: int | None = None) -> go.Figure:
    """Scatter: x = layer, y = mean attention distance in pixels, one dot per head (Fig. 7 right)."""
    d = f32(distance)
    L, H = d.shape
    fig = go.Figure()
    offsets = (np.arange(H, dtype=np.float32) - (H - 1) / 2) * (0.5 / max(H, 1)) if H > 1 else np.zeros(1, np.float32)
    for h in range(H):
        fig.add_trace(go.Scatter(
            x=f32(np.arange(L) + offsets[h]), y=d[:, h], mode="markers", name=f"head {h}", showlegend=False,
            marker=dict(size=8, color=HEAD_COLOURS[h % len(HEAD_COLOURS)], line=dict(width=0.5, color="white")),
            customdata=np.arange(L, dtype=np.int32),
            hovertemplate=f"layer %{{customdata}}, head {h}: %{{y:.1f}} px<extra></extra>"))
    if uniform_px is not None and np.isfinite(uniform_px):
        fig.add_hline(y=float(uniform_px), line=dict(color="#888888", dash="dash"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="#888888", dash="dash"),
                                 name=f"uniform attention (fully global): {uniform_px:.1f} px", hoverinfo="skip"))
    top = float(np.nanmax(d)) if np.isfinite(d).any() else 1.0
    if uniform_px is not None and np.isfinite(uniform_px):
        top = max(top, float(uniform_px))
    fig.update_yaxes(range=[0, top * 1.12 + 1e-6])
    fig.update_xaxes(dtick=1 if L <= 24 else None, range=[-0.6, L - 0.4])
    fig.update_layout(showlegend=True, legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.22, yanchor="top"))
    return style(fig, "Mean attention distance per head (ViT paper, Fig. 7 right)", height=420,
                 x_title="layer (depth)", y_title="mean distance (pixels)")


def entropy_figure(entropy: np.ndarray, num_tokens: int) -> go.Figure:
    """Heatmap layers x heads of attention entropy (nats); the bar tops out at log(T), uniform attention."""
    e = f32(entropy)
    L, H = e.shape
    top = float(np.log(max(num_tokens, 2)))
    fig = go.Figure(go.Heatmap(
        z=e, x0=0, dx=1, y0=0, dy=1, zmin=0.0, zmax=top, colorscale="Cividis",
        colorbar=dict(title=dict(text=f"entropy (nats)<br>max log {num_tokens} = {top:.2f}", side="right")),
        hovertemplate="layer %{y}, head %{x}: %{z:.3f} nats<extra></extra>"))
    fig.update_yaxes(autorange="reversed", dtick=1 if L <= 24 else None)
    fig.update_xaxes(dtick=1 if H <= 24 else None)
    return style(fig, "Attention entropy per head",
                 height=max(300, 24 * L + 140), x_title="head", y_title="layer")


# ------------------------------------------------------------------------------- token PCA
def token_pca_figure(image: np.ndarray, rgb: np.ndarray, layer: int, patch_size: int) -> go.Figure:
    """The picture beside its patch tokens coloured by their first three principal components.

    ``layer`` indexes the hidden states: 0 is the embeddings, ``k`` the stream after layer ``k - 1``.
    """
    size = int(image.shape[0])
    g = rgb.shape[0]
    colours = np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=["the picture", f"token PCA, {state_name(layer)}<br>(R, G, B = PC 1, 2, 3)"])
    fig.add_trace(picture_trace(image), row=1, col=1)
    step = size / g
    fig.add_trace(go.Image(z=colours, x0=step / 2 - 0.5, dx=step, y0=step / 2 - 0.5, dy=step,
                           hovertemplate="patch centre x %{x:.0f}, y %{y:.0f} px<extra></extra>"), row=1, col=2)
    for col in (1, 2):
        equal_axes(fig, row=1, col=col)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[-0.5, size - 0.5])
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, range=[size - 0.5, -0.5],
                     autorange=False)
    return style(fig, "Which patches the model treats alike", height=430)
