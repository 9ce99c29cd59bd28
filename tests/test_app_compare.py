"""The Compare page in AppTest: the shortcuts (trained vs random, CIFAR-10 vs shapes, before vs after a training run,
with vs without registers offline and through a stand-in Hub), model A following the sidebar, and two models of
different depth, grid and head count driven by one set of pickers, with the layer similarity opened."""

from __future__ import annotations

import re

import numpy as np
import pytest

from app_helpers import figure_titled, figures, markdown_text, ok, open_app, page_text, payload_bytes, small_session, titles
from perf_budgets import PAGE_PAYLOAD_BYTES

PAGE = "pages/compare.py"
CIFAR, SHAPES = "bundled:vit-cifar10", "bundled:shapes"


def _pairing(at) -> str:
    match = re.search(r"\*\*Layer \d+\*\* of A.*", markdown_text(at))
    assert match, markdown_text(at)[:2000]
    return re.sub(r"\*\*", "", match.group(0))


def _array(value) -> np.ndarray:
    """A figure's array as the browser gets it: a list, or Plotly's typed-array form {dtype, bdata, shape}."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value, dtype=float)


def _click(at, key: str):
    at.button(key=key).click()
    return ok(at.run())


def _prediction_titles(at) -> tuple[str, str]:
    found = titles(at)
    a = next(t for t in found if t.startswith("A · "))
    b = next(t for t in found if t.startswith("B · "))
    return a, b


def _horse_probability() -> float:
    """The bundled CIFAR-10 model's probability of "horse" for the default picture, computed here (not pinned)."""
    import torch

    from vit_explain.preprocess import load_image, to_pixel_values
    from vit_explain.ui import DEFAULT_SAMPLE
    from vit_explain.weights import load_checkpoint

    from pathlib import Path

    assets = Path(__file__).resolve().parent.parent / "assets"
    model = load_checkpoint(assets / "models" / "vit-cifar10")
    x = to_pixel_values(load_image(assets / "samples" / DEFAULT_SAMPLE), model.preprocess_spec)
    with torch.no_grad():
        p = model(x).logits[0].softmax(-1)
    horse = next(i for i, name in model.config.id2label.items() if name == "horse")
    assert int(p.argmax()) == horse
    return float(p[horse])


def test_the_page_opens_on_the_sidebars_model_against_random_weights():
    at = open_app(CIFAR, page=PAGE)
    assert at.selectbox(key="cmp:model_a").value == CIFAR
    assert at.selectbox(key="cmp:model_b").value == "random"  # a trained A: what training changed
    a, b = _prediction_titles(at)
    assert a == f"A · CIFAR-10 photos model: “horse”, {_horse_probability():.0%}" and b.startswith("B · Random weights: ")
    assert _pairing(at).startswith("Layer 5 of A (depth 100%) faces layer 5 of B (depth 100%) · the same layer count")
    for fragment in ("CLS attention in every layer", "Attention rollout of CLS", "Where the query patch looks",
                     "When does each model's answer appear?", "How far each head looks"):
        figure_titled(at, fragment)
    assert payload_bytes(at) < PAGE_PAYLOAD_BYTES
    # the layer similarity is computed only when asked
    assert not any(t.startswith("Layer similarity") for t in titles(at))


