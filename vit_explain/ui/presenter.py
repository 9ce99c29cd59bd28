"""Presenter mode: the whole app set for a projector, switched on by one toggle in the sidebar.

What it changes, on every page, while it is on:

* text: every paragraph, list, caption, label, button and table of the page is at least 22 px
  (headings stay larger); figure text at least 18 px (:func:`for_the_projector`, called by ``ui.plot``);
* code blocks and shape tables are folded to their first line (pointing at one unfolds it), so the
  figures and the words carry the talk; the lesson page folds its own shape tables into expanders;
* figures full width: columns that hold a figure are stacked, one figure under the other;
* the sidebar closes when the mode is switched on, when a link opens in it, and after a page is
  chosen in the sidebar (open it again with the arrow at the top left).

The toggle's value is kept across pages (``persist_state="session"``) and travels in links
(``presenter`` in ``ui.links.LINKED``). Nothing here touches a figure or the page when the mode is off.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from . import state

#: The toggle's session key (and widget key): True while the app is set for a projector.
PRESENTER = "view:presenter"
#: The smallest text size of the page and of figures, in CSS pixels, while presenting.
BODY_PX = 22
FIGURE_PX = 18


def presenting() -> bool:
    """True while presenter mode is on (for this session)."""
    value = st.session_state.get(PRESENTER)
    return value if isinstance(value, bool) else False


def presenter_toggle() -> bool:
    """Draw the sidebar's "Presenter mode" toggle, and the styles and script of the mode; returns whether it is on.

    Called once per run by ``ui.sidebar()``. The script (installed once per browser tab) closes the sidebar
    when the mode is switched on and after each page change while it is on; the styles are sent only while
    the mode is on.
    """
    key = state.remember(PRESENTER, lambda v: v if isinstance(v, bool) else False)
    on = st.sidebar.toggle(
        "Presenter mode", key=key, persist_state=state.PERSIST,
        help="For a projector: larger text (22 px) and figure text (18 px), code and shape tables folded, "
             "figures full width, the sidebar closed. Step through the lesson with the arrow keys or a "
             "presentation clicker.")
    st.sidebar.html(CLOSE_SIDEBAR_JS, unsafe_allow_javascript=True)
    if on:
        st.sidebar.html(PRESENTER_CSS)
    return bool(on)


# ---------------------------------------------------------------------------------- figures
#: The font properties of a Plotly figure, wherever they sit (layout, traces, axes, annotations, legend,
#: colour bars, sliders, buttons, frames).
_FONT_KEYS = ("font", "textfont", "tickfont", "titlefont", "insidetextfont", "outsidetextfont")


#: Trace types drawn without x and y axes.
_NOT_CARTESIAN = {"treemap", "sunburst", "icicle", "pie", "funnelarea", "sankey", "table", "parcoords", "parcats",
                  "indicator", "scattergeo", "choropleth", "scatterpolar", "scatterpolargl", "barpolar",
                  "scatterternary", "scattermapbox", "scattermap", "choroplethmap", "densitymap", "scatter3d",
                  "surface", "mesh3d", "cone", "streamtube", "volume", "isosurface"}


def _at_least(node: Any, size: int) -> None:
    """Raise every font size under ``node`` (a figure as a dict) to at least ``size``, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _FONT_KEYS and isinstance(value, dict):
                current = value.get("size")
                if isinstance(current, (int, float)) and not isinstance(current, bool) and current < size:
                    value["size"] = size
                _at_least(value, size)
            elif isinstance(value, (dict, list)):
                _at_least(value, size)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _at_least(item, size)


def for_the_projector(fig):
    """In presenter mode, the figure with every text at least 18 px (a new figure); else ``fig`` itself.

    The layout's default font and every explicit size under it (tick labels, panel titles, colour bars,
    legends, text on bars and cells, sliders and buttons, in frames too) are raised; larger sizes stay.
    Called by ``ui.plot`` for every figure of every page.
    """
    if not presenting():
        return fig
    import plotly.graph_objects as go

    spec = fig.to_dict()
    layout = spec.setdefault("layout", {})
    font = layout.setdefault("font", {})
    font["size"] = max(FIGURE_PX, font.get("size") or 0)
    # Streamlit's chart theme sets the tick labels, axis titles, legend and hover label of the first axes
    # explicitly (12 to 14 px), which beats the layout's font: set them explicitly too.
    axes = {k for k in layout if k.startswith(("xaxis", "yaxis"))}
    if any(trace.get("type", "scatter") not in _NOT_CARTESIAN for trace in spec.get("data", [])):
        axes |= {"xaxis", "yaxis"}  # (a figure without x and y axes must not get them: Plotly would draw them)
    for name in axes:
        axis = layout.setdefault(name, {})
        axis.setdefault("tickfont", {}).setdefault("size", FIGURE_PX)
        title = axis.setdefault("title", {})
        if isinstance(title, dict):
            title.setdefault("font", {}).setdefault("size", FIGURE_PX)
    for name in ("legend", "hoverlabel"):
        layout.setdefault(name, {}).setdefault("font", {}).setdefault("size", FIGURE_PX)
    if any(trace.get("type") in ("bar", "funnel", "waterfall") for trace in spec.get("data", [])):
        layout["uniformtext"] = {"minsize": FIGURE_PX, "mode": "show"}  # Plotly shrinks text on bars to fit
    # at the larger size a colour bar's title above the bar runs into its top tick label: put it beside the bar
    for trace in spec.get("data", []):
        for bar in (trace.get("colorbar"), (trace.get("marker") or {}).get("colorbar")):
            if isinstance(bar, dict) and isinstance(bar.get("title"), dict):
                bar["title"]["side"] = "right"
    # a legend under the plot runs into the x axis title: put it above the plot (figure titles are drawn by
    # Streamlit above the chart, so that room is free)
    legend = layout.get("legend") or {}
    if legend.get("orientation") == "h" and isinstance(legend.get("y"), (int, float)) and legend["y"] < 0:
        legend.update(y=1.02, yanchor="bottom")
    _at_least(spec, FIGURE_PX)
    height = layout.get("height")
    if isinstance(height, (int, float)) and height < 560:  # the larger text needs more room: bars, rows, panels
        layout["height"] = int(round(height * 1.2))
    margin = layout.get("margin") or {}
    if isinstance(margin.get("t"), (int, float)):  # room for panel titles and buttons at the larger size
        margin["t"] = max(margin["t"], 48)
    return go.Figure(spec, skip_invalid=True)


