"""AppTest of the "6 · Pooler and prediction" page, with three kinds of model.

* random weights at the ViT-B/16 defaults (a classifier without pooler), with an uploaded photo;
* a small random classifier (32 px, 2x2 patches, 1 layer, 1 head), where occlusion sensitivity
  runs by itself and the numbers on the page can be checked against a softmax;
* a ViTModel with a pooler and no classifier, saved with save_checkpoint and loaded from a folder.
"""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_helpers import closed_sections, open_app, open_sections

from vit_explain import ViTConfig, ViTModel
from vit_explain.weights import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/prediction.py"


def decode(value):
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            shape = value["shape"]
            data = data.reshape([int(n) for n in shape.split(",")] if isinstance(shape, str) else shape)
        return data
    return np.asarray(value)


def charts(at) -> dict[str, dict]:
    """The page's Plotly figures by title."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["layout"]["meta"]["title"]] = spec
    return out


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def title_with(figs, start: str) -> dict:
    matches = [spec for title, spec in figs.items() if title.startswith(start)]
    assert matches, f"no figure titled {start!r} among {list(figs)}"
    return matches[0]


def photo_bytes() -> bytes:
    rng = np.random.default_rng(0)
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, 160, dtype=np.uint8)[None]
    image[30:90, 50:110] = (30, 200, 60)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


def small_random_app(**config) -> AppTest:
    """The app on random weights with a small architecture set before the first run (no ViT-B/16 trace)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    state = {"model_choice": "random", "image_size": 32, "patch_size": 16, "hidden_size": 32, "num_heads": 1,
             "num_layers": 1, "mlp_size": 64}
    state.update(config)
    at.session_state["_config_source"] = "random"  # the sidebar then keeps these values instead of the defaults
    for key, value in state.items():
        at.session_state[key] = value
        at.session_state[f"w:{key}"] = value
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return open_sections(at)


def test_vit_b16_random_classifier_with_uploaded_photo():
    at = open_app("random", upload=("photo.jpg", photo_bytes(), "image/jpeg"), page=PAGE)

    # the sidebar survived the page switch, and the image is the upload
    assert at.sidebar.selectbox(key="w:model_choice").value == "random"
    assert at.session_state["image"][0] == "photo.jpg"
    assert at.title[0].value == "6 · Pooler and prediction"

    text = markdown(at)
    assert "`[1, 197, 768]`" in text and "`[1, 768]`" in text and "`[1, 10]`" in text
    assert "no pooler" in " ".join(i.value for i in at.info)  # ViTForImageClassification drops it
    assert "This model has no pooler." in text

    # the logit lens and the side-by-side maps are closed sections: not computed, not sent, until opened
    assert closed_sections(at) == ["pred:open_lens", "pred:open_side"]
    assert not any(t.startswith(("Logit lens", "Three explanations")) for t in charts(at))
    open_sections(at)
    figs = charts(at)
    for start in ("The CLS token before and after", "Every token, before and after", "Top 5 logits",
                  "Top 5 after softmax", "Logit lens", "Click patches to hide them (0 hidden)",
                  "Probabilities: original vs", "Three explanations"):
        title_with(figs, start)
    assert not any(t.startswith("Pooler") for t in figs)
    # logit lens: 12 layers + the embeddings, on a 0..1 scale
    lens = title_with(figs, "Logit lens")["data"][0]
    assert len(lens["y"]) == 13 and lens["zmin"] == 0 and lens["zmax"] == 1
    # 196 forward passes are not run by themselves: a button offers them, two panels show meanwhile
    assert at.button(key="pred:sens_go").label == "Compute occlusion sensitivity (196 forward passes)"
    side = title_with(figs, "Three explanations")
    assert sum(t["type"] == "heatmap" for t in side["data"]) == 2
    # payload of the whole page, as Streamlit sends it
    assert sum(len(e.proto.spec) for e in at.get("plotly_chart")) < 2_000_000

    # hide the most-attended tenth of the patches: the mask, the title and the caption follow
    at.button(key="pred:mask_top").click().run()
    assert not at.exception
    assert len(at.session_state["pred:masked"]["patches"]) == 20
    assert "Click patches to hide them (20 hidden)" in charts(at)
    assert any("20 of 196 patches hidden" in c.value for c in at.caption)
    at.button(key="pred:clear").click().run()
    assert at.session_state["pred:masked"]["patches"] == []

    # the top-k picker reaches the bars
    at.slider(key="pred:k").set_value(3).run()
    assert not at.exception
    figs = charts(at)
    assert "Top 3 logits (raw scores from the classifier)" in figs
    assert len(title_with(figs, "Probabilities: original vs")["data"][0]["y"]) == 3

    # a slider change reaches the page: patch 32 at 224 -> 7x7 patches + CLS = 50 tokens
    at.button(key="pred:mask_top").click().run()
    at.sidebar.select_slider(key="w:patch_size").set_value(32).run()
    assert not at.exception, at.exception
    assert "`[1, 50, 768]`" in markdown(at)
    assert at.session_state["pred:masked"]["patches"] == []  # a new grid starts unmasked
    assert at.button(key="pred:sens_go").label == "Compute occlusion sensitivity (49 forward passes)"


