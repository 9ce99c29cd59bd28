"""The sidebar's Hub checkpoints in a running app (AppTest), served by a stand-in Hub on 127.0.0.1.

Each checkpoint the sidebar offers by name is a small random model of the same kind saved under
the real repository id; choosing it downloads it (with a progress bar), and every page then runs on it.
"""

from __future__ import annotations

import pytest

from app_helpers import open_app
from hub_models import save_tiny
from hub_standin import StandInHub, folder_files, point_at

pytest.importorskip("transformers")

PAGES = ["pages/overview.py", "pages/patching.py", "pages/embeddings.py", "pages/attention.py",
         "pages/mlp.py", "pages/layers.py", "pages/prediction.py"]


@pytest.fixture(scope="module")
def offered_repos(tmp_path_factory):
    from vit_explain.weights import KNOWN_CHECKPOINTS

    root = tmp_path_factory.mktemp("repos")
    return {repo_id: folder_files(save_tiny(repo_id, root / repo_id.replace("/", "__"))) for repo_id in KNOWN_CHECKPOINTS}


@pytest.fixture
def hub(offered_repos, tmp_path, monkeypatch):
    import streamlit as st

    st.cache_resource.clear()  # a model cached by another test must not hide the download
    standin = StandInHub(offered_repos)
    point_at(monkeypatch, standin, tmp_path / "hf-cache")
    yield standin
    standin.close()
    st.cache_resource.clear()


def test_choosing_an_offered_hub_checkpoint_downloads_it_and_runs_the_page(hub):
    at = open_app("hub:facebook/deit-tiny-patch16-224")
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert hub.weight_requests("facebook/deit-tiny-patch16-224")
    # the page shows the downloaded model's prediction
    assert at.sidebar.selectbox(key="w:model_choice").value == "hub:facebook/deit-tiny-patch16-224"


@pytest.mark.parametrize("repo_id", ["google/vit-base-patch16-224", "google/vit-base-patch16-224-in21k",
                                     "facebook/deit-tiny-patch16-224", "facebook/deit-small-patch16-224",
                                     "facebook/dino-vitb16", "facebook/dinov2-small",
                                     "facebook/dinov2-with-registers-small"])
def test_every_offered_hub_checkpoint_runs_every_page_downloaded_once(hub, repo_id):
    at = open_app(f"hub:{repo_id}")
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    at.run()  # a rerun after the cache is warm draws from the cache
    assert not at.exception, [e.value for e in at.exception]
    assert len(hub.weight_requests(repo_id)) == 1, hub.weight_requests(repo_id)
