"""AppTest of the first three pages (overview, patching, CLS and position).

Random ViT-B/16 defaults (overview, patching, embeddings), a small random config with an uploaded
picture (then patch size 32 at 224), and a local checkpoint of a bare ViTModel with a pooler and no
classifier. Every test starts its own session: none depends on what another one left.
"""

import re

import pytest

from app_helpers import (closed_sections, figure_titled, ok, open_app, open_sections, page_text, payload_bytes,
                         small_session, titles)
from helpers import gradient_jpeg
from perf_budgets import PAGE_PAYLOAD_GUARD


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.main.metric}  # not the sidebar's


@pytest.fixture
def vit_b():
    """A new session on random ViT-B/16 weights (the model and its trace come from Streamlit's caches)."""
    return open_app("random", timeout=300)


def test_overview_at_vit_b16(vit_b):
    at = vit_b
    assert at.title[0].value == "A Vision Transformer, tensor by tensor"
    metrics = _metrics(at)
    assert metrics["Parameters"] == "85.8 M" and metrics["FLOPs per image"] == "35.1 G"
    assert metrics["Tokens"] == "197" and metrics["Layers x heads"] == "12 x 12" and metrics["Weights"] == "random"
    shown = titles(at)
    assert len(shown) == 2, shown
    assert any(t.startswith("Top-5 prediction for") for t in shown)
    tree = figure_titled(at, "boxes sized by FLOPs")
    assert "35.1 GFLOPs" in tree["layout"]["meta"]["title"]
    assert tree["data"][0]["type"] == "treemap" and "ViTLayer 11" in tree["data"][0]["labels"]
    assert "random" in page_text(at) or any("random" in w.value for w in at.warning)
    # where to start: a link to every stage
    links = [link.proto.page for link in at.get("page_link")]
    for page in ("patching", "embeddings", "attention", "mlp", "layers", "prediction"):
        assert page in links, (page, links)
    assert "`[1, 3, 224, 224]`" in page_text(at) and "`[1, 10]`" in page_text(at)
    assert payload_bytes(at) < PAGE_PAYLOAD_GUARD["overview"], payload_bytes(at)
    # the box-size picker switches the treemap to parameters
    at.segmented_control(key="overview:metric").set_value("params").run()
    ok(at)
    assert "85.8 M parameters" in figure_titled(at, "boxes sized by parameters")["layout"]["meta"]["title"]
    at.segmented_control(key="overview:metric").set_value("flops").run()


def test_patching_at_vit_b16(vit_b):
    at = vit_b
    at.switch_page("pages/patching.py").run()
    ok(at)
    assert at.title[0].value.startswith("1 · Patching")
    text = page_text(at)
    for shape in ("`[1, 3, 224, 224]`", "`[1, 196, 768]`"):
        assert shape in text
    assert any('"b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=16, p2=16' in c.value for c in at.code)
    shown = titles(at)
    assert len(shown) == 5, shown  # the filters' section is closed: nothing of it is drawn yet
    assert closed_sections(at) == ["patch:open_filters"]
    assert not any("Principal components" in t for t in shown)
    open_sections(at)
    shown = titles(at)
    assert len(shown) == 7, shown
    for part in ("patch grid", "The 196 patches, pulled apart", "Patch 105 enlarged", "768 pixel values",
                 "Patch 105's embedding", "Principal components of the 16 x 16 filters", "Variance explained"):
        assert any(part in t for t in shown), (part, shown)
    # conv output and W @ x + b agree to float32 rounding
    assert float(_metrics(at)["Largest |conv − (W·x + b)|"]) < 1e-4
    pca = figure_titled(at, "Principal components")
    assert len(pca["layout"]["annotations"]) == 28
    assert payload_bytes(at) < PAGE_PAYLOAD_GUARD["patching"], payload_bytes(at)
    # the sidebar survived the page switch
    assert at.sidebar.selectbox(key="w:model_choice").value == "random"
    assert at.sidebar.select_slider(key="w:patch_size").value == 16
    # a selected patch (as a click stores it) is clamped to the grid and opens that patch
    at.session_state["patch:selected"] = 10_000
    at.run()
    ok(at)
    assert "patch **195** (row 13, column 13)" in page_text(at)
    at.session_state["patch:selected"] = 3
    at.run()
    assert any("Patch 3 enlarged" in t for t in titles(at)) and "patch **3** (row 0, column 3)" in page_text(at)


def test_embeddings_at_vit_b16(vit_b):
    at = vit_b
    at.switch_page("pages/embeddings.py").run()
    ok(at)
    assert at.title[0].value == "2 · CLS token and position embeddings"
    text = page_text(at)
    for shape in ("`[1, 196, 768]`", "`[1, 1, 768]`", "`[1, 197, 768]`"):
        assert shape in text
    assert "These weights are random" in text
    shown = titles(at)
    assert len(shown) == 5, shown
    tokens = figure_titled(at, "The token sequence")
    assert "dimensions 0–95" in tokens["layout"]["meta"]["title"]
    grid = figure_titled(at, "Position-embedding similarity")
    assert "14 x 14 maps of 14 x 14" in grid["layout"]["meta"]["subtitle"]
    assert any("Patch 105 (row 7, col 7) vs. every patch" in t for t in shown)
    assert payload_bytes(at) < PAGE_PAYLOAD_GUARD["embeddings"], payload_bytes(at)
    # pickers: the dimension window, the shared scale, the stretched colours
    at.slider(key="emb:dim_start").set_value(96).run()
    ok(at)
    assert "dimensions 96–191" in figure_titled(at, "The token sequence")["layout"]["meta"]["title"]
    at.toggle(key="emb:shared_scale").set_value(True).run()
    assert "one colour scale for all three panels" in figure_titled(at, "The token sequence")["layout"]["meta"]["subtitle"]
    at.toggle(key="emb:stretch").set_value(True).run()
    ok(at)
    heat = figure_titled(at, "Position-embedding similarity")["data"][0]
    assert heat["colorscale"][0][1] != "rgb(5,48,97)" and heat["zmax"] < 1  # sequential, stretched
    at.session_state["emb:selected"] = 0
    at.run()
    assert any("Patch 0 (row 0, col 0)" in t for t in titles(at))


