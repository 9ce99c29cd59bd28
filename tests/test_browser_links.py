"""Links and figure downloads in a real browser: a view set on three pages reopens from its link in a fresh
browser; every figure downloads as PNG (twice its size) and SVG, named after the page, figure and picture."""

from __future__ import annotations

import json
import re

import pytest

from test_browser import (  # noqa: F401 - shared server, browser and page helpers
    CHROMIUM,
    CHROMIUM_ARGS,
    _go,
    _no_exception,
    _open,
    _wait_idle,
    browser,
    playwright_api,
    server,
)

pytestmark = pytest.mark.browser


def _figures(page) -> list[dict]:
    """Every figure's title and data, as the browser holds them."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
        title: ((gd._fullLayout || {}).meta || {}).title || '',
        data: JSON.stringify((gd.data || []).map(t => [t.type, t.z, t.y, t.x]).slice(0, 4)).slice(0, 20000)}))""")


def _handle(page, label: str):
    """The main area's slider called ``label`` (Streamlit draws it as an input of type range)."""
    return page.locator(f'[data-testid="stMain"] input[type="range"][aria-label="{label}"]').first


def _slider_value(page, label: str) -> str:
    return _handle(page, label).input_value()


def _link(page) -> str:
    page.locator('[data-testid="stSidebar"] button:has-text("Link to this view")').click()
    code = page.locator('[data-testid="stPopoverBody"] code').first
    code.wait_for()
    url = code.inner_text().strip()
    page.keyboard.press("Escape")
    return url


def _move_slider(page, label: str, presses: int) -> None:
    handle = _handle(page, label)
    handle.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    _wait_idle(page)


def test_a_view_set_on_three_pages_reopens_from_its_link(server, browser):
    page = _open(browser, server, 1366)
    try:
        _go(page, "4 · MLP")
        _move_slider(page, "Layer", 2)
        mlp_layer = _slider_value(page, "Layer")
        _go(page, "5 · Layer stack")
        _go(page, "3 · Self-attention")
        _move_slider(page, "Layer", 1)
        _move_slider(page, "Head", 2)
        attention = {"layer": _slider_value(page, "Layer"), "head": _slider_value(page, "Head")}
        url = _link(page)
        assert re.search(r"attn_layer=\d+", url) and "mlp_layer=" in url and "/attention" in url, url
        before = _figures(page)
    finally:
        page.context.close()
    fresh = _open(browser, url, 1366)  # a new browser context: nothing shared but the link
    try:
        _no_exception(fresh, "the link")
        assert {"layer": _slider_value(fresh, "Layer"), "head": _slider_value(fresh, "Head")} == attention
        after = _figures(fresh)
        assert [f["title"] for f in after] == [f["title"] for f in before]
        assert [f["data"] for f in after] == [f["data"] for f in before]
        _go(fresh, "4 · MLP")
        assert _slider_value(fresh, "Layer") == mlp_layer
    finally:
        fresh.context.close()


def test_figures_download_as_png_and_svg_with_their_names(server, browser, tmp_path):
    page = _open(browser, server, 1366)
    try:
        _go(page, "3 · Self-attention")
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.scroll_into_view_if_needed()
        chart.hover()
        png_button = chart.locator('.modebar-btn[data-title="Download plot as a PNG"]').first
        with page.expect_download() as png:
            png_button.click()
        chart.hover()
        with page.expect_download() as svg:
            chart.locator(".vit-svg-btn").click()
        png_path, svg_path = tmp_path / png.value.suggested_filename, tmp_path / svg.value.suggested_filename
        png.value.save_as(png_path)
        svg.value.save_as(svg_path)
        assert png_path.suffix == ".png" and svg_path.suffix == ".svg"
        assert png_path.stem == svg_path.stem and png_path.stem.startswith("self-attention_"), png_path.name
        from PIL import Image

        width, height = Image.open(png_path).size
        box = chart.locator(".js-plotly-plot").first.bounding_box()
        assert abs(width - 2 * box["width"]) <= 4 and abs(height - 2 * box["height"]) <= 4, (width, height, box)
        text = svg_path.read_text()
        assert text.lstrip().startswith("<svg") and "</svg>" in text
    finally:
        page.context.close()


def test_the_downloaded_page_opens_offline_with_every_figure(server, browser, tmp_path):
    page = _open(browser, server, 1366)
    try:
        _go(page, "3 · Self-attention")
        shown = page.locator('[data-testid="stPlotlyChart"]').count()
        with page.expect_download() as saved:
            page.get_by_role("button", name="Download this page (.html)").click()
        path = tmp_path / saved.value.suggested_filename
        saved.value.save_as(path)
        assert path.suffix == ".html" and path.stat().st_size < 10e6, (path.name, path.stat().st_size)
    finally:
        page.context.close()
    context = browser.new_context(viewport={"width": 1366, "height": 900}, offline=True)
    try:
        offline = context.new_page()
        requests = []
        offline.on("request", lambda r: requests.append(r.url))
        offline.goto(path.as_uri())
        offline.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length === {shown}", timeout=60_000)
        texts = offline.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot svg text')).length")
        assert texts > 0
        assert "Self-attention" in offline.locator("h1").inner_text()
        assert offline.locator("img").first.evaluate("img => img.naturalWidth") > 0  # the picture, inline
        assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []
        offline.screenshot(path=str(tmp_path / "kept.png"), full_page=True)
    finally:
        context.close()
