"""The Lesson page in AppTest: the default model, random weights and a model with registers (no classifier).

The right answers are computed here too, straight from the model and the picture, and the page must reveal
those: one question answered right, one wrong, the score, a second picture that asks again with its own
answer, presenter mode (figure text, folded shapes, kept across pages), links to a step, the keyboard.
"""

from __future__ import annotations

import numpy as np
import pytest

from app_helpers import APP, ok, open_app, small_session, specs
from vit_explain import analysis, lesson
from vit_explain.interventions import head_importance
from vit_explain.pipeline import final_norm_and_head, run_core
from vit_explain.preprocess import load_image, to_pixel_values
from vit_explain.ui.pictures import SAMPLES_DIR

LESSON = "pages/lesson.py"


def reveal_and_go_on(at) -> bool:
    """Ask for the answer if the step asks a question (it must be shown), then Next; False on the last step."""
    shown = [b for b in at.button if b.key and b.key.startswith("lesson:show:")]
    if shown:
        ok(shown[0].click().run())
        assert "The answer:" in said(at)
    if at.button(key="lesson:next").proto.disabled:
        return False
    ok(at.button(key="lesson:next").click().run())
    return True


def facts(picture: str) -> dict:
    """The right answers for the bundled CIFAR-10 model on a sample, computed here without the app."""
    from vit_explain.weights import load_checkpoint

    model = load_checkpoint("assets/models/vit-cifar10")
    x = to_pixel_values(load_image((SAMPLES_DIR / picture).read_bytes()), model.preprocess_spec)
    core = run_core(model, x)
    cfg = model.config
    norm, head = final_norm_and_head(model)
    top1 = analysis.logit_lens(core["hidden_states"][:, :1, :], norm, head, top_k=1)["top_indices"][:, 0]
    attention = core["attentions"][-1][:, 0, 1:].mean(0)
    drops = head_importance(model, x)
    return {"tokens": cfg.grid_size ** 2 + 1, "width": cfg.hidden_size, "best": int(np.argmax(attention)),
            "winner": cfg.id2label[int(np.argmax(core["logits"]))], "settled": lesson.settled_depth(top1),
            "head": np.unravel_index(int(np.argmax(drops)), drops.shape), "layers": cfg.num_hidden_layers}


def step_title(at) -> str:
    return at.header[0].value


def go_to(at, title: str, limit: int = 20):
    """Press Next until the step titled ``title`` (or Back, if it is behind)."""
    for _ in range(limit):
        if step_title(at) == title:
            return at
        ok(at.button(key="lesson:next").click().run())
    raise AssertionError(f"no step {title!r}; at {step_title(at)!r}")


def said(at) -> str:
    return " ".join([s.value for s in at.success] + [w.value for w in at.warning] + [i.value for i in at.info])


def check(at):
    return ok(at.form_submit_button[0].click().run())


@pytest.fixture(scope="module")
def horse():
    return facts("horse.png")


