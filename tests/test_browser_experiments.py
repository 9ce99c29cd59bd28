"""The Experiments page in a real browser (Playwright + Debian's Chromium), at 1024 and 1366 px.

Runs each guided experiment as a student would, on the default model: (A) the three position steps,
(B) measuring head importance, then a click on a cell of the map knocks that head out, (C) skipping a
layer's MLP; then opens the prediction page's side-by-side section, where gradient relevance now sits
beside rollout. After each: no exception, no figure text that overlaps, leaves its figure or is under
12 px, nothing fetched from another host; a screenshot of the page is saved
(``$VIT_EXPLAIN_SCREENSHOTS`` or ``./screenshots``). Server and browser helpers come from ``test_browser.py``.
"""

from __future__ import annotations

import re

import pytest

from test_browser import (_foreign_assets, _go, _no_exception, _open, _screenshot, _wait_idle, browser,  # noqa: F401
                          figure_text_problems, server, shots_dir)

pytestmark = pytest.mark.browser

TITLE = "7 · Experiments"


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _click_option(page, text: str) -> None:
    page.locator('[data-testid="stMain"]').get_by_text(text, exact=True).first.click()
    _wait_idle(page)
    _no_exception(page, f"after choosing {text!r}")


def _head_title(page) -> str:
    match = re.search(r"What head \d+ of layer \d+ looks at", _main_text(page))
    return match.group(0) if match else ""


@pytest.mark.parametrize("width", [1024, 1366])
def test_each_guided_experiment_in_a_browser(server, browser, shots_dir, width):
    page = _open(browser, server, width)
    problems = []

    def check(where: str, figure: str = "") -> None:
        _no_exception(page, where)
        _screenshot(page, shots_dir / f"experiments-{where}-{width}.png")
        problems.extend(f"{where}: {p}" for p in figure_text_problems(page) if p.startswith(figure))
        problems.extend(f"{where}: asset from another host: {u}" for u in _foreign_assets(page, server))

    try:
        _go(page, TITLE)
        assert page.locator("h1").first.inner_text().startswith(TITLE)

        # A: the three steps; without positions the shuffle leaves every probability where it was
        text = _main_text(page)
        assert "Removing the position embeddings" in text and "leaves every probability where it was" in text
        _click_option(page, "2 · shuffle the patches")
        assert "Shuffling the patches (positions kept)" in _main_text(page)
        assert page.get_by_text("the same", exact=False).count()
        _click_option(page, "3 · both")
        assert "Removing the positions and shuffling the patches" in _main_text(page)
        check("positions")

        # B: measure every head, then click a cell of the map: that head is knocked out
        _click_option(page, "B · Which heads matter?")
        measure = page.get_by_role("button", name=re.compile(r"Measure all \d+ heads"))
        if measure.count():  # the first width measures; the map is then kept for every session of the server
            measure.click()
            _wait_idle(page)
            _no_exception(page, "after measuring the heads")
        chart = page.locator('[class*="st-key-exp-heads_map_"]')
        chart.scroll_into_view_if_needed()
        drag = chart.locator(".nsewdrag").first
        drag.wait_for()
        before = _head_title(page)
        assert before == "What head 0 of layer 0 looks at", before
        box = drag.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 5 / 6, box["y"] + box["height"] * 11 / 12)  # last head, last layer
        _wait_idle(page)
        _no_exception(page, "after clicking a head")
        after = _head_title(page)
        assert after == "What head 2 of layer 5 looks at", after
        assert "Knocking out head 2 of layer 5" in _main_text(page)
        check("heads")

        # C: skip only the MLP of a layer; the sweep and the logit lens are drawn
        _click_option(page, "C · Skip a layer")
        _click_option(page, "only its MLP")
        text = _main_text(page)
        assert "Skipping the MLP of layer 0" in text
        assert "with each layer skipped in turn" in text and "Logit lens" in text
        check("layers")

        # the prediction page's side-by-side section: gradient relevance beside rollout
        _go(page, "6 · Pooler and prediction")
        summary = page.locator('.st-key-pred-open_side [data-testid="stExpander"] summary')
        summary.scroll_into_view_if_needed()
        summary.click()
        _wait_idle(page)
        page.get_by_text("Correlation between rollout and relevance").first.wait_for()
        page.get_by_text("Rollout and gradient relevance of the same prediction").first.scroll_into_view_if_needed()
        check("prediction-relevance", "Rollout and gradient relevance")  # the figure this page adds there

        assert not problems, "\n".join(problems)
        assert not page.foreign, f"requests to other hosts: {page.foreign}"
    finally:
        page.context.close()
