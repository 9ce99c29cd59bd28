"""The app in a real browser: `streamlit run` on a free local port, Playwright driving Debian's Chromium.

At the widths of a lecture projector and a laptop (1024 and 1366 px): uploads a picture, visits every
page through the sidebar navigation and checks that the sidebar still names the upload, that no
figure has overlapping, clipped or tiny text (the SVG text boxes of every Plotly figure), that
nothing is fetched from any host but the app's own, and that a click on the self-attention page
moves the query. Further tests: switching between samples and the upload, errors said on the page,
the sidebar closing after navigation on a narrow (zoomed) screen, a deep link on a fresh server.
A screenshot of every page at both widths is saved in the folder the test prints
(``$VIT_EXPLAIN_SCREENSHOTS`` or ``./screenshots``).
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
import urllib.parse
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
def _streamlit_server(log_path: Path, env: dict[str, str] | None = None):
    """``streamlit run app.py`` on a free port, answering its health check; yields the base URL.
    ``env``: variables to add to the server's environment (by default the Hub is off: HF_HUB_OFFLINE=1)."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
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


# ---------------------------------------------------------------------------------- what a browser sees
#: Measures every visible SVG text of every Plotly figure on the page: pairs of texts whose boxes
#: overlap, texts that reach outside their figure, and texts drawn smaller than 12 px.
FIGURE_TEXT_JS = r"""
() => {
  const problems = [];
  const figures = Array.from(document.querySelectorAll('.js-plotly-plot'));
  figures.forEach((fig, f) => {
    const frame = fig.getBoundingClientRect();
    if (frame.width === 0 || frame.height === 0) return;  // in a closed expander
    const meta = (fig._fullLayout || {}).meta;
    const title = (meta && meta.title) || (fig.querySelector('.gtitle') || {}).textContent || `figure ${f}`;
    const texts = [];
    fig.querySelectorAll('svg text').forEach(node => {
      if (node.closest('.hoverlayer')) return;
      const words = (node.textContent || '').trim();
      if (!words) return;
      const style = getComputedStyle(node);
      if (style.display === 'none' || style.visibility === 'hidden' || parseFloat(style.opacity) === 0) return;
      let hidden = false;
      for (let el = node; el && el !== fig; el = el.parentElement) {
        const s = getComputedStyle(el);
        if (s.display === 'none' || parseFloat(s.opacity) === 0) { hidden = true; break; }
      }
      if (hidden) return;
      const box = node.getBoundingClientRect();
      if (box.width < 0.5 || box.height < 0.5) return;
      // the size as drawn: Plotly shrinks some labels (treemaps, pie slices) with a scale transform
      const m = node.getScreenCTM();
      const size = parseFloat(style.fontSize) * (m ? Math.sqrt(m.a * m.a + m.b * m.b) : 1);
      texts.push({words, box, size});
    });
    texts.forEach(t => {
      if (t.size < 11.5) problems.push(`${title}: "${t.words}" is ${t.size.toFixed(1)} px`);
      const out = Math.max(frame.left - t.box.left, t.box.right - frame.right, frame.top - t.box.top, t.box.bottom - frame.bottom);
      if (out > 1.5) problems.push(`${title}: "${t.words}" reaches ${out.toFixed(0)} px outside its figure`);
    });
    for (let i = 0; i < texts.length; i++) {
      for (let j = i + 1; j < texts.length; j++) {
        const a = texts[i].box, b = texts[j].box;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        // glyph boxes include line spacing: a couple of pixels of touching is not an overlap
        if (w > 2 && h > 3) problems.push(`${title}: "${texts[i].words}" overlaps "${texts[j].words}"`);
      }
    }
  });
  return problems;
}
"""


def figure_text_problems(page) -> list[str]:
    return page.evaluate(FIGURE_TEXT_JS)


def _foreign(url: str, base: str) -> bool:
    """A request that leaves the app's own server (data: and blob: URLs stay in the page)."""
    if url.startswith(("data:", "blob:", "about:")):
        return False
    return not url.startswith(base)


