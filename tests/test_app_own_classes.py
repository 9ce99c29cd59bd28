"""AppTest of "your own classes" on the Training page: name three classes, upload their pictures, train, stop,
and find the model in the sidebar's weights list."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from app_helpers import open_app
from PIL import Image

COLOURS = {"tomato": (220, 40, 30), "leaf": (40, 170, 50), "sky": (60, 110, 230)}


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def png(colour, shade: int) -> bytes:
    buffer = io.BytesIO()
    r, g, b = colour
    picture = Image.new("RGB", (24, 24), (min(255, r + shade), min(255, g + shade), min(255, b + shade)))
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("meta", {}).get("title", "") for c in at.get("plotly_chart")]


@pytest.fixture
def page():
    at = _ok(open_app("random", page="pages/training.py", image_size=32, patch_size=8, hidden_size=32, num_heads=2,
                      num_layers=1, mlp_size=64))
    yield at
    if "train:run" in at.session_state:
        at.session_state["train:run"].stop()


def _own(at):
    at.radio(key="train:data").set_value("own").run()
    return _ok(at)


def test_three_classes_from_uploads_train_and_join_the_weights_list(page):
    at = _own(page)
    assert at.button(key="train:start_button").disabled  # no classes yet
    assert any("Limits:" in c.value and "per class" in c.value for c in at.caption)
    assert any("Why the CIFAR-10 start" in m.value for m in at.markdown)
    for i, (name, colour) in enumerate(COLOURS.items()):
        at.text_input(key=f"own:name:{i}").set_value(name).run()
        files = [(f"{name}-{k}.png", png(colour, 6 * k), "image/png") for k in range(6)]
        if i == 0:
            files.append(("notes.png", b"this is not a picture", "image/png"))
        at.file_uploader(key=f"own:files:{i}").set_value(files).run()
        _ok(at)
    assert any("6 pictures: 5 to train on, 1 held out" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("notes.png" in m.value and "refused" in m.value for m in at.markdown)
    start = at.button(key="train:start_button")
    assert start.disabled is False
    start.click().run()
    _ok(at)
    run = at.session_state["train:run"]
    assert run.data.classes == list(COLOURS)
    assert run.wait_until(lambda s: s.step >= 10 and len(s.snapshots) >= 2, 120), run.status()
    at.run()
    _ok(at)
    titles = _titles(at)
    for expected in ("Training curves", "Held-out confusion matrix", "Where the CLS token looks",
                     "Patch-embedding filters"):
        assert any(expected in t for t in titles), (expected, titles)
    at.button(key="train:stop").click().run()
    _ok(at)
    status = run.status()
    assert status.state == "stopped"
    label = f"The model you trained (step {status.step:,})"
    options = at.sidebar.selectbox(key="w:model_choice").options
    assert label in options, options
    at.button(key="train:explore").click().run()
    _ok(at)
    model = at.session_state["train:run"].trained_model()
    assert model.config.id2label == {0: "tomato", 1: "leaf", 2: "sky"}


def test_a_zip_fills_the_classes_and_its_hostile_members_are_named(page):
    at = _own(page)
    at.radio(key="own:how").set_value("zip").run()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, colour in COLOURS.items():
            for k in range(5):
                archive.writestr(f"mine/{name}/{k}.png", png(colour, 8 * k))
        archive.writestr("mine/../evil.png", png((0, 0, 0), 0))
        archive.writestr("mine/sky/inner.zip", b"PK")
    at.file_uploader(key="own:zip").set_value(("mine.zip", buffer.getvalue(), "application/zip")).run()
    _ok(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "**leaf**: 5 pictures" in text and "**sky**" in text and "**tomato**" in text
    assert "mine/../evil.png" in text and "mine/sky/inner.zip" in text
    assert at.button(key="train:start_button").disabled is False


def test_too_few_pictures_are_said_before_starting(page):
    at = _own(page)
    at.text_input(key="own:name:0").set_value("a").run()
    at.file_uploader(key="own:files:0").set_value([("a.png", png((200, 0, 0), 0), "image/png")]).run()
    _ok(at)
    assert at.button(key="train:start_button").disabled
    assert any("at least 5 pictures" in i.value for i in at.info), [i.value for i in at.info]


def jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_webcam_photos_join_the_chosen_class(page):
    at = _own(page)
    at.toggle(key="own:use_camera").set_value(True).run()
    _ok(at)
    at.radio(key="own:camera_class").set_value(1).run()
    for k in range(2):
        at.camera_input(key="own:camera").set_value(("photo.jpg", jpeg((10 * k, 200, 30)), "image/jpeg")).run()
        _ok(at)
    assert len(at.session_state["own:cam:1"]) == 2 and "own:cam:0" not in at.session_state
    assert any("Webcam photos so far" in c.value and "class 2 2" in c.value for c in at.caption)
    at.button(key="own:camera_clear").click().run()
    _ok(at)
    assert "own:cam:1" not in at.session_state


def test_the_caps_on_uploads_hold(page, monkeypatch):
    from vit_explain.picture_archive import PictureCaps
    from vit_explain.ui import own_classes as own_ui

    monkeypatch.setattr(own_ui, "CAPS", PictureCaps(max_per_class=6, max_total_bytes=60 * 2**20))
    at = _own(page)
    files = [(f"r{k}.png", png((200, 10, 10), k), "image/png") for k in range(8)]
    at.file_uploader(key="own:files:0").set_value(files).run()
    _ok(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "r6.png: left out, at most 6 pictures per class" in text and "r7.png" in text
    assert any(c.value.startswith("6 pictures") for c in at.caption)
    monkeypatch.setattr(own_ui, "CAPS", PictureCaps(max_total_bytes=3 * len(png((200, 10, 10), 0)) + 10))
    at.file_uploader(key="own:files:1").set_value(files[:1]).run()
    text = "\n".join(m.value for m in at.markdown)
    assert "in all" in text
