"""The Compare page in a real browser: switch model B and the shortcuts, move the shared pickers, click a patch,
open the layer similarity; at 1024 and 1366 px no figure text overlaps, leaves its figure or is drawn too small.

Same set-up as ``test_browser.py`` (``streamlit run`` on a free port, Debian's Chromium through Playwright);
screenshots go to the same folder (``$VIT_EXPLAIN_SCREENSHOTS`` or ``./screenshots``), named ``compare-*.png``.
"""

from __future__ import annotations

import re
import time

import pytest

from test_browser import (  # noqa: F401 - the shared server, browser and page helpers
    browser,
    figure_text_problems,
    _go,
    _no_exception,
    _open,
    _screenshot,
    server,
    shots_dir,
    _wait_idle,
)

pytestmark = pytest.mark.browser

TITLE = "Compare two models"


def _main(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _chart_titles(page) -> list[str]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot'))
        .map(f => (((f._fullLayout || {}).meta || {}).title) || '')""")


def _pairing(page) -> str:
    """The sentence under the pickers ("Layer 5 of A (depth 100%) faces layer 5 of B ...")."""
    match = re.search(r"Layer \d+ of A[^\n]*", _main(page))
    assert match, _main(page)[:1500]
    return match.group(0)


def _choose_main(page, box_label: str, option: str) -> None:
    page.locator(f'[data-testid="stMain"] input[aria-label="{box_label}"]').click()
    page.get_by_role("option", name=option, exact=True).click()
    _wait_idle(page)
    _no_exception(page, f"after choosing {option} in {box_label}")


def _slider_key(page, label: str, key: str) -> None:
    """Focus the main-area slider labelled ``label`` and press ``key`` (Home, End, ArrowRight ...)."""
    slider = page.locator('[data-testid="stMain"] [data-testid="stSlider"]').filter(has_text=label)
    slider.get_by_role("slider").first.focus()
    page.keyboard.press(key)
    _wait_idle(page)
    _no_exception(page, f"after {key} on {label}")


def _click_query_patch(page, fx: float, fy: float) -> None:
    """Click at (fx, fy) of the left picture (model A) of the query figure."""
    chart = page.locator(".st-key-cmp-query_map")
    chart.scroll_into_view_if_needed()
    drag = chart.locator(".nsewdrag").first
    drag.wait_for()
    box = drag.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    _wait_idle(page)
    _no_exception(page, "after clicking a patch")


def _text_problems(page, where: str) -> list[str]:
    return [f"{where}: {p}" for p in figure_text_problems(page)]


@pytest.mark.parametrize("width", [1024, 1366])
def test_compare_page_switches_models_and_pickers(server, browser, shots_dir, width):
    page = _open(browser, server, width)
    problems: list[str] = []
    try:
        _go(page, TITLE)
        assert page.locator("h1").first.inner_text().strip() == TITLE
        titles = _chart_titles(page)
        assert any(t.startswith("A · ") for t in titles) and any(t.startswith("B · Random weights") for t in titles), titles
        _screenshot(page, shots_dir / f"compare-{width}.png")
        problems += _text_problems(page, "CIFAR-10 vs random")

        # model B: the shapes model (another image size, depth and head count than the CIFAR-10 model)
        _choose_main(page, "Model B", "Synthetic shapes model (trained here, offline)")
        assert any(t.startswith("B · Synthetic shapes model") for t in _chart_titles(page)), _chart_titles(page)
        pairing = _pairing(page)
        assert "A has 6 layers, B 4" in pairing and "layer 3 of B" in pairing, pairing  # last faces last

        # the shared pickers: the first layer, then the next head; both models follow
        _slider_key(page, "Layer (of model A)", "Home")
        assert _pairing(page).startswith("Layer 0 of A (depth 0%) faces layer 0 of B"), _pairing(page)
        _slider_key(page, "Head", "ArrowRight")
        assert "head 0 in both" in _pairing(page), _pairing(page)
        before = re.search(r"query patch (\d+)", _pairing(page)).group(1)
        _click_query_patch(page, 0.15, 0.2)  # top left of A's picture: not the middle patch chosen at first
        after = re.search(r"query patch (\d+)", _pairing(page)).group(1)
        assert after != before, (before, after)
        _screenshot(page, shots_dir / f"compare-shapes-pickers-{width}.png")
        problems += _text_problems(page, "CIFAR-10 vs shapes, pickers moved")

        # a shortcut: trained vs random keeps the sidebar's trained model as A
        page.get_by_role("button", name="Trained vs random").click()
        _wait_idle(page)
        _no_exception(page, "after the trained-vs-random shortcut")
        assert page.locator('[data-testid="stMain"] input[aria-label="Model B"]').input_value().startswith("Random")
        weights = page.locator('[data-testid="stSidebar"] input[aria-label="Weights"]').input_value()
        assert weights.startswith("CIFAR-10 photos model"), weights

        # the layer similarity: computed when opened, with a progress bar, then drawn
        summary = page.locator('.st-key-cmp-open_cka [data-testid="stExpander"] summary')
        summary.scroll_into_view_if_needed()
        summary.click()
        deadline = time.time() + 240
        while time.time() < deadline and not any(t.startswith("Layer similarity") for t in _chart_titles(page)):
            page.wait_for_timeout(300)
        _wait_idle(page)
        _no_exception(page, "after opening the layer similarity")
        assert any(t.startswith("Layer similarity") for t in _chart_titles(page)), _chart_titles(page)
        assert "mean CKA at the same relative depth" in _main(page)
        _screenshot(page, shots_dir / f"compare-cka-{width}.png")
        problems += _text_problems(page, "trained vs random, CKA open")
        assert not problems, "\n".join(problems)
    finally:
        page.context.close()
