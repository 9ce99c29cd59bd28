"""The app's pages in teaching order, the page config, and the styles and script every page installs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent.parent

#: The stages in teaching order: (page file, title, icon). app.py builds the navigation from it.
PAGES = [
    ("pages/overview.py", "Overview", ":material/account_tree:"),
    ("pages/lesson.py", "Lesson", ":material/school:"),
    ("pages/patching.py", "1 · Patching", ":material/grid_on:"),
    ("pages/embeddings.py", "2 · CLS and position", ":material/add_box:"),
    ("pages/attention.py", "3 · Self-attention", ":material/visibility:"),
    ("pages/mlp.py", "4 · MLP", ":material/functions:"),
    ("pages/layers.py", "5 · Layer stack", ":material/layers:"),
    ("pages/prediction.py", "6 · Pooler and prediction", ":material/flag:"),
    ("pages/experiments.py", "7 · Experiments", ":material/science:"),
    ("pages/compare.py", "Compare two models", ":material/compare:"),
    ("pages/training.py", "8 · Training", ":material/model_training:"),
]

#: The browser tab's icon is a file of this repository, served by the app itself: a ":material/..." page
#: icon makes the browser fetch it from Google's font server, which fails offline (a classroom network).
FAVICON = str(ROOT / "assets" / "favicon.png")
PAGE_CONFIG = dict(page_title="vit-explain: a Vision Transformer, tensor by tensor", page_icon=FAVICON,
                   layout="wide", initial_sidebar_state="auto")


def leave_folder_mode() -> None:
    """Run the page through app.py's navigation even when a deep link is the server's first visit.

    Until some script calls ``st.navigation``, Streamlit treats an app with a ``pages/`` folder the old
    way: a link to ``/attention`` on a freshly started server runs ``pages/attention.py`` alone, with a
    navigation menu of file names (``app``, ``attention``, ``embeddings`` ...), for every visitor until
    someone opens ``/``. ``st.navigation`` switches that mode off; doing the same here and running
    again makes the link open the same page through app.py (same URL, so the same page). Only on a
    session's first run, which has no clicks to lose: AppTest turns folder mode back on before every
    run and runs a switched-to page on its own by design.
    """
    try:  # a Streamlit internal (as of 1.67): if it moves, pages still work, only this repair is skipped
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if not st.session_state:
            st.rerun()


def install_page_styles() -> None:
    """The page-wide CSS, the narrow-screen sidebar closer and the figures' SVG button (each run draws them again;
    the scripts install themselves once per browser tab)."""
    st.sidebar.html(PAGE_CSS)
    st.sidebar.html(CLOSE_SIDEBAR_AFTER_NAVIGATION_JS, unsafe_allow_javascript=True)
    st.sidebar.html(SVG_BUTTON_JS, unsafe_allow_javascript=True)


#: Every figure's toolbar (shown while the pointer is over it) downloads it as a PNG at twice its size (Plotly's
#: own button, named by ``ui.parts.figure_file_name``); this script adds a second button beside it that saves the
#: same figure as SVG. Both are made by plotly.js in the browser: the server does no work. The SVG button asks
#: Plotly's own download button for an SVG once (its options are read when it is clicked) and puts them back.
SVG_BUTTON_JS = """
<script>
if (!window.vitExplainSvgButtons) {
  window.vitExplainSvgButtons = true;
  const addButton = (group) => {
    if (group.querySelector('.vit-svg-btn')) return;
    const png = group.querySelector('.modebar-btn[data-title]:not(.vit-svg-btn)');
    if (!png) return;
    const svg = document.createElement('button');
    svg.type = 'button';
    svg.className = 'modebar-btn vit-svg-btn';
    svg.setAttribute('rel', 'tooltip');
    svg.setAttribute('data-title', 'Download plot as SVG');
    svg.setAttribute('aria-label', 'Download plot as SVG');
    svg.style.cssText = 'font: bold 9px sans-serif; line-height: 16px; padding: 3px 4px; color: rgba(68,68,68,0.7); cursor: pointer; background: none; border: 0;';
    svg.textContent = 'SVG';
    svg.addEventListener('click', (event) => {
      event.preventDefault();
      const gd = group.closest('.js-plotly-plot');
      const options = gd && gd._context && gd._context.toImageButtonOptions;
      if (!options) return;
      const before = {format: options.format, scale: options.scale};
      options.format = 'svg'; options.scale = 1;
      png.click();
      setTimeout(() => { options.format = before.format; options.scale = before.scale; }, 0);
    });
    group.appendChild(svg);
  };
  new MutationObserver(() => document.querySelectorAll('.modebar-group').forEach(addButton))
    .observe(document.body, {childList: true, subtree: true});
}
</script>
"""


#: Page-wide styles: a compact sidebar, and less empty margin beside the page on laptop and projector
#: widths (Streamlit's wide layout keeps 5rem on each side, which left 540 px for the page at 1024 px).
PAGE_CSS = """
<style>
section[data-testid="stSidebar"] [data-testid="stMetricValue"] { font-size: 1.1rem; }
section[data-testid="stSidebar"] [data-testid="stMetricLabel"] p { font-size: 0.8rem; }
section[data-testid="stSidebar"] h2 { font-size: 1.15rem; padding: 0.4rem 0 0 0; }
@media (max-width: 1500px) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.5rem; padding-right: 1.5rem; padding-top: 3rem; }
}
</style>
"""


#: On a narrow screen (under Streamlit's 768 px breakpoint, e.g. a 1024 px laptop at 150 % zoom) the
#: sidebar lies over the page, and Streamlit leaves it open after a page is chosen in it: close it then.
#: Installed once per browser tab; it only clicks Streamlit's own "collapse sidebar" button.
CLOSE_SIDEBAR_AFTER_NAVIGATION_JS = """
<script>
if (!window.vitExplainNavCloser) {
  window.vitExplainNavCloser = true;
  document.addEventListener("click", (event) => {
    if (window.innerWidth >= 768 || !event.target.closest('[data-testid="stSidebarNav"] a')) return;
    setTimeout(() => {
      const sidebar = document.querySelector('[data-testid="stSidebar"]');
      const close = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
      if (sidebar && close && sidebar.getAttribute("data-collapsed") !== "true") close.click();
    }, 200);
  }, true);
}
</script>
"""
