"""The parts pages are built from: header, shapes table, einops lines, the real source, closed sections,
figures, the trace download, what the model knows, the next-stage link, and the page scaffold."""

from __future__ import annotations

import functools
import inspect
import textwrap
import threading
from typing import Any, Callable

import streamlit as st

from . import keep, state
from .navigation import PAGES
from .presenter import for_the_projector
from .run import Run, trace_download
from .sources import bundled_name, get_model


def open_page(path: str) -> Run:
    """What every stage page starts with: the shared sidebar, and the run it makes.

    When nothing can run (no picture, a model that does not load, settings that cannot run) the reason is
    already on the page and the page stops here, so the rest of a page file can count on a run.
    ``path`` is the page's file as listed in ``PAGES``.
    """
    from .navigation import leave_folder_mode
    from .sidebar import sidebar

    _check_page(path)
    leave_folder_mode()  # first, while a new session's state is still empty (see there)
    st.session_state[_CURRENT_PAGE] = path  # names the figures' downloads
    keep.start(path)  # what this run draws is noted for "Download this page"
    run = sidebar()
    st.session_state[_NOTICE_SLOT] = st.empty()  # where a link's refused values are said (see close_page)
    if run is None:
        finish_link()
        st.stop()
    return run


def close_page(run: Run, path: str) -> None:
    """What every stage page ends with: the trace download and the link to the next stage."""
    _check_page(path)
    if run is not None:
        left, right = st.columns(2)
        with left:
            download_trace(run, key=f"{path}:download")
        with right:
            keep.download_page_button(run, path, next(t for p, t, _ in PAGES if p == path))
    next_stage(path)
    finish_link()


#: The page file running now (for the names of downloaded figures).
_CURRENT_PAGE = "_current_page"
#: The placeholder at the top of the page for the link notice.
_NOTICE_SLOT = "_link_notice_slot"


def finish_link() -> None:
    """The address bar becomes a link to this view; the sidebar offers to copy it; a link's refused values are said."""
    from .links import link_control, link_notice, write_link

    write_link()
    link_control()
    slot = st.session_state.pop(_NOTICE_SLOT, None)
    if slot is not None:
        link_notice(slot)


def _check_page(path: str) -> None:
    if path not in [p for p, _, _ in PAGES]:
        raise ValueError(f"{path!r} is not one of the app's pages: {[p for p, _, _ in PAGES]}")


def fixed_attention_scale(where=None) -> bool:
    """The toggle every page with attention maps shows: a fixed 0..1 colour scale instead of a fitted one.

    One setting for the whole app (``state.ATTENTION_SCALE``, kept across pages). Off by default: each
    figure's colours then run from 0 to the largest weight it shows, one scale for all its panels, written
    on its colour bar.
    """
    key = state.remember(state.ATTENTION_SCALE, lambda v: v if isinstance(v, bool) else False)
    return (where or st).toggle(
        "Fixed 0..1 colour scale", key=key, persist_state=state.PERSIST,
        help="Off: colours run from 0 to the largest weight the figure shows (one scale for all its panels, "
             "written on the colour bar), so weak but real patterns stay visible. On: every attention figure "
             "uses softmax's full range 0..1; weights spread over many patches then look dark.")


def stage_header(title: str, summary: str, classes: list[str] | None = None) -> None:
    """Title, what this stage does in plain words, and which classes of the model code it covers."""
    st.title(title)
    keep.record_text("title", title)
    keep.record_text("markdown", summary)
    if classes:
        st.caption("Classes in the code on this page: " + " · ".join(f"`{c}`" for c in classes))
    st.markdown(summary)


def shapes(rows: list[tuple[str, str, tuple[int, ...]]]) -> None:
    """A table of live tensor shapes: (what, named shape such as "[batch, tokens, hidden]", numbers)."""
    lines = ["| tensor | shape | here |", "|---|---|---|"]
    for what, named, numbers in rows:
        lines.append(f"| {what} | `{named}` | `[{', '.join(str(int(n)) for n in numbers)}]` |")
    st.markdown("\n".join(lines))


def einops_expression(code: str, caption: str | None = None) -> None:
    st.code(textwrap.dedent(code).strip(), language="python")
    if caption:
        st.caption(caption)


_SOURCE_LOCK = threading.Lock()


@functools.cache
def _source_of(obj: Any) -> str:
    # inspect.getsource parses the whole module with `ast`; under many concurrent sessions that raised
    # "SystemError: AST constructor recursion depth mismatch" in the load test. One parse per object, serialised.
    with _SOURCE_LOCK:
        return inspect.getsource(obj)


def source_key(*objects: Any) -> str:
    """The widget key of the source-code section that shows these objects."""
    return "source:" + "+".join(getattr(obj, "__qualname__", str(obj)) for obj in objects)


def show_source(*objects: Any, label: str = "The real source code of this stage") -> None:
    """The actual code of these classes/functions, read with inspect (so it never goes stale).

    A closed section whose code is sent only while it is open: Streamlit's front end colours every line
    of code it is sent, even inside a closed expander (checked: a closed expander's 40 lines became 180
    coloured spans), about 0.05 s of browser CPU a code block (benchmarks/browser_cost.py)."""
    def code() -> None:
        for obj in objects:
            st.code(_source_of(obj), language="python")

    _drawn_while_open(label, source_key(*objects), ":material/code:", code)


def _drawn_while_open(label: str, key: str, icon: str, draw: Callable[[], None]) -> None:
    """An expander that reruns the page when opened or closed; ``draw`` fills it only while it is open."""
    box = st.expander(label, key=key, on_change="rerun", icon=icon)
    if box.open:
        with box:
            draw()


