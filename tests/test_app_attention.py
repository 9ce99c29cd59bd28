"""AppTest of the self-attention page: ViT-B/16 random weights, then a tiny config with an upload."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from app_helpers import closed_sections, open_app, open_sections

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/attention.py"


def _titles(at) -> list[str]:
    out = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out.append(spec["layout"].get("meta", {}).get("title", ""))
    return out


def _payload(at) -> int:
    return sum(len(chart.proto.spec.encode()) for chart in at.get("plotly_chart"))


def _text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def _title_with(at, fragment: str) -> str:
    matches = [t for t in _titles(at) if fragment in t]
    assert matches, (fragment, _titles(at))
    return matches[0]


def _attention_scale(at, fragment: str) -> tuple[str, float]:
    """(colour bar title, top of the colour range) of the figure whose title holds ``fragment``."""
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if fragment in spec["layout"].get("meta", {}).get("title", ""):
            for trace in spec["data"]:
                if trace.get("type") == "heatmap" and trace.get("showscale", True) is not False and "colorbar" in trace:
                    return trace["colorbar"]["title"]["text"], trace["zmax"]
                marker = trace.get("marker", {})
                if marker.get("showscale"):
                    return marker["colorbar"]["title"]["text"], marker["cmax"]
    raise AssertionError(fragment)


def _jpeg(size=(90, 60)) -> bytes:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    img = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, 90)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vit_b():
    return open_app("random", page=PAGE)


def test_page_at_vit_b16_defaults(vit_b):
    at = vit_b
    assert at.title[0].value == "3 · Self-attention"
    text = _text(at)
    # live shapes of this run: 196 patches + CLS, 12 heads of 64
    for shape in ("`[1, 197, 768]`", "`[1, 12, 197, 64]`", "`[1, 12, 197, 197]`"):
        assert shape in text, shape
    assert 'rearrange(x, "b t (h d) -> b h t d", h=12)' in text or "b t (h d) -> b h t d" in at.code[0].value
    assert any("b h i d, b h j d -> b h i j" in c.value for c in at.code)
    titles = _titles(at)
    assert len(titles) == 6, titles
    for part in ("Click a patch", "where each head looks from query patch 105 (row 7, col 7)",
                 "Scores q·kᵀ/√d", "Attention = softmax(scores)", "attention of the CLS token",
                 "where the CLS token's attention goes"):
        assert any(part in t for t in titles), part
    # three sections are closed, and nothing of theirs is computed or sent until they are opened
    lazy = ("read as 12 heads x 64 dims", "Q, K and V", "Attention entropy per head", "Mean attention distance per head", "Token sizes before and after",
            "head's share")
    assert not any(part in t for t in titles for part in lazy), titles
    assert closed_sections(at) == ["attn:open_qkv", "attn:open_focus", "attn:open_projection"]
    # a page's figures stay well under 2 MB at ViT-B/16
    assert _payload(at) < 1_600_000, _payload(at)
    open_sections(at)  # what a click on each expander does
    opened = _titles(at)
    assert len(opened) == 12, opened
    assert "Layer 0, head 0: Q, K and V, each [tokens 197, head_dim 64]" in _title_with(at, "Q, K and V")
    for part in lazy:
        assert any(part in t for t in opened), part
    assert "12 heads" in _text(at) and "rebuild attention_output to within" in _text(at)
    for key in ("attn:open_qkv", "attn:open_focus", "attn:open_projection"):
        at.session_state[key] = False
    at.run()
    assert len(_titles(at)) == 6
    # the sidebar kept its state through the page switch
    assert at.sidebar.selectbox(key="w:model_choice").value == "random"
    assert at.sidebar.select_slider(key="w:patch_size").value == 16
    # pickers exist and are clamped to the config
    assert at.select_slider(key="attn:layer").options == [f"layer {i}" for i in range(12)]
    assert at.select_slider(key="attn:head").options == [f"head {i}" for i in range(12)]


def test_pickers_and_query_change_the_charts(vit_b):
    at = vit_b
    at.select_slider(key="attn:head").set_value(3).run()
    at.select_slider(key="attn:layer").set_value(5).run()
    assert not at.exception
    at.session_state["attn:open_qkv"] = True  # the section follows the pickers while it is open
    at.run()
    assert "Layer 5, head 3: Q, K and V" in _title_with(at, "Q, K and V")
    at.select_slider(key="attn:head").set_value(4).run()
    assert at.session_state["attn:open_qkv"] and "Layer 5, head 4: Q, K and V" in _title_with(at, "Q, K and V")
    at.select_slider(key="attn:head").set_value(3).run()
    assert "layer 5, head 3" in _title_with(at, "Attention = softmax")
    at.number_input(key="attn:query_input").set_value(37).run()
    assert not at.exception
    assert "query patch 37 (row 2, col 9)" in _title_with(at, "where each head looks")
    assert "query patch 37 (row 2, col 9)" in _text(at)
    # the page's own choices survive a visit to another page
    at.switch_page("pages/overview.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.select_slider(key="attn:layer").value == 5 and at.select_slider(key="attn:head").value == 3
    assert "query patch 37 (row 2, col 9)" in _title_with(at, "where each head looks")
    at.toggle(key="attn:mean_heads").set_value(True).run()
    assert "mean of 12 heads" in _title_with(at, "Attention = softmax")
    # attention colours are fitted to what each figure shows (said on the colour bar); 0..1 is an option
    for fragment in ("Attention = softmax", "where each head looks", "attention of the CLS token"):
        bar, zmax = _attention_scale(at, fragment)
        assert "fitted" in bar and 0 < zmax < 1, (fragment, bar, zmax)
    at.toggle(key="view:attn_fixed").set_value(True).run()
    assert not at.exception
    for fragment in ("Attention = softmax", "where each head looks", "attention of the CLS token"):
        assert _attention_scale(at, fragment) == ("weight<br>fixed 0–1" if "Attention" not in fragment
                                                  else "attention<br>fixed 0–1", 1.0), fragment
    at.switch_page("pages/layers.py").run()  # the choice follows the user to the other attention figures
    assert at.toggle(key="view:attn_fixed").value is True
    at.toggle(key="view:attn_fixed").set_value(False).run()
    at.switch_page(PAGE).run()


def test_sidebar_changes_reach_the_page(vit_b):
    at = vit_b
    # query 37 and layer 5 from the previous test; a coarser grid must clamp both sensibly
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "`[1, 50, 768]`" in text and "`[1, 12, 50, 50]`" in text  # 49 patches + CLS
    # the query stays on the same spot of the picture: (row 2, col 9) of 14x14 is (row 1, col 4) of 7x7
    assert "query patch 11 (row 1, col 4)" in _title_with(at, "where each head looks")
    at.sidebar.select_slider(key="w:num_layers").set_value(2).run()
    assert not at.exception
    assert at.select_slider(key="attn:layer").options == ["layer 0", "layer 1"]
    assert at.select_slider(key="attn:layer").value == 1  # layer 5 no longer exists: clamped
    at.sidebar.select_slider(key="w:image_size").set_value(64).run()  # 64 / 32: a 2x2 grid
    assert not at.exception
    assert "`[1, 5, 768]`" in _text(at)
    assert "query patch 1 (row 0, col 1)" in _title_with(at, "where each head looks")  # still upper right


def test_tiny_model_one_head_one_layer_uploaded_image():
    at = open_app("random", upload=("photo.jpg", _jpeg(), "image/jpeg"), page=PAGE,
                  image_size=32, patch_size=16, hidden_size=64, num_heads=1, num_layers=1)
    assert at.session_state["image"][0] == "photo.jpg"  # the upload survived the page switch
    text = _text(at)
    assert "`[1, 5, 64]`" in text and "`[1, 1, 5, 64]`" in text and "`[1, 1, 5, 5]`" in text
    assert "the only one" in text  # one layer, one head: no sliders to move
    assert len(at.get("select_slider")) == len(at.sidebar.select_slider)
    assert len(_titles(at)) == 6
    open_sections(at)
    assert len(_titles(at)) == 12
    assert "query patch 3 (row 1, col 1)" in _title_with(at, "where each head looks")
    at.number_input(key="attn:query_input").set_value(0).run()
    assert not at.exception
    assert "query patch 0 (row 0, col 0)" in _title_with(at, "where each head looks")