def test_small_classifier_numbers_are_consistent():
    at = small_random_app()
    assert "`[1, 5, 32]`" in markdown(at)  # 2x2 patches + CLS, width 32
    at.slider(key="pred:k").set_value(10).run()
    figs = charts(at)

    # softmax of the shown logits (all 10 classes) gives the shown probabilities, in the same order
    logits = decode(title_with(figs, "Top 10 logits")["data"][0]["x"]).astype(np.float64)
    probs = decode(title_with(figs, "Top 10 after softmax")["data"][0]["x"]).astype(np.float64)
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(probs, expected / expected.sum(), atol=1e-5)
    assert np.all(np.diff(probs) <= 1e-7)  # most probable first

    # logit lens: the last row (after the last layer) is the model's own prediction
    lens = title_with(figs, "Logit lens")["data"][0]
    z = decode(lens["z"])
    assert z.shape == (2, 10)
    np.testing.assert_allclose(z[-1], probs, atol=1e-5)

    # small model: occlusion sensitivity computed at once, three maps on one colour scale
    side = title_with(figs, "Three explanations")
    heat = [t for t in side["data"] if t["type"] == "heatmap"]
    assert len(heat) == 3 and len({(t["zmin"], t["zmax"]) for t in heat}) == 1
    for t in heat:
        assert np.abs(decode(t["z"])).max() == pytest.approx(1.0, abs=1e-6)  # each divided by its max
    assert all(b.key != "pred:sens_go" for b in at.button)

    # hide patch 0 (as a click would): the 'after' bars now differ from the 'before' ones
    before_after = title_with(figs, "Probabilities: original vs")["data"]
    np.testing.assert_allclose(decode(before_after[0]["x"]), decode(before_after[1]["x"]), atol=1e-5)
    at.session_state["pred:masked"] = {"grid": (32, 16), "patches": [0]}
    at.run()
    assert not at.exception
    figs = charts(at)
    assert "Click patches to hide them (1 hidden)" in figs
    before_after = title_with(figs, "Probabilities: original vs")["data"]
    assert np.abs(decode(before_after[0]["x"]) - decode(before_after[1]["x"])).max() > 1e-4

    # a black fill is a different input from the mean grey one
    grey = decode(before_after[1]["x"])
    at.radio(key="pred:fill").set_value("black").run()
    assert not at.exception
    black = decode(title_with(charts(at), "Probabilities: original vs")["data"][1]["x"])
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

    text = markdown(at)
    assert "`[1, 17, 32]`" in text  # 4x4 patches + CLS
    assert "pooler: dense + tanh" in text and "[batch, num_labels]" not in text
    assert "with a pooler and no classifier" in " ".join(i.value for i in at.info)
    assert "This model has no classifier." in text

    figs = charts(at)
    tanh = title_with(figs, "Pooler: tanh")
    points = tanh["data"][1]  # [0] is the tanh curve itself
    x, y = decode(points["x"]).astype(np.float64), decode(points["y"]).astype(np.float64)
    assert x.size == 32
    np.testing.assert_allclose(y, np.tanh(x), atol=1e-5)  # pooler_output = tanh(dense(CLS))
    assert np.abs(x).max() > 1.5  # the curve's bend is visible in this test
    assert not any(t.startswith(("Top ", "Logit lens")) for t in figs)

    # occlusion without classes: the feature vector's similarity to the original
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["feature similarity to the original"] == "1.0000"
    at.session_state["pred:masked"] = {"grid": (32, 8), "patches": [5, 6]}
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["feature similarity to the original"]) < 0.9999
    side = title_with(charts(at), "Three explanations")
    assert sum(t["type"] == "heatmap" for t in side["data"]) == 3


def test_occlusion_sensitivity_behind_a_button_is_computed_once_and_kept():
    # 144 patches of a 128-wide, 6-layer model: above the "compute by itself" budget
    at = small_random_app(image_size=96, patch_size=8, hidden_size=128, num_heads=4, num_layers=6, mlp_size=256)
    button = at.button(key="pred:sens_go")
    assert button.label == "Compute occlusion sensitivity (144 forward passes)"
    assert sum(t["type"] == "heatmap" for t in title_with(charts(at), "Three explanations")["data"]) == 2
    button.click().run()
    assert not at.exception, at.exception
    assert sum(t["type"] == "heatmap" for t in title_with(charts(at), "Three explanations")["data"]) == 3
    assert any(c.value.startswith("Correlation between raw attention and occlusion sensitivity") for c in at.caption)
    # kept: another rerun shows the three maps without asking again
    at.slider(key="pred:k").set_value(2).run()
    assert all(b.key != "pred:sens_go" for b in at.button)
    assert sum(t["type"] == "heatmap" for t in title_with(charts(at), "Three explanations")["data"]) == 3


@pytest.mark.skipif(not (ROOT / "assets" / "models" / "shapes" / "config.json").is_file(), reason="the bundled model is not built yet")
def test_bundled_model():
    at = open_sections(open_app("bundled:shapes", page=PAGE))
    figs = charts(at)
    lens = title_with(figs, "Logit lens")["data"][0]
    assert decode(lens["z"]).shape[0] == at.session_state["w:num_layers"] + 1
    title_with(figs, "Three explanations")
    assert "no pooler" in " ".join(i.value for i in at.info)


@pytest.mark.skipif(not (ROOT / "assets" / "models" / "shapes" / "config.json").is_file(), reason="the bundled model is not built yet")
def test_bundled_model_says_when_the_patch_size_changes_its_grid():
    at = open_app("bundled:shapes")

    def grid_note():
        return [c.value for c in at.sidebar.caption if "trained on a grid of 8x8 patches" in c.value]

    assert not grid_note()  # as trained: 64 px, patch 8
    at.sidebar.select_slider(key="w:patch_size").set_value(16).run()  # 64 px / 16 = a 4x4 grid
    assert not at.exception
    note = grid_note()
    assert len(note) == 1 and "this one is 4x4" in note[0] and "8 x patch" in note[0], note
    at.sidebar.select_slider(key="w:image_size").set_value(128).run()  # 128 / 16: the 8x8 grid again
    assert at.sidebar.select_slider(key="w:patch_size").value == 16
    assert not at.exception and not grid_note()