def test_the_lesson_asks_then_reveals_answers_computed_from_the_run(horse):
    at = open_app("bundled:vit-cifar10", page=LESSON)
    assert step_title(at) == "The picture the model sees" and "**Step 1 of 13**" in [m.value for m in at.markdown]
    # the keyboard: arrows on Back / Next, Page Up / Page Down (a presentation clicker) on two hidden twins
    keys = {k: at.button(key=f"lesson:{k}").proto.shortcut.lower() for k in ("next", "back", "page_down", "page_up")}
    assert keys == {"next": "right", "back": "left", "page_down": "pagedown", "page_up": "pageup"}
    ok(at.button(key="lesson:page_down").click().run())
    assert step_title(at) == "Cut into patches: how many tokens?"
    assert at.page_link[-1].proto.page.endswith("patching")  # "More on this" goes to the stage page

    at.number_input(key="lesson:guess:tokens").set_value(horse["tokens"])  # right
    check(at)
    assert "Right!" in said(at) and f"{horse['tokens']} tokens" in said(at)
    motion = specs(at)[0]
    assert motion["frames"] and motion["layout"]["updatemenus"][0]["buttons"][0]["args"][0] is None

    go_to(at, "From pixels to a vector")
    at.pills(key="lesson:guess:width").set_value(3 * 4 * 4)  # wrong: the pixel values, not the width
    check(at)
    assert "Not quite." in said(at) and f"{horse['width']} numbers" in said(at)

    go_to(at, "Where does the CLS token look at the end?")
    ok(at.form_submit_button[0].click().run())  # nothing typed: asked to guess first, nothing recorded
    assert "Choose or type your guess first" in said(at)
    at.number_input(key="lesson:guess:look").set_value(horse["best"])
    check(at)
    assert "Right!" in said(at) and f"patch {horse['best']}**" in said(at) and "comes **1 of 64**" in said(at)

    go_to(at, "Which class will win?")
    names = at.pills(key="lesson:guess:winner").options
    at.pills(key="lesson:guess:winner").set_value(names.index(horse["winner"]))
    check(at)
    assert "Right!" in said(at) and f"picks **{horse['winner']}**" in said(at)

    go_to(at, "When does the answer appear?")
    wrong = (horse["settled"] + 1) % (horse["layers"] + 1)
    at.pills(key="lesson:guess:lens").set_value(wrong)
    check(at)
    assert "Not quite." in said(at) and f"after **{horse['settled']} layer" in said(at)

    go_to(at, "Which head matters most?")
    layer, head = horse["head"]
    at.number_input(key="lesson:guess:head_layer").set_value(int(layer))
    at.number_input(key="lesson:guess:head_head").set_value(int(head))
    check(at)
    assert "Right!" in said(at) and f"head {head} of layer {layer}**" in said(at)

    go_to(at, "Shuffle the patches")
    at.pills(key="lesson:guess:shuffle").set_value("stays")
    check(at)
    assert "Right!" in said(at) and "leaves the answer as it was" in said(at)

    go_to(at, "Your score")
    text = " ".join(m.value for m in at.markdown)
    assert "Your score: 5 of 7" in text and "You answered 7 of the 7 questions" in text
    assert at.button(key="lesson:next").proto.disabled
    assert at.query_params["step"] in (["12"], "12")  # the address bar is a link to this step

    ok(at.button(key="lesson:back").click().run())  # an answered question stays answered on this picture
    assert step_title(at) == "Shuffle the patches" and "Right!" in said(at)


def test_another_picture_asks_again_and_reveals_its_own_answer(horse):
    cat = facts("chelsea.jpg")
    assert cat["winner"] != horse["winner"] and cat["best"] != horse["best"]  # what makes this a test
    at = open_app("bundled:vit-cifar10", page=LESSON)
    go_to(at, "Which class will win?")
    ok(at.button(key="lesson:show:winner").click().run())  # "Just show me"
    assert f"picks **{horse['winner']}**" in said(at)
    ok(at.sidebar.selectbox(key="w:sample").set_value("chelsea.jpg").run())
    assert step_title(at) == "Which class will win?" and at.pills(key="lesson:guess:winner")  # asked again
    ok(at.button(key="lesson:show:winner").click().run())
    assert f"picks **{cat['winner']}**" in said(at) and horse["winner"] not in said(at)
    ok(at.button(key="lesson:back").click().run())
    ok(at.button(key="lesson:back").click().run())
    ok(at.button(key="lesson:back").click().run())
    assert step_title(at) == "Where does the CLS token look at the end?"
    ok(at.button(key="lesson:show:look").click().run())
    assert f"patch {cat['best']}**" in said(at)
    legend = [t.get("name") for t in specs(at)[0]["data"] if t.get("name")]
    assert "most attended" in legend and "your click" not in legend  # the map, with no guess on it


def _fonts(spec: dict) -> list[float]:
    sizes = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("font", "tickfont", "textfont") and isinstance(value, dict) and "size" in value:
                    sizes.append(value["size"])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return sizes


def test_presenter_mode_is_kept_across_pages_and_sets_figures_for_a_projector():
    at = open_app("bundled:vit-cifar10", page=LESSON)
    ok(at.sidebar.toggle(key="view:presenter").set_value(True).run())
    go_to(at, "Cut into patches: how many tokens?")
    ok(at.button(key="lesson:show:tokens").click().run())
    for spec in specs(at):
        layout = spec["layout"]
        assert layout["font"]["size"] >= 18 and layout["xaxis"]["tickfont"]["size"] >= 18
        assert min(_fonts(spec)) >= 18, _fonts(spec)
    go_to(at, "From pixels to a vector")
    ok(at.button(key="lesson:show:width").click().run())
    assert any("shapes" in e.label for e in at.expander)  # the shape table is folded
    assert at.query_params["presenter"] in (["true"], "true")
    ok(at.switch_page("pages/attention.py").run())
    assert at.toggle(key="view:presenter").value is True
    assert all(s["layout"]["font"]["size"] >= 18 for s in specs(at))
    ok(at.sidebar.toggle(key="view:presenter").set_value(False).run())
    assert all(s["layout"]["font"]["size"] < 18 for s in specs(at))


