"""The sidebar's Hub checkpoints in a real browser, downloaded from a stand-in Hub on 127.0.0.1.

Every checkpoint the sidebar offers by name is served as a small random model of the same kind
(``hub_models.save_tiny``). The test picks each one in the sidebar's "Weights" list, sees the
download's progress bar, and visits every page on it; each is downloaded once.
"""

from __future__ import annotations

import time

import pytest

from hub_models import save_tiny
from hub_standin import StandInHub, folder_files
from test_browser import (  # noqa: F401 - shared server, browser and page helpers
    CHROMIUM,
    CHROMIUM_ARGS,
    _choose,
    _go,
    _no_exception,
    _open,
    _streamlit_server,
    _wait_idle,
    browser,
    playwright_api,
)
from vit_explain.ui import PAGES  # noqa: E402

pytestmark = pytest.mark.browser
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from vit_explain.weights import KNOWN_CHECKPOINTS

    root = tmp_path_factory.mktemp("hub-repos")
    repos = {r: folder_files(save_tiny(r, root / r.replace("/", "__"))) for r in KNOWN_CHECKPOINTS}
    standin = StandInHub(repos, delay_s=0.15)  # slow enough for the progress bar to be seen
    yield standin
    standin.close()


@pytest.fixture(scope="module")
def server(hub, tmp_path_factory):
    import test_browser

    folder = tmp_path_factory.mktemp("streamlit-hub")
    test_browser.SERVER_LOG = folder / "server.log"
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(folder / "hf-cache"),
           "HTTPS_PROXY": "", "https_proxy": "", "HTTP_PROXY": "", "http_proxy": "", "ALL_PROXY": "", "all_proxy": ""}
    with _streamlit_server(test_browser.SERVER_LOG, env) as url:
        yield url


def _choose_watching_progress(page, label: str) -> list[str]:
    """Pick ``label`` in the Weights list; returns the progress messages seen while the page ran."""
    box = page.locator('[data-testid="stSidebar"] input[aria-label="Weights"]')
    box.evaluate("e => e.scrollIntoView({block: 'center'})")  # its list needs room below it to open
    box.click()
    page.get_by_role("option", name=label, exact=True).click()
    seen: list[str] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        bars = page.locator('[data-testid="stSidebar"] [data-testid="stProgress"]')
        for i in range(bars.count()):
            try:
                seen.append(bars.nth(i).inner_text(timeout=500))
            except playwright_api.Error:
                pass
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if state not in ("running", "initial") and seen:
            break
        if state not in ("running", "initial") and time.time() > deadline - 50:
            break
        page.wait_for_timeout(50)
    _wait_idle(page)
    _no_exception(page, f"after choosing {label}")
    return seen


def test_every_offered_hub_checkpoint_loads_from_the_sidebar_on_every_page(server, browser, hub):
    from vit_explain.weights import KNOWN_CHECKPOINTS

    page = _open(browser, server, 1366)
    try:
        for repo_id, info in KNOWN_CHECKPOINTS.items():
            label = f"{info.title} — Hub, {info.download_mb:.0f} MB"
            seen = _choose_watching_progress(page, label)
            assert any("Downloading" in s or "Looking for" in s or "Connecting" in s for s in seen), (repo_id, seen)
            errors = page.locator('[data-testid="stAlertContentError"]')
            assert errors.count() == 0, (repo_id, errors.first.inner_text())
            for _, title, _ in PAGES:
                _go(page, title)
                assert errors.count() == 0, (repo_id, title, errors.first.inner_text())
                weights = page.locator('[data-testid="stSidebar"] input[aria-label="Weights"]').input_value()
                assert weights.strip() == label, (repo_id, title, weights)
            assert len(hub.weight_requests(repo_id)) == 1, (repo_id, hub.weight_requests(repo_id))
    finally:
        page.context.close()
