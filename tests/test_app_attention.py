"""AppTest of the self-attention page: ViT-B/16 random weights, then a tiny config with an upload.

Every test starts its own session (the model and the traces are in Streamlit's process-wide caches, so
a new session costs a few page runs, not a forward pass): none depends on what another one left.
"""

import pytest

from app_helpers import (closed_sections, ok, open_app, open_sections, page_text, payload_bytes, small_session,
                         spec_title, specs, title_with, titles)
from helpers import gradient_jpeg
from perf_budgets import PAGE_PAYLOAD_GUARD

PAGE = "pages/attention.py"


def _attention_scale(at, fragment: str) -> tuple[str, float]:
    """(colour bar title, top of the colour range) of the figure whose title holds ``fragment``."""
    for spec in specs(at):
        if fragment not in spec_title(spec):
            continue
        for trace in spec["data"]:
            if trace.get("type") == "heatmap" and trace.get("showscale", True) is not False and "colorbar" in trace:
                return trace["colorbar"]["title"]["text"], trace["zmax"]
            marker = trace.get("marker", {})
            if marker.get("showscale"):
                return marker["colorbar"]["title"]["text"], marker["cmax"]
    raise AssertionError(fragment)


@pytest.fixture
def vit_b():
    """A new session on random ViT-B/16 weights, on this page."""
    return open_app("random", page=PAGE)


def test_page_at_vit_b16_defaults(vit_b):
    at = vit_b
    assert at.title[0].value == "3 · Self-attention"
    text = page_text(at)
    # live shapes of this run: 196 patches + CLS, 12 heads of 64
    for shape in ("`[1, 197, 768]`", "`[1, 12, 197, 64]`", "`[1, 12, 197, 197]`"):
        assert shape in text, shape
    assert 'rearrange(x, "b t (h d) -> b h t d", h=12)' in text or "b t (h d) -> b h t d" in at.code[0].value
    assert any("b h i d, b h j d -> b h i j" in c.value for c in at.code)
    shown = titles(at)
    assert len(shown) == 6, shown
    for part in ("Click a patch", "where each head looks from query patch 105 (row 7, col 7)",
                 "Scores q·kᵀ/√d", "Attention = softmax(scores)", "attention of the CLS token",
                 "where the CLS token's attention goes"):
        assert any(part in t for t in shown), part
    # three sections are closed, and nothing of theirs is computed or sent until they are opened
    lazy = ("read as 12 heads x 64 dims", "Q, K and V", "Attention entropy per head", "Mean attention distance per head", "Token sizes before and after",
            "head's share")
    assert not any(part in t for t in shown for part in lazy), shown
    assert closed_sections(at) == ["attn:open_qkv", "attn:open_focus", "attn:open_projection"]
    # a page's figures stay well under the page budget at ViT-B/16
    assert payload_bytes(at) < PAGE_PAYLOAD_GUARD["attention"], payload_bytes(at)
    open_sections(at)  # what a click on each expander does
    opened = titles(at)
    assert len(opened) == 12, opened
    assert "Layer 0, head 0: Q, K and V, each [tokens 197, head_dim 64]" in title_with(at, "Q, K and V")
    for part in lazy:
        assert any(part in t for t in opened), part
    assert "12 heads" in page_text(at) and "rebuild attention_output to within" in page_text(at)
    for key in ("attn:open_qkv", "attn:open_focus", "attn:open_projection"):
        at.session_state[key] = False
    at.run()
    assert len(titles(at)) == 6
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
    ok(at)
    at.session_state["attn:open_qkv"] = True  # the section follows the pickers while it is open
    at.run()
    assert "Layer 5, head 3: Q, K and V" in title_with(at, "Q, K and V")
    at.select_slider(key="attn:head").set_value(4).run()
    assert at.session_state["attn:open_qkv"] and "Layer 5, head 4: Q, K and V" in title_with(at, "Q, K and V")
    at.select_slider(key="attn:head").set_value(3).run()
    assert "layer 5, head 3" in title_with(at, "Attention = softmax")
    at.number_input(key="attn:query_input").set_value(37).run()
    ok(at)
    assert "query patch 37 (row 2, col 9)" in title_with(at, "where each head looks")
    assert "query patch 37 (row 2, col 9)" in page_text(at)
    # the page's own choices survive a visit to another page
    at.switch_page("pages/overview.py").run()
    at.switch_page(PAGE).run()
    ok(at)
    assert at.select_slider(key="attn:layer").value == 5 and at.select_slider(key="attn:head").value == 3
    assert "query patch 37 (row 2, col 9)" in title_with(at, "where each head looks")
    at.toggle(key="attn:mean_heads").set_value(True).run()
    assert "mean of 12 heads" in title_with(at, "Attention = softmax")
    # attention colours are fitted to what each figure shows (said on the colour bar); 0..1 is an option
    for fragment in ("Attention = softmax", "where each head looks", "attention of the CLS token"):
        bar, zmax = _attention_scale(at, fragment)
        assert "fitted" in bar and 0 < zmax < 1, (fragment, bar, zmax)
    at.toggle(key="view:attn_fixed").set_value(True).run()
    ok(at)
    for fragment in ("Attention = softmax", "where each head looks", "attention of the CLS token"):
        assert _attention_scale(at, fragment) == ("weight<br>fixed 0–1" if "Attention" not in fragment
                                                  else "attention<br>fixed 0–1", 1.0), fragment
    at.switch_page("pages/layers.py").run()  # the choice follows the user to the other attention figures
    assert at.toggle(key="view:attn_fixed").value is True
    at.toggle(key="view:attn_fixed").set_value(False).run()
    at.switch_page(PAGE).run()


