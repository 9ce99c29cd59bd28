"""The Training page in a real browser: start a run, watch it update, stop, scrub back, explore the model elsewhere.

Same set-up as ``test_browser.py`` (``streamlit run`` on a free port, Debian's Chromium through
Playwright). Screenshots of the page at a few points of the run, at 1366 and 1024 px wide, go to
the same folder (``$VIT_EXPLAIN_SCREENSHOTS`` or ``./screenshots``).
"""

from __future__ import annotations

import re
import time

import pytest

from test_browser import (  # noqa: F401 - the shared server, browser and page helpers
    CHROMIUM,
    CHROMIUM_ARGS,
    _no_exception,
    playwright_api,
    _screenshot,
    server,
    shots_dir,
    _wait_idle,
)

pytestmark = pytest.mark.browser


def _body(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _step_shown(page) -> int:
    match = re.search(r"Training: step ([\d,]+)", _body(page))
    return int(match.group(1).replace(",", "")) if match else -1


def _chart_titles(page) -> list[str]:
    # ui.plot draws a figure's title above the chart and keeps its text in the figure's layout.meta
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot'))
        .map(f => (((f._fullLayout || {}).meta || {}).title) || (f.querySelector('.gtitle') || {}).textContent || '')""")


def _wait_text(page, pattern: str, timeout_s: float = 120.0) -> re.Match:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        match = re.search(pattern, _body(page))
        if match:
            return match
        page.wait_for_timeout(250)
    raise AssertionError(f"{pattern!r} never appeared; the page says:\n{_body(page)[:1500]}")


def test_train_watch_stop_scrub_and_explore(server, shots_dir):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(server)
            page.wait_for_selector('[data-testid="stSidebar"]')
            _wait_idle(page)
            page.locator('[data-testid="stSidebarNav"]').get_by_text("8 · Training", exact=True).click()
            _wait_idle(page)
            _no_exception(page, "training page")
            page.get_by_role("button", name="Use the two-minute settings").click()
            _wait_idle(page)
            assert "64 px pictures, 8 px patches" in _body(page)
            _screenshot(page, shots_dir / "training-0-before.png")

            page.get_by_role("button", name="Start a new run").click()
            _wait_text(page, r"Training: step [\d,]+")
            page.wait_for_selector('[data-testid="stPlotlyChart"]')
            _wait_text(page, r"Where the CLS token looks at step [1-9]")
            expected = ("Training curves", "Where the CLS token looks", "Top-5 for the probe",
                        "Position-embedding similarity", "Patch-embedding filters")
            deadline = time.time() + 60  # the charts are drawn one after another
            while time.time() < deadline and not all(any(e in t for t in _chart_titles(page)) for e in expected):
                page.wait_for_timeout(250)
            first_step = _step_shown(page)
            first_titles = _chart_titles(page)
            for title in expected:
                assert any(title in t for t in first_titles), (title, first_titles)
            page.wait_for_timeout(4000)  # the page polls about once a second: the numbers move on their own
            later_step = _step_shown(page)
            assert later_step > first_step, (first_step, later_step)
            _no_exception(page, "while training")
            _screenshot(page, shots_dir / "training-1-running-1366.png")
            page.set_viewport_size({"width": 1024, "height": 900})
            page.wait_for_timeout(1500)
            _screenshot(page, shots_dir / "training-2-running-1024.png")
            page.set_viewport_size({"width": 1366, "height": 900})
            newer = _wait_text(page, r"Where the CLS token looks at step ([\d,]+)")
            assert int(newer.group(1).replace(",", "")) > 0
            assert _chart_titles(page) != first_titles  # the views moved on to newer snapshots

            page.get_by_role("button", name="Stop").click()
            stopped = _wait_text(page, r"Stopped at step ([\d,]+)")
            steps = int(stopped.group(1).replace(",", ""))
            _wait_idle(page)
            _no_exception(page, "after stop")
            _screenshot(page, shots_dir / "training-3-stopped-1366.png")

            # the finished run replayed by the browser: Play runs the snapshots to the last one, no rerun needed
            replay = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="snapshot at step")
            replay.scroll_into_view_if_needed()
            current = replay.locator("text.slider-label").first  # SVG text: read with text_content
            assert current.text_content().strip() == "snapshot at step 0", current.text_content()
            replay.locator(".updatemenu-button").filter(has_text="Play").click()
            def shown_step() -> int | None:  # None while Plotly redraws the label between frames
                found = re.fullmatch(r"snapshot at step ([\d,]+)", (current.text_content() or "").strip())
                return int(found.group(1).replace(",", "")) if found else None

            seen, deadline = set(), time.time() + 60
            while time.time() < deadline:
                step = shown_step()
                if step is not None:
                    seen.add(step)
                if len(seen) > 2 and page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state") == "notRunning":
                    page.wait_for_timeout(400)
                    if shown_step() == max(seen):
                        break
                page.wait_for_timeout(150)
            assert len(seen) > 2, seen  # it moved through the snapshots
            replay.screenshot(path=str(shots_dir / "training-3b-replay-1366.png"))
            page.set_viewport_size({"width": 1024, "height": 768})
            page.wait_for_timeout(800)
            replay.scroll_into_view_if_needed()
            replay.screenshot(path=str(shots_dir / "training-3c-replay-1024.png"))
            page.set_viewport_size({"width": 1366, "height": 900})
            page.wait_for_timeout(500)

            # scrub back to the first snapshot with the keyboard (Home moves a slider to its first value)
            thumb = page.locator(".st-key-train-snapshot input").first
            thumb.focus()
            thumb.press("Home")
            _wait_idle(page)
            _wait_text(page, r"step 0\b")
            titles = _chart_titles(page)
            assert any(t.startswith("Where the CLS token looks at step 0") for t in titles), titles
            assert any(t.startswith("Position-embedding similarity, step 0") for t in titles), titles
            _screenshot(page, shots_dir / "training-4-scrubbed-1024.png")

            page.get_by_role("button", name="Explore it on the other pages").click()
            _wait_idle(page)
            page.locator('[data-testid="stSidebarNav"]').get_by_text("3 · Self-attention", exact=True).click()
            _wait_idle(page)
            _no_exception(page, "self-attention page on the trained model")
            sidebar = page.locator('[data-testid="stSidebar"]')
            shown = sidebar.inner_text() + " ".join(  # a select box may show its value in an input
                sidebar.locator("input").evaluate_all("els => els.map(e => e.value || e.getAttribute('aria-label') || '')"))
            assert f"The model you trained (step {steps:,})" in shown, shown[-1500:]
            assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
            _screenshot(page, shots_dir / "training-5-attention-on-trained-model.png")
        finally:
            browser.close()


def _server_process(url: str):
    psutil = pytest.importorskip("psutil")
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid)
    pytest.skip("cannot find the server's process to watch its CPU")


def _cpu_seconds_over(process, seconds: float) -> float:
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return sum(process.cpu_times()[:2]) - before


def test_closing_the_tab_stops_the_run(server):
    process = _server_process(server)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(f"{server}/training")
            page.wait_for_selector('[data-testid="stSidebar"]')
            _wait_idle(page)
            page.get_by_role("button", name="Use the two-minute settings").click()
            _wait_idle(page)
            page.get_by_role("button", name="Start a new run").click()
            _wait_text(page, r"Training: step [1-9]")
            busy = _cpu_seconds_over(process, 3.0)
            assert busy > 0.3, busy  # the run trains (up to one core; less on a busy machine)
            page.close()  # the tab goes; the browser (and its other tabs) stay
            limit = min(0.15, busy / 3)  # an idle server uses a few hundredths of a second
            deadline = time.time() + 90
            idle = busy
            while time.time() < deadline and idle > limit:
                idle = _cpu_seconds_over(process, 3.0)
            assert idle <= limit, f"the server still used {idle:.2f} s of CPU in 3 s after the tab closed ({busy:.2f} s while training)"
        finally:
            browser.close()