# ---------------------------------------------------------------------------------- styles and script
#: The page for a projector. ``max(22px, 1em)`` keeps larger text (headings, metric values) as it is.
PRESENTER_CSS = f"""
<style>
[data-testid="stMain"] :is(p, li, label, summary, td, th, input, textarea,
  [data-testid="stCaptionContainer"], [data-testid="stMarkdownContainer"] :is(div, span)):not(.katex *) {{
  font-size: max({BODY_PX}px, 1em) !important;
  line-height: 1.45;
}}
[data-testid="stMain"] [data-testid="stMarkdownContainer"] :is(code) {{ font-size: 0.9em !important; }}
[data-testid="stMain"] h1 {{ font-size: 2.4rem !important; }}
[data-testid="stMain"] h2 {{ font-size: 2.0rem !important; }}
[data-testid="stMain"] h3 {{ font-size: 1.7rem !important; }}
[data-testid="stMainBlockContainer"] {{ padding-top: 4rem !important; }}
/* figures full width: a row of columns that holds a figure becomes a column of rows */
[data-testid="stMain"] [data-testid="stHorizontalBlock"]:has([data-testid="stPlotlyChart"]) {{
  flex-direction: column !important; flex-wrap: nowrap !important;
}}
[data-testid="stMain"] [data-testid="stHorizontalBlock"]:has([data-testid="stPlotlyChart"]) > [data-testid="stColumn"] {{
  width: 100% !important; max-width: 100% !important; flex: 1 1 auto !important;
}}
/* code and shape tables folded to their first line; pointing at one unfolds it */
[data-testid="stMain"] [data-testid="stCode"],
[data-testid="stMain"] [data-testid="stMarkdown"]:has(table) {{
  max-height: 2.9em; overflow: hidden; position: relative; cursor: zoom-in;
}}
[data-testid="stMain"] [data-testid="stCode"]::after,
[data-testid="stMain"] [data-testid="stMarkdown"]:has(table)::after {{
  content: "folded for the projector: point here to unfold"; position: absolute; right: 0.5rem; bottom: 0.2rem;
  font-size: 16px; color: #555; background: rgba(255,255,255,0.9); padding: 0 0.4rem;
}}
[data-testid="stMain"] [data-testid="stCode"]:hover,
[data-testid="stMain"] [data-testid="stMarkdown"]:has(table):hover {{ max-height: none; overflow: visible; }}
[data-testid="stMain"] [data-testid="stCode"]:hover::after,
[data-testid="stMain"] [data-testid="stMarkdown"]:has(table):hover::after {{ content: none; }}
</style>
"""

#: Installed once per browser tab. Closes the sidebar (Streamlit's own "collapse" button) when the presenter
#: toggle is switched on, when the page opens with it on (a link), and after a page is chosen in the sidebar
#: while it is on. The toggle's checkbox says whether the mode is on.
CLOSE_SIDEBAR_JS = """
<script>
if (!window.vitExplainPresenter) {
  window.vitExplainPresenter = true;
  const presenting = () => {
    const box = document.querySelector('.st-key-view-presenter input[type="checkbox"]');
    return !!(box && box.checked);
  };
  const collapse = () => {
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    const close = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (sidebar && close && sidebar.getAttribute("aria-expanded") !== "false"
        && sidebar.getAttribute("data-collapsed") !== "true") close.click();
  };
  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box && box.closest && box.closest('.st-key-view-presenter') && box.checked) setTimeout(collapse, 400);
  }, true);
  document.addEventListener("click", (event) => {
    if (presenting() && event.target.closest && event.target.closest('[data-testid="stSidebarNav"] a')) {
      setTimeout(collapse, 300);
    }
  }, true);
  let tries = 0;
  const atStart = setInterval(() => {
    tries += 1;
    if (presenting()) { collapse(); clearInterval(atStart); }
    if (tries > 20) clearInterval(atStart);
  }, 250);
}
</script>
"""
