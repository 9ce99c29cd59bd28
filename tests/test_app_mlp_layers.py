"""AppTest of the MLP and Layer-stack pages: shapes, charts, pickers and sidebar state, on two model sizes."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, closed_sections, markdown_text, ok, open_app, open_sections, specs, titles
from helpers import gradient_jpeg

ROOT = Path(__file__).resolve().parent.parent


def subplot_titles(at) -> list[str]:
    return [a.get("text", "") for s in specs(at) for a in s["layout"].get("annotations", [])]


def start(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(page).run()
    if at.sidebar.selectbox(key="w:model_choice").value != "random":
        at.sidebar.selectbox(key="w:model_choice").set_value("random").run()
    return ok(at)


def test_both_pages_at_vit_b16_with_an_uploaded_photo():
    at = start("pages/mlp.py")
    at.sidebar.file_uploader[0].upload("photo.jpg", gradient_jpeg((260, 180)), "image/jpeg").run()
    ok(at)
    assert at.session_state["image"][0] == "photo.jpg"

    # ---- MLP page at ViT-B/16 defaults: 197 tokens, D = 768, M = 3072
    assert at.title[0].value.startswith("4 · MLP")
    text = markdown_text(at)
    assert "`[1, 197, 768]`" in text and "`[1, 197, 3072]`" in text
    assert "[batch, tokens, intermediate_size]" in text
    names = titles(at)
    assert len(names) == 6, names
    assert any(t.startswith("Layer 0: each token row gets 4x longer") for t in names)  # layer i = encoder.layer[i]
    assert any("where this layer's real inputs fall" in t for t in names)
    assert any(t.startswith("The residual add for CLS") for t in names)
    assert [s.value for s in at.subheader][:4] == ["1 · Expand: D → M", "2 · Bend: GELU", "3 · Project back: M → D",
                                                   "4 · Add it back: the residual"]
    negative = next(m for m in at.metric if m.label == "Below zero before")
    assert 0.0 < float(negative.value.rstrip("%")) < 100.0

    at.select_slider(key="mlp:layer").set_value(3).run()
    at.selectbox(key="mlp:token").set_value(15).run()
    ok(at)
    names = titles(at)
    assert any(t.startswith("Layer 3:") for t in names) and not any(t.startswith("Layer 0:") for t in names)
    assert any(t.startswith("The residual add for patch 14 (1,0)") for t in names)

    # ---- Layer stack page: the sidebar state came along
    at.switch_page("pages/layers.py").run()
    ok(at)
    assert at.sidebar.selectbox(key="w:model_choice").value == "random"
    assert at.session_state["image"][0] == "photo.jpg"
    assert at.title[0].value.startswith("5 · Layer stack")
    text = markdown_text(at)
    assert "`[13, 1, 197, 768]`" in text and "`[12, 1, 12, 197, 197]`" in text
    names = titles(at)
    assert len(names) == 5, names  # two sections closed: their figures are neither computed nor sent
    assert closed_sections(at) == ["layers:open_heads", "layers:open_pca"]
    open_sections(at)
    names = titles(at)
    assert len(names) == 8, names
    for expected in ("The residual stream across depth", "How much each layer turns the tokens", "Token norms",
                     "Where CLS looks, layer by layer", "Mean attention distance per head",
                     "Attention entropy per head", "Which patches reach the CLS token",
                     "Which patches the model treats alike"):
        assert any(t.startswith(expected) for t in names), (expected, names)
    # one small multiple per layer, numbered like encoder.layer[i]: layer 0 .. layer 11
    assert "layer 0" in subplot_titles(at) and "layer 11" in subplot_titles(at) and "layer 12" not in subplot_titles(at)
    assert "token PCA, after layer 11<br>(R, G, B = PC 1, 2, 3)" in subplot_titles(at)

    at.radio(key="layers:fusion").set_value("max")
    at.slider(key="layers:discard").set_value(0.5)
    at.select_slider(key="layers:pca_layer").set_value(0)
    at.toggle(key="layers:cls_relative").set_value(True)
    at.toggle(key="layers:norms_relative").set_value(True)
    at.radio(key="layers:stream_token").set_value("average patch token").run()
    ok(at)
    sub = subplot_titles(at)
    assert "token PCA, embeddings<br>(R, G, B = PC 1, 2, 3)" in sub
    names = titles(at)
    assert any("each map scaled to its own maximum" in t for t in names)
    assert any(t == "The residual stream across depth (average patch token)" for t in names)
    rollout = next(s for s in specs(at) if s["layout"]["meta"]["title"].startswith("Which patches reach"))
    scales = {(t["zmin"], t["zmax"]) for t in rollout["data"] if t["type"] == "heatmap"}
    assert len(scales) == 1 and next(iter(scales))[0] == 0.0  # one shared colour scale

    # ---- a sidebar change reaches the page: patch 32 at 224 = 49 patches + CLS
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    ok(at)
    text = markdown_text(at)
    assert "`[1, 50, 768]`" in text and "`[12, 1, 12, 50, 50]`" in text
    assert at.select_slider(key="layers:pca_layer").value == 0


def test_both_pages_on_a_tiny_config_and_pickers_clamp_when_layers_shrink():
    at = start("pages/layers.py")
    sidebar = at.sidebar
    sidebar.select_slider(key="w:image_size").set_value(32)
    sidebar.select_slider(key="w:patch_size").set_value(16)
    sidebar.select_slider(key="w:hidden_size").set_value(32)
    sidebar.select_slider(key="w:num_heads").set_value(1)
    sidebar.select_slider(key="w:num_layers").set_value(3).run()
    at.sidebar.select_slider(key="w:mlp_size").set_value(64).run()  # its options follow the hidden size
    ok(at)
    text = markdown_text(at)
    assert "`[1, 5, 32]`" in text and "`[4, 1, 5, 32]`" in text and "`[3, 1, 1, 5, 5]`" in text
    open_sections(at)
    assert len(at.get("plotly_chart")) == 8
    at.select_slider(key="layers:pca_layer").set_value(3).run()
    ok(at)

    # fewer layers than the picker points at: it is clamped, nothing breaks
    at.sidebar.select_slider(key="w:num_layers").set_value(1).run()
    ok(at)
    assert at.select_slider(key="layers:pca_layer").value == 1
    assert "`[2, 1, 5, 32]`" in markdown_text(at)

    at.switch_page("pages/mlp.py").run()
    ok(at)
    assert at.sidebar.select_slider(key="w:num_layers").value == 1  # sidebar state survived the switch
    text = markdown_text(at)
    assert "`[1, 5, 64]`" in text and "`[1, 5, 32]`" in text
    assert not [w for w in at.select_slider if w.key == "mlp:layer"]  # one layer: no picker
    assert any("single layer" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 6
    assert any(t.startswith("Layer 0: each token row gets 2x longer (all tokens)") for t in titles(at))
    at.selectbox(key="mlp:token").set_value(4).run()
    assert any(t.startswith("The residual add for patch 3 (1,1)") for t in titles(at))

    at.sidebar.select_slider(key="w:num_layers").set_value(3).run()
    at.select_slider(key="mlp:layer").set_value(2).run()
    ok(at)
    at.sidebar.select_slider(key="w:num_layers").set_value(2).run()
    ok(at)
    assert at.select_slider(key="mlp:layer").value == 1  # layer 2 is gone: the last one, layer 1


@pytest.mark.skipif(not (ROOT / "assets" / "models" / "shapes" / "config.json").is_file(), reason="no bundled model yet")
def test_both_pages_with_the_bundled_model():
    at = open_app("bundled:shapes", page="pages/mlp.py")
    assert len(at.get("plotly_chart")) == 6
    at.switch_page("pages/layers.py").run()
    ok(at)
    assert at.sidebar.selectbox(key="w:model_choice").value == "bundled:shapes"
    assert len(at.get("plotly_chart")) == 5
    open_sections(at)
    assert len(at.get("plotly_chart")) == 8