def test_a_link_opens_the_lesson_at_its_step_and_a_wrong_step_says_so():
    from streamlit.testing.v1 import AppTest

    for value, title, notice in (("5", "Where does the CLS token look at the end?", False),
                                 ("999", "Your score", True)):
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.session_state["_link_read"] = False
        at.query_params["step"] = value
        at.query_params["presenter"] = "true"
        ok(at.switch_page(LESSON).run())
        assert step_title(at) == title
        assert at.toggle(key="view:presenter").value is True
        assert ("This link asked for" in " ".join(i.value for i in at.info)) == notice


def test_random_weights_every_step_and_every_reveal():
    at = small_session({"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_heads": 2, "num_layers": 2,
                        "mlp_size": 64}, page=LESSON)
    seen = []
    while True:
        seen.append(step_title(at))
        if not reveal_and_go_on(at):
            break
    assert len(seen) == 13 and seen[-1] == "Your score"
    text = " ".join(m.value for m in at.markdown)
    assert "Your score: 0 of 7" in text and "You answered 0 of the 7" in text
    assert "16 + 1" not in text  # the numbers come from the run, not the text
    ok(at.button(key="lesson:restart").click().run())
    assert step_title(at) == "The picture the model sees"


@pytest.mark.parametrize("family", ["dinov2_registers", "distilled_deit"])
def test_other_families_every_step(tmp_path, family):
    """DINOv2 with registers (CLS + 4 registers, no classifier: the class questions are left out, and why is
    said) and distilled DeiT (CLS + distillation token, two heads averaged): every step, every reveal."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / family
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    if family == "dinov2_registers":
        transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **small, image_size=56, patch_size=14, mlp_ratio=2, num_register_tokens=4)).save_pretrained(folder)
        steps, questions, prefix = 11, 5, 5
    else:
        transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
            **small, intermediate_size=48, image_size=32, patch_size=8, num_labels=3)).save_pretrained(folder)
        steps, questions, prefix = 13, 7, 2
    at = open_app("local", local_path=str(folder), page=LESSON)
    assert f"**Step 1 of {steps}**" in [m.value for m in at.markdown]
    assert ("no classifier" in said(at)) == (family == "dinov2_registers")
    titles = []
    while True:
        titles.append(step_title(at))
        if step_title(at) == "Cut into patches: how many tokens?":
            at.number_input(key="lesson:guess:tokens").set_value(16)  # the patches only: forgets the prefix
            check(at)
            assert "Not quite." in said(at) and f"**{16 + prefix} tokens**" in said(at)
        if not reveal_and_go_on(at):
            break
    assert len(titles) == steps and "Which head matters most?" in titles
    assert ("Which class will win?" in titles) == (family == "distilled_deit")
    assert f"Your score: 0 of {questions}" in " ".join(m.value for m in at.markdown)
    if family == "dinov2_registers":
        assert "no classifier" in " ".join(c.value for c in at.caption)


def test_a_lesson_step_downloads_with_the_students_answers():
    """The lesson keeps like the stage pages: the step's figures, and the answers given so far, in one HTML file."""
    from vit_explain.ui import keep

    at = open_app("bundled:vit-cifar10", page="pages/lesson.py")
    buttons = [b for b in at.get("download_button") if "keep" in b.proto.id]
    assert buttons, "no download on the lesson"
    record = at.session_state[keep.RECORD]
    assert record["page"] == "pages/lesson.py"
    text = keep.page_html([{"kind": "markdown", "text": "**Your score so far: 0 of 7** (0 answered)."}] + record["items"],
                          page_title="Lesson", picture=None, settings=[], link=None)
    assert "Your score so far" in text and text.count("class='figure'") == sum(i["kind"] == "figure" for i in record["items"])
