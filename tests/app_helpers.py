"""Starting and reading the app in AppTest the way a user would: one helper instead of a block per test.

Starting: ``open_app`` (through the sidebar, as a user), ``small_session`` (seeded straight at a small
random architecture); opening lazy sections: ``open_sections``. Reading: ``ok`` (no exception),
``figures`` / ``titles`` / ``figure_titled`` / ``title_with`` (the page's Plotly figures by title),
``payload_bytes`` (what those figures weigh), ``page_text`` and ``markdown_text``, ``sidebar_caption``.
(Model, picture and figure-object helpers are in ``helpers.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def open_app(model: str = "random", *, upload: tuple[str, bytes, str] | None = None, local_path: str | None = None,
             page: str | None = None, timeout: float = 240, **sliders) -> AppTest:
    """A fresh session: choose ``model`` ("random", "bundled", "local" ...), type ``local_path`` if given,
    upload ``(name, bytes, mime)`` if given, move the sidebar sliders ``w:{key}`` in the order given
    (``hidden_size=32, num_heads=1`` ...), then open ``page``. Fails if any step raised."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.sidebar.selectbox(key="w:model_choice").set_value(model).run()
    if local_path is not None:
        at.sidebar.text_input(key="w:local_path").set_value(str(local_path)).run()
    if upload is not None:
        at.sidebar.file_uploader[0].upload(*upload).run()
    for key, value in sliders.items():
        at.sidebar.select_slider(key=f"w:{key}").set_value(value).run()
    if page is not None:
        at.switch_page(page).run()
    return ok(at)


def small_session(arch: dict, *, upload: tuple[str, bytes, str] | None = None, page: str | None = None,
                  timeout: float = 240) -> AppTest:
    """A new session on random weights at ``arch`` ({"hidden_size": 32, ...}; the sidebar's slider names), then
    upload ``(name, bytes, mime)`` and open ``page`` if given.

    The first run is seeded through session state (the value and its widget, ``w:{key}``), so neither the
    default ViT-B/16 nor any size on the way to ``arch`` is ever built or traced (``open_app``'s sliders
    build one model per step): only a speed-up, the sidebar shows the same values either way. Fails if
    any step raised."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.session_state["w:model_choice"] = "random"
    at.session_state["_config_source"] = "random"  # the sidebar then keeps these values instead of the defaults
    for key, value in arch.items():
        at.session_state[key] = at.session_state[f"w:{key}"] = value
    ok(at.run())
    if upload is not None:
        ok(at.sidebar.file_uploader[0].upload(*upload).run())
    if page is not None:
        ok(at.switch_page(page).run())
    return at


def ok(at: AppTest) -> AppTest:
    """Fails, naming them, if the last run raised; else ``at`` (so ``ok(at.run())`` reads as one step)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def closed_sections(at: AppTest) -> list[str]:
    """Keys of the page's closed lazy sections (``ui.lazy_section``: their contents are not computed yet)."""
    keys = []
    for expander in at.expander:
        key = expander.proto.id.split("-", 2)[-1] if expander.proto.id.startswith("$$ID-") else ""
        if ":open_" not in key:
            continue  # an ordinary expander (its contents are always there)
        if key in at.session_state and at.session_state[key]:
            continue  # open already
        keys.append(key)
    return keys


def open_sections(at: AppTest, *, required: bool = True) -> AppTest:
    """Open every closed lazy section of the current page, as a student's clicks would, and run
    (``required``: the page must have one)."""
    keys = closed_sections(at)
    assert keys or not required, "this page has no closed section to open"
    if not keys:
        return at
    for key in keys:
        at.session_state[key] = True
    ok(at.run())
    assert not closed_sections(at)
    return at


# ------------------------------------------------------------------------------------------ reading a page
def specs(at: AppTest) -> list[dict]:
    """The page's Plotly figures as the JSON the browser receives, in page order."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def spec_title(spec: dict) -> str:
    """A figure's title (``ui.plot`` keeps it in ``layout.meta.title``; "" if it has none)."""
    return spec["layout"].get("meta", {}).get("title", "")


def titles(at: AppTest) -> list[str]:
    """The titles of the page's figures, in page order."""
    return [spec_title(s) for s in specs(at)]


def figures(at: AppTest) -> dict[str, dict]:
    """The page's figures by title."""
    return {spec_title(s): s for s in specs(at)}


def figure_titled(figs: dict[str, dict] | AppTest, fragment: str, *, prefix: bool = False) -> dict:
    """The first figure whose title holds ``fragment`` (starts with it, if ``prefix``), from ``figures(at)`` or
    the page itself; fails naming the titles there are."""
    figs = figs if isinstance(figs, dict) else figures(figs)
    for title, spec in figs.items():
        if (title.startswith(fragment) if prefix else fragment in title):
            return spec
    raise AssertionError(f"no figure titled {fragment!r} among {list(figs)}")


def title_with(at: AppTest, fragment: str) -> str:
    """The title of the first figure whose title holds ``fragment``; fails naming the titles there are."""
    matches = [t for t in titles(at) if fragment in t]
    assert matches, (fragment, titles(at))
    return matches[0]


def payload_bytes(at: AppTest) -> int:
    """Bytes of the Plotly specs the page sends (its figures, summed): what ``perf_budgets`` bounds."""
    return sum(len(chart.proto.spec.encode()) for chart in at.get("plotly_chart"))


def markdown_text(at: AppTest) -> str:
    """Every markdown block of the page, one per line."""
    return "\n".join(m.value for m in at.markdown)


def page_text(at: AppTest) -> str:
    """Every markdown block and caption of the page, one per line."""
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def sidebar_caption(at: AppTest) -> str | None:
    """The caption of the sidebar's picture ("<name>, as the model sees it (S x S) ..."); None if none shows."""
    images = at.sidebar.get("image")
    return images[0].proto.imgs[0].caption if images else None


def timed_run(at: AppTest) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one ``at.run()``, which must not raise (benchmarks use it)."""
    import time

    wall, cpu = time.perf_counter(), time.process_time()
    at.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ok(at)
    return wall, cpu
