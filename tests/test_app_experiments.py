"""AppTest of the "7 · Experiments" page, and of the gradient relevance on the prediction page.

* the default model (the bundled CIFAR-10 ViT, horse.png): each guided experiment, with the numbers on the
  page checked against the interventions run directly on the same checkpoint and picture;
* DINOv2 with registers (no classifier, 4 register tokens) and distilled DeiT (two prefix tokens, two heads),
  saved by transformers and opened with the "local" source: every experiment runs;
* random ViT-B/16: the page's figures stay under the 2 MB budget, and the long measurements wait for a button.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app_helpers import APP, figure_titled, figures, markdown_text, ok, open_app, open_sections, page_text, payload_bytes
from helpers import plotly_array
from perf_budgets import PAGE_PAYLOAD_BYTES
from vit_explain import analysis
from vit_explain.experiments import intervened_answer, layer_sweep, shuffled_order
from vit_explain.interventions import Intervention, head_importance
from vit_explain.preprocess import load_image, to_pixel_values
from vit_explain.weights import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/experiments.py"
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def cifar():
    """The default model and picture, as the app runs them: (model, pixel_values [1, 3, 32, 32])."""
    model = load_checkpoint(ROOT / "assets" / "models" / "vit-cifar10")
    image = load_image((ROOT / "assets" / "samples" / "horse.png").read_bytes())
    return model, to_pixel_values(image, getattr(model, "preprocess_spec", None) or model.config)


def default_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert at.sidebar.selectbox(key="w:model_choice").value == "bundled:vit-cifar10"
    return ok(at.switch_page(PAGE).run())


def table_rows(at) -> dict[str, list[str]]:
    """The rows of the positions experiment's table, by run name."""
    table = next(m.value for m in at.markdown if m.value.startswith("| run |"))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {row[0]: row[1:] for row in rows}


def bars(at, fragment: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    data = figure_titled(at, fragment)["data"]
    return list(data[0]["y"]), plotly_array(data[0]["x"]).astype(np.float64), plotly_array(data[1]["x"]).astype(np.float64)


def test_default_model_positions_experiment(cifar):
    model, x = cifar
    at = default_app()
    assert at.title[0].value.startswith("7 · Experiments")
    assert at.radio(key="exp:which").value == "positions" and at.radio(key="exp:step").value == "remove"
    labels = model.config.id2label

    # the table: without positions, shuffling gives the same probabilities to the last shown decimal
    rows = table_rows(at)
    assert list(rows) == ["as it is", "no positions", "shuffled", "both"]
    assert rows["as it is"][0] == "horse"
    assert rows["no positions"][1] == rows["both"][1]
    assert rows["shuffled"][1] != rows["as it is"][1]
    p = analysis.softmax(intervened_answer(model, x, Intervention()))
    assert rows["as it is"][1] == f"{p[7]:.4%}"  # horse is class 7
    assert "Without positions, shuffling the patches leaves every probability where it was" in markdown_text(at)

    # step 1: the bars are the model's probabilities without and with the position embeddings
    names, before, after = bars(at, "Top 5 classes: as it is vs no positions")
    removed = analysis.softmax(intervened_answer(model, x, Intervention(positions="remove")))
    idx = [next(i for i, n in labels.items() if n == name) for name in names]
    np.testing.assert_allclose(before, p[idx], atol=1e-6)
    np.testing.assert_allclose(after, removed[idx], atol=1e-6)
    maps = figure_titled(at, "Where the CLS token looks: as it is and no positions")
    assert sum(t["type"] == "image" for t in maps["data"]) == 4

    # steps 2 and 3, and a new shuffle
    for step, words in (("shuffle", "Shuffling the patches (positions kept)"),
                        ("both", "Removing the positions and shuffling the patches")):
        at.radio(key="exp:step").set_value(step).run()
        ok(at)
        assert words in markdown_text(at)
        assert any("in another order" in c for c in [i.proto.imgs[0].caption for i in at.main.get("image")])
    order = shuffled_order(model.config.num_patches, 0)
    names, _, after = bars(at, "Top 5 classes: as it is vs no positions, shuffled")
    both = analysis.softmax(intervened_answer(model, x, Intervention(positions="remove", patch_order=order)))
    np.testing.assert_allclose(after, both[[next(i for i, n in labels.items() if n == name) for name in names]],
                               atol=1e-6)
    at.button(key="exp:reshuffle").click().run()
    ok(at)
    assert at.session_state["exp:seed"] == 1
    rows = table_rows(at)
    assert rows["no positions"][1] == rows["both"][1]


def test_default_model_heads_experiment(cifar):
    model, x = cifar
    at = default_app()
    at.radio(key="exp:which").set_value("heads").run()
    ok(at)
    # measured only when asked
    assert not any(t.startswith("Head importance") for t in figures(at))
    button = at.button(key="exp:heads_go")
    assert button.label == "Measure all 18 heads (6 batches of 3 runs)"
    button.click().run()
    ok(at)
    heat = figure_titled(at, "Head importance: drop of p(horse) without each head")
    z = plotly_array(heat["data"][0]["z"]).astype(np.float64)
    np.testing.assert_allclose(z, 100 * head_importance(model, x), atol=1e-3)
    assert heat["data"][1]["type"] == "scatter"  # the click layer over the cells
    assert all(b.key != "exp:heads_go" for b in at.button)  # kept: no second button

    # knock out head 2 of layer 3 (what a click on that cell does)
    at.select_slider(key="exp:layer").set_value(3).run()
    at.select_slider(key="exp:head").set_value(2).run()
    ok(at)
    figs = figures(at)
    assert "What head 2 of layer 3 looks at (as it is)" in figs
    names, before, after = bars(at, "Top 5 classes: as it is vs head 2 of layer 3 off")
    knocked = analysis.softmax(intervened_answer(model, x, Intervention(ablate_heads={3: [2]})))
    horse = names.index("horse")
    assert after[horse] == pytest.approx(knocked[7], abs=1e-6)
    assert "Knocking out head 2 of layer 3" in markdown_text(at)


def test_default_model_layers_experiment(cifar):
    model, x = cifar
    at = default_app()
    at.radio(key="exp:which").set_value("layers").run()
    at.select_slider(key="exp:skip_layer").set_value(2).run()
    at.radio(key="exp:skip_part").set_value("mlp").run()
    ok(at)
    assert "Skipping the MLP of layer 2" in markdown_text(at)
    sweep = figure_titled(at, "p(horse) with each layer skipped in turn")  # computed by itself on a small model
    want = layer_sweep(model, x)["score"]
    for row in range(3):
        np.testing.assert_allclose(plotly_array(sweep["data"][row]["y"]), want[row], atol=1e-6)
    lens = figure_titled(at, "Logit lens: p(horse) read after every layer")["data"]
    before, after = plotly_array(lens[0]["y"]), plotly_array(lens[1]["y"])
    assert len(before) == 7
    np.testing.assert_allclose(before[:3], after[:3], atol=1e-6)  # the same up to the skipped layer
    p = analysis.softmax(intervened_answer(model, x, Intervention(skip_mlp=[2])))
    assert after[-1] == pytest.approx(p[7], abs=1e-5)
    assert payload_bytes(at) < 300_000


@pytest.mark.parametrize("family", ["dinov2_registers", "distilled_deit"])
def test_every_experiment_runs_on_prefix_token_models(tmp_path, family):
    if family == "dinov2_registers":
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14, mlp_ratio=2,
            num_register_tokens=4))
    else:
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=32,
            patch_size=8, num_labels=3))
    model.save_pretrained(tmp_path / family)
    at = open_app("local", local_path=str(tmp_path / family), page=PAGE)
    classifier = family == "distilled_deit"
    rows = table_rows(at)
    assert rows["no positions"][-1] == rows["both"][-1]  # the same answer without positions, shuffled or not
    for step in ("shuffle", "both"):
        ok(at.radio(key="exp:step").set_value(step).run())
    at.radio(key="exp:which").set_value("heads").run()
    at.button(key="exp:heads_go").click().run()
    ok(at)
    figure_titled(at, "Head importance: drop of " + ("p(" if classifier else "similarity"))
    at.select_slider(key="exp:layer").set_value(1).run()
    ok(at.select_slider(key="exp:head").set_value(3).run())
    at.radio(key="exp:which").set_value("layers").run()
    ok(at.radio(key="exp:skip_part").set_value("attention").run())
    figure_titled(at, "with each layer skipped in turn")
    assert not at.error, [e.value for e in at.error]
    text = page_text(at)
    if classifier:
        assert "Logit lens" in " ".join(figures(at))
    else:
        assert "feature similarity to the original" in [m.label for m in at.metric]
        assert "The logit lens needs a classifier" in text