@pytest.fixture
def small():
    """A new session on a small random config (2 x 2 patches, width 32, one layer of one head) and an upload."""
    arch = dict(hidden_size=32, num_heads=1, num_layers=1, mlp_size=64, image_size=32, patch_size=16)
    return small_session(arch, upload=("photo.jpg", gradient_jpeg((120, 80), blue=60), "image/jpeg"), timeout=300)


def test_small_config_with_upload(small):
    at = small
    metrics = _metrics(at)
    assert metrics["Tokens"] == "5" and metrics["Layers x heads"] == "1 x 1"
    assert any(t == "Top-5 prediction for photo.jpg" for t in titles(at))
    assert figure_titled(at, "boxes sized by")["data"][0]["maxdepth"] == 7  # few layers: drawn down to Q·Kᵀ

    at.switch_page("pages/patching.py").run()
    ok(at)
    text = page_text(at)
    assert "`[1, 4, 768]`" in text and "`[1, 4, 32]`" in text and "`[1, 3, 32, 32]`" in text
    assert any("The 4 patches, pulled apart" in t for t in titles(at))
    assert "patch **3** (row 1, column 1)" in page_text(at)  # the centre patch of a 2 x 2 grid
    assert at.sidebar.select_slider(key="w:image_size").value == 32

    at.switch_page("pages/embeddings.py").run()
    ok(at)
    assert "`[1, 5, 32]`" in page_text(at)
    assert not [s for s in at.slider if s.key == "emb:dim_start"]  # all 32 dimensions fit: no window picker
    assert "2 x 2 maps of 2 x 2" in figure_titled(at, "Position-embedding similarity")["layout"]["meta"]["subtitle"]


def test_patch_size_32_reaches_the_pages(small):
    at = small
    ok(at.switch_page("pages/embeddings.py").run())
    at.sidebar.select_slider(key="w:image_size").set_value(224).run()
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    ok(at)
    text = page_text(at)  # still on the embeddings page: 49 patches + CLS = 50 tokens
    assert "`[1, 49, 32]`" in text and "`[1, 50, 32]`" in text
    at.switch_page("pages/patching.py").run()
    ok(at)
    assert "`[1, 49, 3072]`" in page_text(at)
    assert any("The 49 patches, pulled apart" in t for t in titles(at))
    at.switch_page("pages/overview.py").run()
    ok(at)
    assert _metrics(at)["Tokens"] == "50"


def test_the_source_code_section_sends_the_real_code_only_once_opened(small):
    """Closed, the page carries no code of the class; opened, exactly what inspect reads from model.py."""
    import inspect

    from vit_explain import model as vit
    from vit_explain.ui import source_key

    at = small
    at.switch_page("pages/patching.py").run()
    ok(at)
    source = inspect.getsource(vit.PatchEmbeddings)
    assert "class PatchEmbeddings" in source
    assert not any("class PatchEmbeddings" in c.value for c in at.code)
    at.session_state[source_key(vit.PatchEmbeddings)] = True
    ok(at.run())
    assert [c.value.strip() for c in at.code if "class PatchEmbeddings" in c.value] == [source.strip()]
    at.session_state[source_key(vit.PatchEmbeddings)] = False
    ok(at.run())
    assert not any("class PatchEmbeddings" in c.value for c in at.code)


def test_bare_vit_model_without_classifier(tmp_path):
    import torch

    from vit_explain import ViTConfig, ViTModel
    from vit_explain.weights import save_checkpoint

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                       intermediate_size=64)
    model = ViTModel(config, add_pooling_layer=True)
    model.init_weights(seed=1)
    with torch.no_grad():  # give the position embeddings a structure, as training would
        model.embeddings.position_embeddings.mul_(10)
    save_checkpoint(model, tmp_path / "bare")

    at = open_app("local", local_path=tmp_path / "bare", timeout=300)
    assert any("no classifier head" in i.value for i in at.info)
    assert _metrics(at)["Output"] == "features"
    tree = figure_titled(at, "boxes sized by FLOPs")["data"][0]
    assert tree["labels"][0] == "ViTModel" and "ViTPooler" in tree["labels"] and "classifier" not in tree["labels"]
    assert "pooler output" in page_text(at)
    for page in ("pages/patching.py", "pages/embeddings.py"):
        at.switch_page(page).run()
        ok(at)
    assert "With trained weights" in page_text(at)  # a loaded checkpoint counts as trained
    assert re.search(r"4 x 4 maps of 4 x 4", figure_titled(at, "Position-embedding similarity")["layout"]["meta"]["subtitle"])