def test_shortcuts_cifar10_vs_shapes_then_trained_vs_random_and_model_a_drives_the_sidebar():
    at = open_app("random", page=PAGE)
    at = _click(at, "cmp:go_data")
    assert at.session_state["w:model_choice"] == CIFAR and at.selectbox(key="cmp:model_b").value == SHAPES
    a, b = _prediction_titles(at)
    assert a.startswith("A · CIFAR-10 photos model") and b.startswith("B · Synthetic shapes model")
    assert "A has 6 layers, B 4: layers are paired by relative depth" in _pairing(at)

    at.select_slider(key="cmp:layer").set_value(2).run()
    at.select_slider(key="cmp:head").set_value(1).run()
    ok(at)
    pairing = _pairing(at)
    assert pairing.startswith("Layer 2 of A (depth 40%) faces layer 1 of B (depth 33%)"), pairing
    assert "head 1 in both" in pairing
    assert "CLS attention in every layer (head 1;" in " ".join(titles(at))

    at = _click(at, "cmp:go_random")
    assert at.session_state["w:model_choice"] == CIFAR and at.selectbox(key="cmp:model_b").value == "random"
    assert _prediction_titles(at)[1].startswith("B · Random weights")

    # model A is the sidebar's model: choosing it on the page changes the sidebar (and so every page)
    at.selectbox(key="cmp:model_a").set_value(SHAPES).run()
    ok(at)
    assert at.sidebar.selectbox(key="w:model_choice").value == SHAPES
    assert _prediction_titles(at)[0].startswith("A · Synthetic shapes model")
    assert "64 px, 8 x 8 patches of 8 px" in page_text(at)  # random B takes A's architecture


def test_two_models_of_different_depth_grid_and_heads_share_one_set_of_pickers():
    # A: random weights, 64 px with patches of 16 (a 4 x 4 grid), 2 layers of 2 heads; B: the CIFAR-10 model
    # (an 8 x 8 grid, 6 layers of 3 heads)
    at = small_session({"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_heads": 2, "num_layers": 2,
                        "mlp_size": 64})
    at.switch_page(PAGE).run()
    ok(at)
    assert at.selectbox(key="cmp:model_b").value == CIFAR  # an untrained A meets a trained model first
    assert _pairing(at).startswith("Layer 1 of A (depth 100%) faces layer 5 of B (depth 100%) · A has 2 layers, B 6")
    assert list(at.select_slider(key="cmp:head").options) == ["mean over heads", "head 0", "head 1"]

    at.select_slider(key="cmp:layer").set_value(0).run()
    at.number_input(key="cmp:query_input").set_value(5).run()
    ok(at)
    pairing = _pairing(at)
    assert pairing.startswith("Layer 0 of A (depth 0%) faces layer 0 of B (depth 0%)"), pairing
    assert ("query patch 5 of A (row 1, col 1) covers the same spot as patch 27 of B (row 3, col 3), on its 8 x 8 grid"
            in pairing), pairing
    query = figure_titled(at, "Where the query patch looks")
    panels = [a["text"] for a in query["layout"]["annotations"]]
    assert panels == ["A: patch 5, layer 0, mean over heads", "B: patch 27, layer 0, mean over heads"]
    maps = [t for t in query["data"] if t["type"] == "heatmap"]
    assert [_array(m["z"]).shape for m in maps] == [(4, 4), (8, 8)]  # each model on its own grid, one colour scale
    assert maps[0]["zmax"] == maps[1]["zmax"]

    # a click on B's picture moves the query to A's patch at that spot
    clicks = [t for t in query["data"] if t["type"] == "scatter"]
    a_clicks, b_clicks = (_array(c["customdata"]) for c in clicks)
    assert list(a_clicks) == list(range(16)) and len(b_clicks) == 64
    assert b_clicks[63] == 15 and b_clicks[0] == 0 and b_clicks[3 * 8 + 3] == 5

    # a head A has and B too, then the layer similarity over the samples (opened, so computed once)
    at.select_slider(key="cmp:head").set_value(1).run()
    at.session_state["cmp:open_cka"] = True
    ok(at.run())
    cka = figure_titled(at, "Layer similarity (linear CKA)")
    cross = _array(cka["data"][0]["z"])
    assert cross.shape == (3, 7)  # A's embeddings + 2 layers against B's embeddings + 6 layers
    within = _array(cka["data"][1]["z"])
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-5)
    assert "x 17 tokens" in cka["layout"]["meta"]["subtitle"]  # CLS + A's 4 x 4 grid (B's averaged onto it)
    assert "every token of every picture" in page_text(at)
    assert "mean CKA at the same relative depth" in page_text(at)

    from vit_explain.ui.run import _STORES

    kept = len(_STORES["cmp:cka"][1])
    ok(at.run())  # a rerun takes it from the store: nothing new is computed
    assert len(_STORES["cmp:cka"][1]) == kept