def test_vit_b16_stays_within_the_payload_budget_and_asks_before_long_runs():
    """Random ViT-B/16: every state of the page under 2 MB; head importance, the layer sweep and (on the
    prediction page) the relevance wait for a button."""
    at = open_app("random", page=PAGE)
    sizes = [payload_bytes(at)]
    assert "random weights" in " ".join(i.value for i in at.info)
    at.radio(key="exp:which").set_value("heads").run()
    ok(at)
    assert at.button(key="exp:heads_go").label == "Measure all 144 heads (12 batches of 12 runs)"
    sizes.append(payload_bytes(at))
    at.radio(key="exp:which").set_value("layers").run()
    ok(at)
    assert at.button(key="exp:sweep_go").label == "Skip every layer in turn (36 runs)"
    sizes.append(payload_bytes(at))
    assert max(sizes) < PAGE_PAYLOAD_BYTES, sizes

    # on the prediction page the relevance of a ViT-B/16 (forward and backward) waits for a button, then stays
    at.switch_page("pages/prediction.py").run()
    open_sections(ok(at))
    assert not any(t.startswith("Rollout and gradient relevance") for t in figures(at))
    at.button(key="pred:relevance_go").click().run()
    ok(at)
    assert all(b.key != "pred:relevance_go" for b in at.button)
    relevance = figure_titled(at, "Rollout and gradient relevance of the same prediction")
    assert plotly_array([t for t in relevance["data"] if t["type"] == "heatmap"][1]["z"]).shape == (14, 14)
    assert payload_bytes(at) < PAGE_PAYLOAD_BYTES


# ------------------------------------------------------------------------------------------ the prediction page
def test_prediction_page_shows_gradient_relevance_beside_rollout(cifar):
    model, x = cifar
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/prediction.py").run()
    open_sections(ok(at))
    fig = figure_titled(at, "Rollout and gradient relevance of the same prediction")
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 2
    want = analysis.normalise_map(analysis.attention_relevance(model, x))
    np.testing.assert_allclose(plotly_array(heat[1]["z"]), want, atol=1e-5)
    assert "Chefer, Gur and Wolf 2021" in markdown_text(at)
    assert any(c.value.startswith("Correlation between rollout and relevance") for c in at.caption)
    # the three-map figure above is as it was
    side = figure_titled(at, "Three explanations", prefix=True)
    assert sum(t["type"] == "heatmap" for t in side["data"]) == 3