def _open(browser, url: str, width: int, height: int = 768, scale: float = 1.0):
    """A fresh browser tab at ``width`` x ``height`` CSS pixels that records foreign requests and console errors."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale)
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.foreign = []
    page.console_errors = []
    page.on("request", lambda r: page.foreign.append(r.url) if _foreign(r.url, url) else None)
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"]', state="attached")  # collapsed on a narrow screen
    _wait_idle(page)
    _no_exception(page, "first load")
    return page


#: Every URL the page itself names for an asset: icons, scripts, styles, pictures, frames. Headless Chromium
#: does not fetch the favicon, so the network log alone would not see an icon on someone else's server.
ASSET_URLS_JS = """
() => Array.from(document.querySelectorAll('link[href], script[src], img[src], iframe[src], source[src]'))
          .map(e => e.href || e.src)
"""


def _foreign_assets(page, base: str) -> list[str]:
    return [u for u in page.evaluate(ASSET_URLS_JS) if _foreign(u, base)]


def _sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def _picture_in_use(page) -> str:
    """The value the sidebar's "Picture in use" list shows."""
    return page.locator('[data-testid="stSidebar"] input[aria-label="Picture in use"]').input_value().strip()


def _choose(page, box_label: str, option: str) -> None:
    """Pick ``option`` in the sidebar's select box labelled ``box_label``.

    The box is scrolled to the middle of the sidebar first, as a user would: at the bottom edge of the window
    its list has no room to open (with eleven pages in the navigation the picture box sits there at 768 px)."""
    box = page.locator(f'[data-testid="stSidebar"] input[aria-label="{box_label}"]')
    box.evaluate("e => e.scrollIntoView({block: 'center'})")
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    _wait_idle(page)
    _no_exception(page, f"after choosing {option}")


def _choose_picture(page, label: str) -> None:
    _choose(page, "Picture in use", label)


def _upload(page, path: Path) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    _wait_idle(page)
    _no_exception(page, f"after uploading {path.name}")


