"""AppTest of the "6 · Pooler and prediction" page, with three kinds of model.

* random weights at the ViT-B/16 defaults (a classifier without pooler), with an uploaded photo;
* a small random classifier (32 px, 2x2 patches, 1 layer, 1 head), where occlusion sensitivity
  runs by itself and the numbers on the page can be checked against a softmax;
* a ViTModel with a pooler and no classifier, saved with save_checkpoint and loaded from a folder.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_helpers import (closed_sections, figure_titled, figures, markdown_text, ok, open_app, open_sections,
                         payload_bytes, small_session)
from helpers import encode, plotly_array
from perf_budgets import PAGE_PAYLOAD_GUARD
from vit_explain import ViTConfig, ViTModel
from vit_explain.weights import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/prediction.py"


def photo_bytes() -> bytes:
    rng = np.random.default_rng(0)
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, 160, dtype=np.uint8)[None]
    image[30:90, 50:110] = (30, 200, 60)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(image), "JPEG")


def small_random_app(**config) -> AppTest:
    """The app on random weights with a small architecture set before the first run (no ViT-B/16 trace)."""
    arch = {"model_choice": "random", "image_size": 32, "patch_size": 16, "hidden_size": 32, "num_heads": 1,
            "num_layers": 1, "mlp_size": 64, **config}
    return open_sections(small_session(arch, page=PAGE, timeout=180))


def test_vit_b16_random_classifier_with_uploaded_photo():
    at = open_app("random", upload=("photo.jpg", photo_bytes(), "image/jpeg"), page=PAGE)

    # the sidebar survived the page switch, and the image is the upload
    assert at.sidebar.selectbox(key="w:model_choice").value == "random"
    assert at.session_state["image"][0] == "photo.jpg"
    assert at.title[0].value == "6 · Pooler and prediction"

    text = markdown_text(at)
    assert "`[1, 197, 768]`" in text and "`[1, 768]`" in text and "`[1, 10]`" in text
    assert "no pooler" in " ".join(i.value for i in at.info)  # ViTForImageClassification drops it
    assert "This model has no pooler." in text

    # the logit lens and the side-by-side maps are closed sections: not computed, not sent, until opened
    assert closed_sections(at) == ["pred:open_lens", "pred:open_side"]
    assert not any(t.startswith(("Logit lens", "Three explanations")) for t in figures(at))
    open_sections(at)
    figs = figures(at)
    for start in ("The CLS token before and after", "Every token, before and after", "Top 5 logits",
                  "Top 5 after softmax", "Logit lens", "Click patches to hide them (0 hidden)",
                  "Probabilities: original vs", "Three explanations"):
        figure_titled(figs, start, prefix=True)
    assert not any(t.startswith("Pooler") for t in figs)
    # logit lens: 12 layers + the embeddings, on a 0..1 scale
    lens = figure_titled(figs, "Logit lens", prefix=True)["data"][0]
    assert len(lens["y"]) == 13 and lens["zmin"] == 0 and lens["zmax"] == 1
    # 196 forward passes are not run by themselves: a button offers them, two panels show meanwhile
    assert at.button(key="pred:sens_go").label == "Compute occlusion sensitivity (196 forward passes)"
    side = figure_titled(figs, "Three explanations", prefix=True)
    assert sum(t["type"] == "heatmap" for t in side["data"]) == 2
    # payload of the whole page, as Streamlit sends it
    assert payload_bytes(at) < PAGE_PAYLOAD_GUARD["prediction"], payload_bytes(at)

    # hide the most-attended tenth of the patches: the mask, the title and the caption follow
    at.button(key="pred:mask_top").click().run()
    ok(at)
    assert len(at.session_state["pred:masked"]["patches"]) == 20
    assert "Click patches to hide them (20 hidden)" in figures(at)
    assert any("20 of 196 patches hidden" in c.value for c in at.caption)
    at.button(key="pred:clear").click().run()
    assert at.session_state["pred:masked"]["patches"] == []

    # the top-k picker reaches the bars
    at.slider(key="pred:k").set_value(3).run()
    ok(at)
    figs = figures(at)
    assert "Top 3 logits (raw scores from the classifier)" in figs
    assert len(figure_titled(figs, "Probabilities: original vs", prefix=True)["data"][0]["y"]) == 3

    # a slider change reaches the page: patch 32 at 224 -> 7x7 patches + CLS = 50 tokens
    at.button(key="pred:mask_top").click().run()
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    ok(at)
    assert "`[1, 50, 768]`" in markdown_text(at)
    assert at.session_state["pred:masked"]["patches"] == []  # a new grid starts unmasked
    assert at.button(key="pred:sens_go").label == "Compute occlusion sensitivity (49 forward passes)"


def test_small_classifier_numbers_are_consistent():
    at = small_random_app()
    assert "`[1, 5, 32]`" in markdown_text(at)  # 2x2 patches + CLS, width 32
    at.slider(key="pred:k").set_value(10).run()
    figs = figures(at)

    # softmax of the shown logits (all 10 classes) gives the shown probabilities, in the same order
    logits = plotly_array(figure_titled(figs, "Top 10 logits", prefix=True)["data"][0]["x"]).astype(np.float64)
    probs = plotly_array(figure_titled(figs, "Top 10 after softmax", prefix=True)["data"][0]["x"]).astype(np.float64)
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(probs, expected / expected.sum(), atol=1e-5)
    assert np.all(np.diff(probs) <= 1e-7)  # most probable first

    # logit lens: the last row (after the last layer) is the model's own prediction
    lens = figure_titled(figs, "Logit lens", prefix=True)["data"][0]
    z = plotly_array(lens["z"])
    assert z.shape == (2, 10)
    np.testing.assert_allclose(z[-1], probs, atol=1e-5)

    # small model: occlusion sensitivity computed at once, three maps on one colour scale
    side = figure_titled(figs, "Three explanations", prefix=True)
    heat = [t for t in side["data"] if t["type"] == "heatmap"]
    assert len(heat) == 3 and len({(t["zmin"], t["zmax"]) for t in heat}) == 1
    for t in heat:
        assert np.abs(plotly_array(t["z"])).max() == pytest.approx(1.0, abs=1e-6)  # each divided by its max
    assert all(b.key != "pred:sens_go" for b in at.button)

    # hide patch 0 (as a click would): the 'after' bars now differ from the 'before' ones
    before_after = figure_titled(figs, "Probabilities: original vs", prefix=True)["data"]
    np.testing.assert_allclose(plotly_array(before_after[0]["x"]), plotly_array(before_after[1]["x"]), atol=1e-5)
    at.session_state["pred:masked"] = {"grid": (32, 16), "patches": [0]}
    at.run()
    ok(at)
    figs = figures(at)
    assert "Click patches to hide them (1 hidden)" in figs
    before_after = figure_titled(figs, "Probabilities: original vs", prefix=True)["data"]
    assert np.abs(plotly_array(before_after[0]["x"]) - plotly_array(before_after[1]["x"])).max() > 1e-4

    # a black fill is a different input from the mean grey one
    grey = plotly_array(before_after[1]["x"])
    at.radio(key="pred:fill").set_value("black").run()
    ok(at)
    black = plotly_array(figure_titled(at, "Probabilities: original vs", prefix=True)["data"][1]["x"])
    assert np.abs(grey - black).max() > 1e-5


def test_vit_model_with_pooler_from_a_local_folder(tmp_path):
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                       intermediate_size=64, num_labels=0)
    model = ViTModel(config, add_pooling_layer=True)
    model.init_weights(seed=3)
    with __import__("torch").no_grad():  # a pooler whose tanh is not all in its linear middle
        model.pooler.dense.weight.mul_(40)
    save_checkpoint(model, tmp_path / "vit-with-pooler")

    at = open_sections(open_app("local", local_path=tmp_path / "vit-with-pooler", page=PAGE))
    assert at.sidebar.text_input(key="w:local_path").value == str(tmp_path / "vit-with-pooler")

    text = markdown_text(at)
    assert "`[1, 17, 32]`" in text  # 4x4 patches + CLS
    assert "pooler: dense + tanh" in text and "[batch, num_labels]" not in text
    assert "with a pooler and no classifier" in " ".join(i.value for i in at.info)
    assert "This model has no classifier." in text

    figs = figures(at)
    tanh = figure_titled(figs, "Pooler: tanh", prefix=True)
    points = tanh["data"][1]  # [0] is the tanh curve itself
    x, y = plotly_array(points["x"]).astype(np.float64), plotly_array(points["y"]).astype(np.float64)
    assert x.size == 32
    np.testing.assert_allclose(y, np.tanh(x), atol=1e-5)  # pooler_output = tanh(dense(CLS))
    assert np.abs(x).max() > 1.5  # the curve's bend is visible in this test
    assert not any(t.startswith(("Top ", "Logit lens")) for t in figs)

    # occlusion without classes: the feature vector's similarity to the original
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["feature similarity to the original"] == "1.0000"
    at.session_state["pred:masked"] = {"grid": (32, 8), "patches": [5, 6]}
    at.run()
    ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["feature similarity to the original"]) < 0.9999
    side = figure_titled(at, "Three explanations", prefix=True)
    assert sum(t["type"] == "heatmap" for t in side["data"]) == 3


def test_occlusion_sensitivity_behind_a_button_is_computed_once_and_kept():
    # 144 patches of a 128-wide, 6-layer model: above the "compute by itself" budget
    at = small_random_app(image_size=96, patch_size=8, hidden_size=128, num_heads=4, num_layers=6, mlp_size=256)
    button = at.button(key="pred:sens_go")
    assert button.label == "Compute occlusion sensitivity (144 forward passes)"
    assert sum(t["type"] == "heatmap" for t in figure_titled(at, "Three explanations", prefix=True)["data"]) == 2
    button.click().run()
    ok(at)
    assert sum(t["type"] == "heatmap" for t in figure_titled(at, "Three explanations", prefix=True)["data"]) == 3
    assert any(c.value.startswith("Correlation between raw attention and occlusion sensitivity") for c in at.caption)
    # kept: another rerun shows the three maps without asking again
    at.slider(key="pred:k").set_value(2).run()
    assert all(b.key != "pred:sens_go" for b in at.button)
    assert sum(t["type"] == "heatmap" for t in figure_titled(at, "Three explanations", prefix=True)["data"]) == 3


@pytest.mark.skipif(not (ROOT / "assets" / "models" / "shapes" / "config.json").is_file(), reason="the bundled model is not built yet")
def test_bundled_model():
    at = open_sections(open_app("bundled:shapes", page=PAGE))
    figs = figures(at)
    lens = figure_titled(figs, "Logit lens", prefix=True)["data"][0]
    assert plotly_array(lens["z"]).shape[0] == at.session_state["w:num_layers"] + 1
    figure_titled(figs, "Three explanations", prefix=True)
    assert "no pooler" in " ".join(i.value for i in at.info)


@pytest.mark.skipif(not (ROOT / "assets" / "models" / "shapes" / "config.json").is_file(), reason="the bundled model is not built yet")
def test_bundled_model_says_when_the_patch_size_changes_its_grid():
    at = open_app("bundled:shapes")

    def grid_note():
        return [c.value for c in at.sidebar.caption if "trained on a grid of 8x8 patches" in c.value]

    assert not grid_note()  # as trained: 64 px, patch 8
    at.sidebar.select_slider(key="w:patch_size").set_value(16).run()  # 64 px / 16 = a 4x4 grid
    ok(at)
    note = grid_note()
    assert len(note) == 1 and "this one is 4x4" in note[0] and "8 x patch" in note[0], note
    at.sidebar.select_slider(key="w:image_size").set_value(128).run()  # 128 / 16: the 8x8 grid again
    assert at.sidebar.select_slider(key="w:patch_size").value == 16
    assert not at.exception and not grid_note()