def test_before_and_after_the_sessions_training_run():
    from helpers import jitter
    from vit_explain import trainer
    from vit_explain.config import ViTConfig

    at = open_app(CIFAR, page=PAGE)
    assert at.button(key="cmp:go_training").disabled  # nothing trained yet
    config = ViTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                       image_size=64, patch_size=8)
    model = jitter(trainer.build_model(config, trainer.CLASS_NAMES), 0.2)  # "trained": moved away from its start
    model.source = "the model you trained on the Training page (shapes, step 12)"
    source = "session:test0000-12"
    at.session_state["_session_models"] = {source: ("The model you trained (step 12)", model)}
    ok(at.run())
    assert not at.button(key="cmp:go_training").disabled
    at = _click(at, "cmp:go_training")
    assert at.session_state["w:model_choice"] == source and at.selectbox(key="cmp:model_b").value == "random"
    a, b = _prediction_titles(at)
    assert a.startswith("A · The model you trained: ") and b.startswith("B · Random weights: ")
    assert "the same layer count" in _pairing(at)
    b_caption = next(c.value for c in at.caption if c.value.startswith("**B**"))
    assert "64 px, 8 x 8 patches of 8 px (+ CLS) · 2 layers x 4 heads · width 32" in b_caption, b_caption
    assert b_caption.endswith("random weights (seed 0)"), b_caption


def test_registers_shortcut_says_why_when_offline():
    from vit_explain.ui import second_model

    second_model.hub_status.clear()
    at = open_app(CIFAR, page=PAGE)
    assert at.button(key="cmp:go_registers").disabled
    said = page_text(at)
    assert "With vs without registers" in said and "offline" in said and "The other comparisons work offline" in said
    assert not at.error and not at.warning


@pytest.fixture
def dinov2_hub(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import streamlit as st

    from hub_models import save_tiny
    from hub_standin import StandInHub, folder_files, point_at
    from vit_explain.ui import second_model

    repos = {r: folder_files(save_tiny(r, tmp_path / r.replace("/", "__")))
             for r in ("facebook/dinov2-small", "facebook/dinov2-with-registers-small")}
    st.cache_resource.clear()
    second_model.hub_status.clear()
    standin = StandInHub(repos)
    point_at(monkeypatch, standin, tmp_path / "hf-cache")
    yield standin
    standin.close()
    st.cache_resource.clear()
    second_model.hub_status.clear()


def test_with_and_without_registers_through_a_stand_in_hub(dinov2_hub):
    at = open_app(CIFAR, page=PAGE)
    assert not at.button(key="cmp:go_registers").disabled
    at = _click(at, "cmp:go_registers")
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["w:model_choice"] == "hub:facebook/dinov2-with-registers-small"
    assert at.selectbox(key="cmp:model_b").value == "hub:facebook/dinov2-small"
    for repo in ("facebook/dinov2-small", "facebook/dinov2-with-registers-small"):
        assert len(dinov2_hub.weight_requests(repo)) == 1, repo
    text = page_text(at)
    assert "(+ CLS + REG0 + REG1 + REG2 + REG3)" in text  # A: four registers, which have no counterpart in B
    assert "has no classifier" in " ".join(i.value for i in at.info)
    assert "needs both models to be classifiers" in text
    figure_titled(at, "How far each head looks")
    at.session_state["cmp:open_cka"] = True
    ok(at.run())
    cka = figure_titled(at, "Layer similarity (linear CKA)")
    assert np.isfinite(_array(cka["data"][0]["z"])).all()
    assert len(figures(at)) >= 5