def _go(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    _wait_idle(page)
    _no_exception(page, title)


def _console_problems(page) -> list[str]:
    # Streamlit itself logs nothing at warning level on a healthy page; keep the known harmless ones out
    return [m for m in page.console_errors if "ResizeObserver loop" not in m]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# ---------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("width", [1024, 1366])
def test_every_page_at_lecture_widths(server, browser, shots_dir, tmp_path, width):
    """Upload, then every page through the sidebar: the sidebar names the upload on every page, no
    figure has overlapping, clipped or tiny text (in the closed sections too, once clicked open), nothing is
    fetched from another host, and a click on the attention page moves the query."""
    photo = tmp_path / "my_photo.jpg"
    photo.write_bytes(_photo_bytes())
    page = _open(browser, server, width)
    try:
        _upload(page, photo)
        page.get_by_text("my_photo.jpg, as the model sees it").first.wait_for()
        problems = []
        for path, title, _ in PAGES:
            _go(page, title)
            # the sidebar says which picture every page uses, after the switch too
            assert _picture_in_use(page) == "Your upload: my_photo.jpg", title
            assert "my_photo.jpg, as the model sees it" in _sidebar_text(page), title
            assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1 or path.endswith(
                ("overview.py", "training.py")), title  # training draws once a run starts (test_browser_training.py)
            _screenshot(page, shots_dir / f"{Path(path).stem}-{width}.png")
            problems += [f"{title}: {p}" for p in figure_text_problems(page)]
            problems += [f"{title}: asset from another host: {u}" for u in _foreign_assets(page, server)]
            if path.endswith("attention.py"):
                _click_a_patch_and_see_the_map_change(page, shots_dir, width)
            if _open_the_closed_sections(page):  # what they draw is checked too
                _screenshot(page, shots_dir / f"{Path(path).stem}-sections-opened-{width}.png")
                problems += [f"{title}, sections opened: {p}" for p in figure_text_problems(page)]
        assert not problems, "\n".join(problems)
        assert not page.foreign, f"requests to other hosts: {page.foreign}"
        icons = page.evaluate("() => Array.from(document.querySelectorAll('link[rel~=icon]')).map(e => e.href)")
        assert icons and all(u.startswith(server) for u in icons), icons  # the app's own favicon
        assert not _console_problems(page), _console_problems(page)
    finally:
        page.context.close()


def _click_a_patch_and_see_the_map_change(page, shots_dir, width):
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
    _screenshot(page, shots_dir / f"attention-after-click-{width}.png")
    assert after and after != before, (before, after)


def _open_the_closed_sections(page) -> int:
    """Click every closed section (ui.lazy_section) of the page open; each must add its figures. Returns how many."""
    sections = page.locator('[class*="st-key-"][class*="-open_"] [data-testid="stExpander"] summary')
    charts = page.locator('[data-testid="stPlotlyChart"]')
    for i in range(sections.count()):
        before = charts.count()
        summary = sections.nth(i)
        label = summary.inner_text().strip()
        summary.scroll_into_view_if_needed()
        summary.click()
        _wait_idle(page)
        _no_exception(page, f"after opening {label!r}")
        assert charts.count() > before, f"opening {label!r} drew no figure"
    if "attention" in page.url:
        page.get_by_text("rebuild attention_output to within").first.wait_for()
    return sections.count()


def test_choosing_a_sample_and_going_back_to_the_upload(server, browser, tmp_path):
    """Sample and upload switch both ways, across page switches; removing the upload goes back to the sample."""
    photo = tmp_path / "flower.jpg"
    photo.write_bytes(_photo_bytes())
    page = _open(browser, server, 1366)
    try:
        sample = _picture_in_use(page)
        assert sample and not sample.startswith("Your upload")
        _upload(page, photo)
        assert _picture_in_use(page) == "Your upload: flower.jpg"
        _go(page, "3 · Self-attention")
        assert _picture_in_use(page) == "Your upload: flower.jpg"
        _choose_picture(page, sample)  # the sample shown before the upload: choosing it switches at once
        assert f"{sample}, as the model sees it" in _sidebar_text(page)
        _go(page, "4 · MLP")
        assert _picture_in_use(page) == sample and f"{sample}, as the model sees it" in _sidebar_text(page)
        _choose_picture(page, "Your upload: flower.jpg")
        assert "flower.jpg, as the model sees it" in _sidebar_text(page)
        page.reload()
        _wait_idle(page)
        # a reload is a new session: back to the default sample, said plainly
        assert not _picture_in_use(page).startswith("Your upload")

        _upload(page, photo)
        assert _picture_in_use(page) == "Your upload: flower.jpg"
        page.get_by_role("button", name="Remove flower.jpg").click()  # remove the upload
        _wait_idle(page)
        assert _picture_in_use(page) == sample
        assert f"{sample}, as the model sees it" in _sidebar_text(page)
    finally:
        page.context.close()


def _gif_bytes() -> bytes:
    frames = [Image.new("RGB", (48, 48), c) for c in ((200, 30, 30), (30, 30, 200), (30, 200, 30))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _page_alerts(page) -> str:
    return "\n".join(page.locator('[data-testid="stMain"] [data-testid="stAlert"]').all_inner_texts())


def test_errors_are_said_on_the_page(server, browser, tmp_path, shots_dir):
    """A rejected upload, an animation and impossible architecture settings: each is said on the page,
    next to what the page shows instead, and the page keeps its content."""
    page = _open(browser, server, 1024)
    try:
        photo, fake, gif = tmp_path / "photo.jpg", tmp_path / "essay.jpg", tmp_path / "spinner.gif"
        photo.write_bytes(_photo_bytes())
        fake.write_text("Dear teacher, this is my essay, not a picture.")
        gif.write_bytes(_gif_bytes())
        _upload(page, photo)
        _upload(page, fake)
        alerts = _page_alerts(page)
        assert "essay.jpg could not be used" in alerts and "photo.jpg (your upload) instead" in alerts, alerts
        assert page.locator("h1").count() and "photo.jpg, as the model sees it" in _sidebar_text(page)
        _screenshot(page, shots_dir / "rejected-upload-1024.png")

        _upload(page, gif)
        assert "first frame" in _page_alerts(page) and "first frame" in _sidebar_text(page)

        # random weights, then the smallest patch: 1,025 tokens x 12 layers x 12 heads is over the memory limit
        _choose(page, "Weights", "Random weights (untrained)")
        patch = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').filter(has_text="Patch size")
        patch.get_by_role("slider").first.focus()
        page.keyboard.press("Home")
        _wait_idle(page)
        _no_exception(page, "over the limit")
        alerts = _page_alerts(page)
        assert "cannot run" in alerts and "last settings that ran" in alerts and "larger patch size" in alerts, alerts
        assert page.locator("h1").count() and page.locator('[data-testid="stPlotlyChart"]').count() >= 1
        _screenshot(page, shots_dir / "over-the-limit-1024.png")
    finally:
        page.context.close()


def test_on_a_narrow_screen_the_sidebar_closes_after_choosing_a_page(server, browser):
    """1024 x 768 at 150 % zoom is 683 x 512 CSS pixels: the sidebar covers the page, so it closes after navigation."""
    page = _open(browser, server, 683, 512, scale=1.5)
    try:
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.get_attribute("data-collapsed") == "true"  # it starts closed on a narrow screen
        page.locator('[data-testid="stExpandSidebarButton"]').click()
        page.wait_for_timeout(500)
        assert sidebar.get_attribute("data-collapsed") == "false"
        _go(page, "1 · Patching")
        page.wait_for_timeout(800)
        assert sidebar.get_attribute("data-collapsed") == "true", "the sidebar stayed open over the page"
        assert sidebar.bounding_box()["width"] < 5
        assert page.locator("h1").first.inner_text().startswith("1 · Patching")
    finally:
        page.context.close()


def test_a_deep_link_as_the_servers_first_visit_gets_the_apps_navigation(tmp_path, shots_dir, browser):
    """Streamlit runs a page of a ``pages/`` folder on its own, with file names as navigation, until
    app.py has run once; ui.sidebar() switches that off, so a shared link works on a fresh server."""
    with _streamlit_server(tmp_path / "server.log") as url:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        try:
            page.set_default_timeout(180_000)
            page.goto(f"{url}/attention")  # nobody has opened / on this server
            page.wait_for_selector('[data-testid="stSidebarNav"]')
            _wait_idle(page)
            _no_exception(page, "deep link")
            assert page.locator("h1").first.inner_text().strip() == "3 · Self-attention"
            links = [t.strip() for t in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]
            titles = [title for _, title, _ in PAGES]
            assert [next((t for t in titles if t in link), link) for link in links] == titles, links
            assert urllib.parse.urlparse(page.url).path.endswith("/attention")  # the query holds the view's link
            _screenshot(page, shots_dir / "deep_link_attention.png")
        finally:
            page.close()


def test_the_trace_download_gives_the_pictures_trace(server, browser, tmp_path):
    """The download button's file is made on the click (the session keeps no copy of the trace for it):
    a real .npz of the uploaded picture's forward pass, with its README, at the model's sizes."""
    photo = tmp_path / "download_me.jpg"
    photo.write_bytes(_photo_bytes())
    page = _open(browser, server, 1366)
    try:
        _upload(page, photo)
        page.get_by_text("download_me.jpg, as the model sees it").first.wait_for()
        button = page.get_by_role("button", name="Download this trace (.npz)").first
        button.scroll_into_view_if_needed()
        with page.expect_download(timeout=120_000) as info:
            button.click()
        saved = tmp_path / "trace.npz"
        info.value.save_as(saved)
        _no_exception(page, "after the download")
        trace = np.load(saved)
        assert "Layer i is encoder.layer[i]" in str(trace["README"])
        hidden, attentions = trace["hidden_states"], trace["attentions"]
        layers, heads, tokens = attentions.shape[0], attentions.shape[1], attentions.shape[2]
        assert hidden.shape[0] == layers + 1 and hidden.shape[1] == tokens and heads >= 1
        np.testing.assert_allclose(attentions.sum(-1), 1.0, atol=1e-4)  # softmax rows of a real forward pass
        assert np.abs(hidden[0]).sum() > 0 and not np.allclose(hidden[0], hidden[-1])
    finally:
        page.context.close()
