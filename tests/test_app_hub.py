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


# ---------------------------------------------------------------------------------- the Hub id box
import json  # noqa: E402
import threading  # noqa: E402

from hub_standin import StandInHub as _Hub  # noqa: E402

BOX = "w:hub_id"
TINY = "someone/tiny-vit"
CLIP = "openai/clip-vit-base-patch32"


@pytest.fixture
def box_hub(offered_repos, tmp_path, monkeypatch):
    """A stand-in Hub with a small ViT, a CLIP repository, a gated and a "large" model."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    tiny = offered_repos["google/vit-base-patch16-224"]
    clip = {"config.json": json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}).encode(),
            "model.safetensors": b"\0" * 200_000}
    standin = _Hub({TINY: tiny, CLIP: clip, "someone/big-vit": tiny, "someone/gated-vit": tiny},
                   gated=("someone/gated-vit",),
                   listed_sizes={"someone/big-vit": {"model.safetensors": 1_200_000_000}})
    point_at(monkeypatch, standin, tmp_path / "hf-cache")
    yield standin
    standin.close()
    st.cache_resource.clear()
    st.cache_data.clear()


def type_in_box(at, text: str):
    at.sidebar.selectbox(key="w:model_choice").set_value("hub-other").run()
    at.sidebar.text_input(key=BOX).set_value(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(at) -> str:
    return " ".join(e.value for e in at.error) + " " + " ".join(e.value for e in at.sidebar.error)


def test_the_box_shows_what_it_found_then_loads_a_small_vit_and_offers_it_after(box_hub):
    at = type_in_box(open_app(), TINY)
    assert not at.error, messages(at)
    found = " ".join(c.value for c in at.sidebar.caption)
    assert "Found someone/tiny-vit: ViTForImageClassification" in found and "parameters" in found and "MB" in found
    assert box_hub.weight_requests(TINY)
    assert "Predicted" in " ".join(m.value for m in at.markdown) or at.get("plotly_chart") or at.metric
    at.run()
    options = at.sidebar.selectbox(key="w:model_choice").options
    assert f"{TINY} — Hub" in options, options  # the loaded model joins the session's list
    at.switch_page("pages/attention.py").run()
    assert not at.exception and not at.error, messages(at)


def test_the_box_refuses_clip_by_name_before_any_weight_file_is_requested(box_hub):
    at = type_in_box(open_app(), CLIP)
    text = messages(at)
    assert "CLIPModel" in text and "Supported:" in text, text
    assert any("config.json" in r for r in box_hub.requests)
    assert not box_hub.weight_requests(CLIP), box_hub.requests


def test_the_box_asks_before_a_large_download(box_hub):
    at = type_in_box(open_app(), "someone/big-vit")
    assert "1200 MB" in " ".join(w.value for w in at.sidebar.warning)
    assert not box_hub.weight_requests("someone/big-vit")  # nothing moved yet
    at.sidebar.button(key="hub:confirm").click().run()
    assert not at.exception and not at.error, messages(at)
    assert len(box_hub.weight_requests("someone/big-vit")) == 1


@pytest.mark.parametrize("text,words", [
    ("someone/missing-vit", "no public model called 'someone/missing-vit'"),
    ("someone/gated-vit", "gated repository"),
    ("not a model id", "is not a Hub model id"),
    ("../../etc/passwd", "is not a Hub model id"),
])
def test_the_box_says_what_is_wrong_with_a_missing_gated_or_misspelt_id(box_hub, text, words):
    at = type_in_box(open_app(), text)
    assert words in messages(at), messages(at)
    assert not any("safetensors" in r for r in box_hub.requests)


def test_the_box_says_when_the_hub_cannot_be_reached(monkeypatch, tmp_path):
    import streamlit as st

    from hub_standin import PROXY_VARIABLES
    from huggingface_hub import constants

    st.cache_data.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    at = type_in_box(open_app(), TINY)
    assert "Cannot reach the Hugging Face Hub" in messages(at), messages(at)


def test_classroom_mode_hides_the_box_without_an_allow_list(box_hub, monkeypatch):
    monkeypatch.setenv("VIT_EXPLAIN_CLASSROOM", "1")
    monkeypatch.delenv("VIT_EXPLAIN_HUB_ALLOW", raising=False)
    at = open_app()
    assert "hub-other" not in at.sidebar.selectbox(key="w:model_choice").options
    # a source that names a repository anyway (state from before the switch, say) is refused before any download
    from vit_explain import ui

    assert ui.load_base(f"hub:{TINY}") is False
    assert not any(TINY in r for r in box_hub.requests)


def test_classroom_mode_with_an_allow_list_and_a_size_cap(box_hub, monkeypatch):
    monkeypatch.setenv("VIT_EXPLAIN_CLASSROOM", "1")
    monkeypatch.setenv("VIT_EXPLAIN_HUB_ALLOW", "someone/*, google/vit-base-patch16-224")
    at = type_in_box(open_app(), TINY)
    assert not at.error, messages(at)
    assert box_hub.weight_requests(TINY)
    at = type_in_box(open_app(), CLIP)
    assert "does not download openai/clip-vit-base-patch32" in messages(at)
    assert not any(CLIP in r for r in box_hub.requests)  # not even its config
    monkeypatch.setenv("VIT_EXPLAIN_HUB_MAX_MB", "100")
    at = type_in_box(open_app(), "someone/big-vit")
    assert "more than this server's limit of 100 MB" in messages(at)
    assert not box_hub.weight_requests("someone/big-vit")


def test_two_sessions_asking_for_one_repository_at_once_download_it_once(offered_repos, tmp_path, monkeypatch):
    from vit_explain.ui.sources import fetch

    slow = _Hub({TINY: offered_repos["google/vit-base-patch16-224"]}, delay_s=0.05)
    point_at(monkeypatch, slow, tmp_path / "hf-cache")
    try:
        errors: list[BaseException] = []

        def student():
            try:
                fetch(f"hub:{TINY}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=student) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(slow.weight_requests(TINY)) == 1, slow.weight_requests(TINY)
    finally:
        slow.close()


def test_the_sidebar_says_which_transform_prepared_the_picture(hub):
    at = open_app("hub:facebook/dinov2-small")
    said = " ".join(c.value for c in at.sidebar.caption)
    assert "Prepared with the Hugging Face image processor: shortest side to 64 px" in said, said
    assert "centre crop 56 px (floored offsets)" in said
    at = open_app("random")
    assert "Prepared with the Hugging Face image processor: resize to" in " ".join(c.value for c in at.sidebar.caption)