def test_sidebar_changes_reach_the_page(vit_b):
    at = vit_b
    # query 37 and layer 5 on the 14 x 14 grid; a coarser grid must clamp both sensibly
    ok(at.select_slider(key="attn:layer").set_value(5).run())
    ok(at.number_input(key="attn:query_input").set_value(37).run())
    assert "query patch 37 (row 2, col 9)" in title_with(at, "where each head looks")
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    ok(at)
    text = page_text(at)
    assert "`[1, 50, 768]`" in text and "`[1, 12, 50, 50]`" in text  # 49 patches + CLS
    # the query stays on the same spot of the picture: (row 2, col 9) of 14x14 is (row 1, col 4) of 7x7
    assert "query patch 11 (row 1, col 4)" in title_with(at, "where each head looks")
    at.sidebar.select_slider(key="w:num_layers").set_value(2).run()
    ok(at)
    assert at.select_slider(key="attn:layer").options == ["layer 0", "layer 1"]
    assert at.select_slider(key="attn:layer").value == 1  # layer 5 no longer exists: clamped
    at.sidebar.select_slider(key="w:image_size").set_value(64).run()  # 64 / 32: a 2x2 grid
    ok(at)
    assert "`[1, 5, 768]`" in page_text(at)
    assert "query patch 1 (row 0, col 1)" in title_with(at, "where each head looks")  # still upper right


def test_tiny_model_one_head_one_layer_uploaded_image():
    # the sizes the sidebar's sliders give (the MLP keeps its 3072), seeded: no ViT-B/16 trace of the upload first
    tiny = dict(image_size=32, patch_size=16, hidden_size=64, num_heads=1, num_layers=1, mlp_size=3072)
    at = small_session(tiny, upload=("photo.jpg", gradient_jpeg((90, 60), blue=90), "image/jpeg"), page=PAGE)
    assert at.session_state["image"][0] == "photo.jpg"  # the upload survived the page switch
    text = page_text(at)
    assert "`[1, 5, 64]`" in text and "`[1, 1, 5, 64]`" in text and "`[1, 1, 5, 5]`" in text
    assert "the only one" in text  # one layer, one head: no sliders to move
    assert len(at.get("select_slider")) == len(at.sidebar.select_slider)
    assert len(titles(at)) == 6
    open_sections(at)
    assert len(titles(at)) == 12
    assert "query patch 3 (row 1, col 1)" in title_with(at, "where each head looks")
    at.number_input(key="attn:query_input").set_value(0).run()
    ok(at)
    assert "query patch 0 (row 0, col 0)" in title_with(at, "where each head looks")
