"""The app in a real browser: `streamlit run` on a free local port, Playwright driving Debian's Chromium.

Uploads a picture, visits every page through the sidebar navigation (so the session and its
upload survive), clicks a patch on the self-attention page and checks that the map follows the
click, and asserts that no page shows a Streamlit exception. A screenshot of every page is saved
in the folder the test prints (``$VIT_EXPLAIN_SCREENSHOTS`` or ``./screenshots``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

from vit_explain.ui import PAGES  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_LOG: Path | None = None


@contextlib.contextmanager
def _streamlit_server(log_path: Path):
    """``streamlit run app.py`` on a free port, answering its health check; yields the base URL."""
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.5)
            else:
                pytest.fail("streamlit did not start within 120 s")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    global SERVER_LOG
    SERVER_LOG = tmp_path_factory.mktemp("streamlit") / "server.log"
    with _streamlit_server(SERVER_LOG) as url:
        yield url


@pytest.fixture(scope="module")
def shots_dir():
    folder = Path(os.environ.get("VIT_EXPLAIN_SCREENSHOTS", ROOT / "screenshots")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


def _wait_idle(page, timeout_s: float = 180.0) -> None:
    """Wait until the script has finished and stayed finished for a moment."""
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        running = state in ("running", "initial") or page.locator('[data-testid="stSpinner"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app kept running for too long")


def _no_exception(page, where: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        server_log = SERVER_LOG.read_text()[-3000:] if SERVER_LOG and SERVER_LOG.exists() else ""
        raise AssertionError(f"{where}: {errors.first.inner_text()[:500]}\n--- server log ---\n{server_log}")


def _photo_bytes() -> bytes:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:300, 0:400]
    img = np.stack([(x * 255 / 400), (y * 255 / 300), np.full_like(x, 120)], -1).astype(np.uint8)
    img[100:200, 150:260] = rng.integers(0, 255, size=(100, 110, 3), dtype=np.uint8)  # a textured object
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height, size["height"]), 9000))})
    page.wait_for_timeout(800)  # let Plotly re-lay out at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    page.wait_for_timeout(300)


def _query_caption(page) -> str:
    text = page.locator("body").inner_text()
    match = re.search(r"query patch \d+[^\n]*", text)
    return match.group(0) if match else ""


def test_walk_every_page_upload_and_click(server, shots_dir, tmp_path):
    photo = tmp_path / "my_photo.jpg"
    photo.write_bytes(_photo_bytes())
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(server)
            page.wait_for_selector('[data-testid="stSidebar"]')
            _wait_idle(page)
            _no_exception(page, "first load")

            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
            _wait_idle(page)
            _no_exception(page, "after upload")
            page.get_by_text("my_photo.jpg, as the model sees it").first.wait_for()

            nav = page.locator('[data-testid="stSidebarNav"]')
            for path, title, _ in PAGES:
                nav.get_by_text(title, exact=True).click()
                _wait_idle(page)
                _no_exception(page, title)
                # the upload survived the page switch
                assert page.get_by_text("my_photo.jpg, as the model sees it").count() >= 1, title
                assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1 or path.endswith(
                    ("overview.py", "training.py")), title  # training draws once a run starts (test_browser_training.py)
                _screenshot(page, shots_dir / f"{Path(path).stem}.png")
                if path.endswith("attention.py"):
                    _click_a_patch_and_see_the_map_change(page, shots_dir)
        finally:
            browser.close()


def _click_a_patch_and_see_the_map_change(page, shots_dir):
    chart = page.locator(".st-key-attn-query_image")
    chart.scroll_into_view_if_needed()
    before = _query_caption(page)
    assert before, "the attention page names its query patch"
    drag = chart.locator(".nsewdrag").first
    drag.wait_for()
    box = drag.bounding_box()
    # click near the lower-right of the picture: a patch other than the default query
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8)
    _wait_idle(page)
    _no_exception(page, "after clicking a patch")
    after = _query_caption(page)
    _screenshot(page, shots_dir / "attention-after-click.png")
    assert after and after != before, (before, after)


def test_a_deep_link_as_the_servers_first_visit_gets_the_apps_navigation(tmp_path, shots_dir):
    """Streamlit runs a page of a ``pages/`` folder on its own, with file names as navigation, until
    app.py has run once; ui.sidebar() switches that off, so a shared link works on a fresh server."""
    with _streamlit_server(tmp_path / "server.log") as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(f"{url}/attention")  # nobody has opened / on this server
            page.wait_for_selector('[data-testid="stSidebarNav"]')
            _wait_idle(page)
            _no_exception(page, "deep link")
            assert page.locator("h1").first.inner_text().strip() == "3 · Self-attention"
            links = [t.strip() for t in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]
            titles = [title for _, title, _ in PAGES]
            assert [next((t for t in titles if t in link), link) for link in links] == titles, links
            assert page.url.endswith("/attention")
            _screenshot(page, shots_dir / "deep_link_attention.png")
        finally:
            browser.close()