def lazy_section(title: str, key: str, draw: Callable[[], None], *, what: str) -> None:
    """A closed section (an expander with ``title``) whose contents ``draw`` computes only while it is open.

    A page's last, optional sections go here, so the browser draws them only for a student who asks for
    them: at ViT-B/16 every Plotly figure costs the browser tens of milliseconds of CPU on each visit.
    ``what`` says in a few words what opening it shows (after the title, in the label). ``key`` is
    ``"<page>:open_<section>"`` (the tests find closed sections by it). A section is closed again when the
    student comes back from another page (Streamlit forgets the state of widgets a page did not draw).
    """
    if ":open_" not in key:
        raise ValueError(f"a lazy section's key looks like 'page:open_name', not {key!r}")
    _drawn_while_open(f"**{title}** · {what}", key, ":material/unfold_more:", draw)


def download_trace(run: Run, key: str) -> None:
    st.download_button(
        "Download this trace (.npz)", data=trace_download(run), file_name=f"vit-trace-{run.digest[:12]}.npz",
        mime="application/octet-stream", key=key, icon=":material/download:",
        help="Every stage-level tensor of this forward pass as float32 numpy arrays (np.load reads it).",
        on_click="ignore",
    )


def next_stage(current: str) -> None:
    """A link to the stage after ``current`` (a page path from PAGES)."""
    paths = [p for p, _, _ in PAGES]
    index = paths.index(current)
    st.divider()
    if index + 1 < len(PAGES):
        path, title, icon = PAGES[index + 1]
        st.page_link(path, label=f"Next stage: {title}", icon=icon)
    else:
        st.page_link(PAGES[0][0], label="Back to the overview", icon=PAGES[0][2])


#: Tags a figure title may use (Plotly's own small HTML subset); everything else is shown as text.
_TITLE_TAGS = ("b", "i", "sub", "sup")


def _title_html(text: str) -> str:
    import html
    import re

    out = html.escape(text, quote=False)
    for tag in _TITLE_TAGS:
        out = out.replace(f"&lt;{tag}&gt;", f"<{tag}>").replace(f"&lt;/{tag}&gt;", f"</{tag}>")
    return re.sub(r"&lt;br\s*/?&gt;", " ", out)


def plot(fig, key: str | None = None, **kwargs):
    """st.plotly_chart with the project's defaults (full width, no Plotly logo or mode bar).

    The figure's title (and subtitle) is drawn by Streamlit above the chart instead of by Plotly: a Plotly
    title never wraps, so on a 1024 px screen long titles ran out of their half-width column, and the
    mode bar sat on top of them. The title text stays in the figure's ``layout.meta`` (tests read it).
    """
    fig = for_the_projector(fig)  # presenter mode: figure text at least 18 px (ui.presenter)
    title = fig.layout.title
    text = title.text if title is not None else None
    subtitle = title.subtitle.text if title is not None and title.subtitle is not None else None
    if text:
        fig.update_layout(title=dict(text=None, subtitle=dict(text=None)), meta=dict(title=text, subtitle=subtitle))
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 60
        lines = [1 + str(a.text or "").count("<br>") for a in fig.layout.annotations
                 if a.yref == "paper" and (a.y or 0) >= 0.99]  # panel titles above the plot area
        legend_on_top = fig.layout.legend.y is not None and fig.layout.legend.y >= 1
        need = 14 + 18 * max(lines + [1 if legend_on_top else 0])
        fig.update_layout(margin_t=max(min(top - 40, 60), need))
        words = f"<b>{_title_html(text)}</b>"
        if subtitle:
            words += f"<br><span style='font-size:0.85rem;color:#555'>{_title_html(subtitle)}</span>"
        st.markdown(f"<div style='font-size:0.95rem;line-height:1.35'>{words}</div>",
                    unsafe_allow_html=True)
    keep.record_figure(fig, text, subtitle)
    config = {"displaylogo": False, "displayModeBar": "hover", "modeBarButtons": [["toImage"]],
              "toImageButtonOptions": {"format": "png", "scale": 2, "filename": figure_file_name(key, text)}}
    return st.plotly_chart(fig, key=key, config=config, **kwargs)


def figure_file_name(key: str | None, title: str | None = None) -> str:
    """The name a downloaded figure gets: the page, the figure, the picture (``self-attention_layer-3-where-each-
    head-looks_horse``), in lower-case letters, digits and dashes only."""
    import re
    from pathlib import Path

    def slug(text: str, limit: int) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")

    path = st.session_state.get(_CURRENT_PAGE)
    page = next((t.split("·")[-1] for p, t, _ in PAGES if p == path), "")
    what = title or (key or "figure").split(":")[-1]
    picture = (st.session_state.get(state.PICTURE) or ("picture", b""))[0]
    parts = [slug(page, 30), slug(re.sub(r"<[^>]+>", " ", what), 50), slug(Path(picture).stem, 30)]
    return "_".join(p for p in parts if p) or "figure"


def model_knowledge(run: Run) -> None:
    """Say what the chosen model knows (and cannot), and warn plainly when a photo meets the shapes model."""
    from ..knowledge import knowledge_sentence, outside_training_warning

    classifier = getattr(run.model, "classifier", None)
    bundled = bundled_name(run.source)
    base_size = getattr(get_model(run.source), "config", run.config).image_size if bundled else run.config.image_size
    st.markdown(":material/school: " + knowledge_sentence(
        run.id2label, image_size=base_size, bundled=bundled, trained=run.trained,
        has_classifier=getattr(classifier, "out_features", 0) > 0))
    warning = outside_training_warning(bundled, run.image_name)
    if warning:
        st.warning(warning, icon=":material/report:")
