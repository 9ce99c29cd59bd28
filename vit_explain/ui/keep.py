"""A page to keep: one self-contained HTML file of the page the student is looking at.

While a page runs, :func:`record_text` and :func:`record_figure` (called by the page parts) note its
header, its figures (as Plotly JSON, with their titles) and its captions' text; "Download this page"
then writes them into one HTML file with the picture, the model and settings used and a link back to
the same view. plotly.js is inlined once, so the file opens offline and every figure stays
interactive. The file is made when the button is clicked, from what this run recorded.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

import numpy as np
import streamlit as st

RECORD = "_keep_record"  #: {"page": path, "items": [...]} of the page being drawn


def start(path: str) -> None:
    """Begin recording the page ``path`` (its previous run's record is dropped)."""
    st.session_state[RECORD] = {"page": path, "items": []}


def _items() -> list | None:
    record = st.session_state.get(RECORD)
    return None if record is None else record["items"]


def record_text(kind: str, text: str) -> None:
    """Note the page's text: ``kind`` is "title", "markdown" or "caption"."""
    items = _items()
    if items is not None and text:
        items.append({"kind": kind, "text": str(text)})


def record_figure(fig, title: str | None, subtitle: str | None) -> None:
    items = _items()
    if items is not None:
        # the figure itself: turned into JSON only if the page is downloaded (no cost on every rerun)
        items.append({"kind": "figure", "title": title or "", "subtitle": subtitle or "", "figure": fig})


def _markdown_to_html(text: str) -> str:
    """The little markdown the pages use (bold, italics, code), escaped; paragraphs kept."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r":material/[a-z_]+:", "", out)
    return "".join(f"<p>{p.strip()}</p>" for p in out.split("\n\n") if p.strip())


def _picture_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def page_html(items: list[dict], *, page_title: str, picture: tuple[str, np.ndarray] | None, settings: list[tuple[str, str]],
              link: str | None) -> str:
    """The whole page as one HTML document (plotly.js inlined once; nothing fetched from a network)."""
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>{html.escape(page_title)}</h1>",
             "<p class='meta'>Saved from vit-explain on " + datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
             + (f" · <a href='{html.escape(link, quote=True)}'>open this view in the app</a>" if link else "") + "</p>"]
    if picture is not None:
        name, image = picture
        parts.append(f"<figure class='picture'><img src='{_picture_uri(image)}' alt='{html.escape(name, quote=True)}' "
                     f"width='224' style='image-rendering: pixelated'><figcaption>{html.escape(name)}, as the model "
                     f"sees it</figcaption></figure>")
    if settings:
        parts.append("<table class='settings'>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                                           for k, v in settings) + "</table>")
    figure = 0
    for item in items:
        kind = item["kind"]
        if kind == "title":
            continue  # the page title is the document's heading
        if kind == "figure":
            figure += 1
            heading = html.escape(item["title"]) + (f"<br><small>{html.escape(item['subtitle'])}</small>"
                                                   if item["subtitle"] else "")
            spec = item["figure"].to_json().replace("</", "<\\/")  # no "</script>" can end the block early
            parts.append(f"<h3>{heading}</h3><div class='figure' id='figure-{figure}'></div>"
                         f"<script type='application/json' id='figure-{figure}-spec'>{spec}</script>")
        else:
            cls = "caption" if kind == "caption" else "text"
            parts.append(f"<div class='{cls}'>{_markdown_to_html(item['text'])}</div>")
    script = ("<script>document.querySelectorAll('.figure').forEach(function (div) {"
              "var spec = JSON.parse(document.getElementById(div.id + '-spec').textContent);"
              "Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false, responsive: true});});</script>")
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}"
             ".caption{color:#555;font-size:.9rem}.meta{color:#666}table.settings th{text-align:left;padding-right:1rem}"
             ".figure{margin-bottom:1.5rem}h3{font-size:1rem;margin-bottom:.2rem}</style>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(page_title)} · vit-explain</title>{style}"
            f"<script>{get_plotlyjs()}</script></head><body>" + "".join(parts) + script + "</body></html>")


def download_page_button(run, path: str, title: str, *, preface: list[str] = (), label: str = "Download this page (.html)",
                         ) -> None:
    """"Download this page": the recorded page as one HTML file, made when the button is clicked. ``preface``:
    paragraphs (markdown) put before what the page recorded (the lesson puts the student's answers there)."""
    record = st.session_state.get(RECORD)
    if not record or record.get("page") != path:
        return
    items = [{"kind": "markdown", "text": text} for text in preface] + list(record["items"])
    settings = []
    picture = None
    if run is not None:
        c = run.config
        settings = [("model", str(getattr(run.model, "source", run.source))), ("picture", run.image_name),
                    ("image size", f"{c.image_size} px"), ("patch size", f"{c.patch_size} px"),
                    ("layers x heads", f"{c.num_hidden_layers} x {c.num_attention_heads}"),
                    ("hidden size / MLP size", f"{c.hidden_size} / {c.intermediate_size}")]
        picture = (run.image_name, run.image)
    from .links import current_params
    from urllib.parse import urlencode

    base = (getattr(st.context, "url", None) or "").split("?")[0]
    link = base + "?" + urlencode(current_params()) if base else None
    slug = "".join(ch if ch.isalnum() else "-" for ch in title.split("·")[-1].strip().lower()).strip("-")
    st.download_button(
        label, data=lambda: page_html(items, page_title=title, picture=picture,
                                                               settings=settings, link=link).encode(),
        file_name=f"vit-explain_{slug}.html", mime="text/html", key=f"{path}:keep", icon=":material/save:",
        on_click="ignore",
        help="One file with this page's text, the picture, every figure (still interactive) and the settings used; "
             "it opens in any browser without a network.")


__all__ = ["start", "record_text", "record_figure", "page_html", "download_page_button"]
