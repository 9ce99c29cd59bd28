"""Every page runs on each new member of the ViT family (AppTest, a small random checkpoint on disk).

The checkpoints are written by transformers' save_pretrained, as the Hub serves them, and opened
with the sidebar's "local" model source: distilled DeiT (CLS + distillation token), DINOv2 (layer
scale, resized position embeddings) and DINOv2 with registers (CLS + 4 register tokens).
"""

from __future__ import annotations

import pytest
from PIL import Image

from app_helpers import figure_titled, ok, open_app, open_sections
from helpers import encode

transformers = pytest.importorskip("transformers")

PAGES = ["pages/overview.py", "pages/patching.py", "pages/embeddings.py", "pages/attention.py",
         "pages/mlp.py", "pages/layers.py", "pages/prediction.py"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def checkpoint(family, folder):
    if family == "distilled_deit":
        model = transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8, num_labels=3))
    elif family == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**SMALL, image_size=56, patch_size=14, mlp_ratio=2))
    else:
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **SMALL, image_size=56, patch_size=14, mlp_ratio=2, num_register_tokens=4))
    model.save_pretrained(folder)
    return folder


def png():
    return encode(Image.new("RGB", (64, 48), (200, 80, 30)), "PNG")


@pytest.mark.parametrize("family", ["distilled_deit", "dinov2", "dinov2_registers"])
def test_every_page_runs_on_the_family(tmp_path, family):
    folder = checkpoint(family, tmp_path / family)
    at = open_app("local", local_path=str(folder), upload=("p.png", png(), "image/png"))
    for page in PAGES:
        at.switch_page(page).run()
        open_sections(at, required=False)  # what the closed sections draw must work on the family too
        assert not at.exception, (page, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert not errors, (page, errors)


def test_register_tokens_are_shown_on_the_layer_and_attention_pages(tmp_path):
    folder = checkpoint("dinov2_registers", tmp_path / "reg")
    at = open_app("local", local_path=str(folder), page="pages/layers.py")
    assert any("4 **register tokens**" in i.value for i in at.info), [i.value for i in at.info]
    norms = figure_titled(at, "Token norms")
    assert "CLS, REG0 ... REG3" in norms["layout"]["meta"]["title"]
    assert any(trace.get("name") == "register token" for trace in norms["data"])
    ok(at.switch_page("pages/attention.py").run())
    where = figure_titled(at, "where the CLS token's attention goes")
    assert [trace["name"] for trace in where["data"]][:2] == ["CLS itself", "register tokens"]
    assert any("register tokens" in c.value and "dinov2-small" in c.value for c in at.caption)


@pytest.mark.parametrize("family", ["distilled_deit", "dinov2_registers"])
def test_the_sidebar_sliders_work_on_the_family(tmp_path, family):
    """Patch size, image size, heads and layers change a prefix-token model without breaking a page."""
    folder = checkpoint(family, tmp_path / family)
    at = open_app("local", local_path=str(folder), page="pages/attention.py")
    patch = 4 if family == "distilled_deit" else 7  # a new grid for either model
    for key, value in (("patch_size", patch), ("num_heads", 2), ("num_layers", 1)):
        at.sidebar.select_slider(key=f"w:{key}").set_value(value).run()
        assert not at.exception, (key, [e.value for e in at.exception])
        assert not at.error, (key, [e.value for e in at.error])
    at.switch_page("pages/layers.py").run()
    assert not at.exception and not at.error


@pytest.mark.parametrize("repo_id,words", [
    ("facebook/deit-tiny-patch16-224", ["preprocessor_config.json", "squashes it to 256 x 256"]),
    ("facebook/dinov2-with-registers-small", ["same as DINOv2's own evaluation", "88 MB"]),
])
def test_named_checkpoints_say_their_size_and_preprocessing_before_the_download(repo_id, words):
    at = open_app(f"hub:{repo_id}")  # offline in tests: the sidebar still says what it would fetch
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert all(w in captions for w in words), captions


def test_the_embeddings_page_names_the_extra_tokens(tmp_path):
    at = open_app("local", local_path=str(checkpoint("distilled_deit", tmp_path / "d")), page="pages/embeddings.py")
    assert any("distillation token" in i.value and "averaged" in i.value for i in at.info)
    at = open_app("local", local_path=str(checkpoint("dinov2_registers", tmp_path / "r")), page="pages/embeddings.py")
    assert any("4 **register tokens** (rows 1 to 4)" in i.value and "rows 5 to" in i.value for i in at.info)


def test_a_dinov2_trained_at_518_px_runs_at_its_224_px_crop_in_the_app(tmp_path):
    import json

    folder = tmp_path / "dinov2"
    transformers.Dinov2Model(transformers.Dinov2Config(**SMALL, image_size=518, patch_size=14, mlp_ratio=2)
                             ).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225]}))
    at = open_app("local", local_path=str(folder), upload=("p.png", png(), "image/png"), page="pages/embeddings.py")
    assert any("37x37 grid" in c.value and "16x16" in c.value for c in at.caption)
    assert "`[1, 257, 32]`" in " ".join(m.value for m in at.markdown)


def test_the_prediction_page_says_a_distilled_deit_averages_two_heads(tmp_path):
    at = open_sections(open_app("local", local_path=str(checkpoint("distilled_deit", tmp_path / "d")),
                                page="pages/prediction.py"))
    assert any("average of two heads" in c.value and "distillation_classifier" in c.value for c in at.caption)
