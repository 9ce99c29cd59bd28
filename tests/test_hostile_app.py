"""Hostile input, end to end through the app (AppTest): every bad upload, bad checkpoint and extreme slider.

Each case goes through the running app the way a student would meet it: the bad thing arrives, a
plain message shows (an ``st.error``/``st.warning``, never an exception box), the overview and a
stage page still render, and the NEXT ordinary upload works (its name shows in the sidebar caption
"<name>, as the model sees it"). All fixtures are built here in memory with PIL/numpy.

To stay fast, one app session (random weights, a small architecture) receives the upload cases one
after another, like one stubborn student; the checkpoint cases use their own session with a tiny
local checkpoint as the "good" model.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from app_helpers import APP, ok, small_session
from app_helpers import sidebar_caption as caption
from helpers import CodeInPickle, animated_gif, encode, noise, png_claiming
from vit_explain import ViTConfig, ViTForImageClassification, ViTModel
from vit_explain.pipeline import MAX_TOKENS
from vit_explain.preprocess import MAX_BYTES
from vit_explain.synthetic import sample
from vit_explain.weights import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW, STAGE = "pages/overview.py", "pages/attention.py"
TIMEOUT = 240

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)

# The architecture the upload session runs at: small, so a case costs a fraction of a second.
SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_size": 64, "image_size": 64, "patch_size": 16}


# ------------------------------------------------------------------------------------------
# fixture builders
# ------------------------------------------------------------------------------------------


def good_png(seed: int, size: int = 96) -> bytes:
    """An ordinary picture (a synthetic shape on clutter), different for every seed."""
    images, _, _ = sample(1, seed, image_size=size)
    return encode(Image.fromarray(images[0]), "PNG")


def _jpeg() -> bytes:
    return encode(noise(320, 240), "JPEG", quality=90)


def _rgba() -> bytes:
    im = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    im.paste((255, 0, 0, 128), (24, 0, 48, 48))
    return encode(im, "PNG")


def _palette_with_transparency() -> bytes:
    im = Image.new("P", (48, 48), 0)
    im.putpalette(list(RED) + list(GREEN) + [0] * 762)
    im.paste(1, (0, 0, 24, 48))
    return encode(im, "PNG", transparency=1)


def _gray_16bit() -> bytes:
    values = np.tile(np.linspace(0, 65535, 48, dtype=np.uint16), (48, 1))
    return encode(Image.fromarray(values), "PNG")


def _float_tiff() -> bytes:
    values = np.tile(np.linspace(-3.0, 7.0, 48, dtype=np.float32), (48, 1))
    return encode(Image.fromarray(values), "TIFF")


def _cmyk_jpeg() -> bytes:
    im = Image.new("CMYK", (48, 48), (0, 255, 255, 0))
    im.paste((255, 255, 0, 0), (24, 0, 48, 48))
    return encode(im, "JPEG", quality=95)


def _huge_jpeg() -> bytes:
    """A 24-megapixel photo: decoded reduced, never at full size."""
    im = Image.new("RGB", (6000, 4000), (200, 30, 30))
    im.paste((20, 40, 220), (0, 0, 1500, 1000))
    return encode(im, "JPEG", quality=70)


def _exif_rotated() -> bytes:
    """Stored landscape with a red block top-left; EXIF orientation 6 turns it a quarter clockwise."""
    stored = Image.new("RGB", (128, 64), (0, 0, 0))
    stored.paste(RED, (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


# name -> (file name, bytes, mime, words the message must contain (any of), refused?)
_jpg = _jpeg()
UPLOADS = {
    "empty": ("empty.jpg", b"", "image/jpeg", ["empty"], True),
    "not-an-image": ("homework.txt", b"Dear teacher, here is my homework.\n" * 20, "text/plain", ["text"], True),
    "image-extension-html": (
        "cat.jpg", b"<!DOCTYPE html><html><head><title>cat</title></head><body>cat</body></html>", "image/jpeg",
        ["web page", "html"], True,
    ),
    "image-extension-pdf": ("scan.png", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "image/png", ["pdf"], True),
    "image-extension-random": ("noise.webp", np.random.default_rng(5).bytes(5000), "image/webp", ["not an image", "not a"], True),
    "truncated": ("cut.jpg", _jpg[: len(_jpg) // 2], "image/jpeg", ["incomplete"], True),
    "decompression-bomb": ("bomb.png", png_claiming(100_000, 100_000), "image/png", ["megapixels"], True),
    "over-the-byte-limit": ("huge.jpg", b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 1), "image/jpeg", ["limit"], True),
    "strip-1xN": ("strip.png", encode(Image.new("RGB", (1, 3000)), "PNG"), "image/png", ["thin"], True),
    "16-bit": ("gray16.png", _gray_16bit(), "image/png", [], False),
    "float": ("float.tiff", _float_tiff(), "image/tiff", [], False),
    "cmyk": ("print.jpg", _cmyk_jpeg(), "image/jpeg", [], False),
    "palette-transparency": ("palette.png", _palette_with_transparency(), "image/png", [], False),
    "alpha": ("alpha.png", _rgba(), "image/png", [], False),
    "animated": ("anim.gif", animated_gif((RED, BLUE, GREEN)), "image/gif", [], False),
    "huge-photo": ("camera.jpg", _huge_jpeg(), "image/jpeg", [], False),
    "exif-rotated": ("portrait.jpg", _exif_rotated(), "image/jpeg", [], False),
}


# ------------------------------------------------------------------------------------------
# app helpers
# ------------------------------------------------------------------------------------------


def messages(at: AppTest) -> list[str]:
    """Every error and warning text on screen (main area and sidebar)."""
    return [e.value for e in at.error] + [w.value for w in at.warning]


def visit(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    ok(at)
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str) -> AppTest:
    at.sidebar.file_uploader[0].set_value((name, data, mime)).run()
    ok(at)
    return at


def set_slider(at: AppTest, key: str, value) -> None:
    at.sidebar.select_slider(key=f"w:{key}").set_value(value).run()
    ok(at)
    assert at.sidebar.select_slider(key=f"w:{key}").value == value


def use_small_random_model(at: AppTest, arch: dict) -> None:
    """Random weights, then the architecture sliders in an order that never builds a big model twice."""
    at.sidebar.selectbox(key="w:model_choice").set_value("random").run()
    ok(at)
    for key in ("hidden_size", "num_layers", "num_heads", "mlp_size", "image_size", "patch_size"):
        set_slider(at, key, arch[key])


def assert_next_upload_works(at: AppTest, seed: int) -> None:
    """An ordinary picture uploaded after the bad input is used at once, on the stage page and the overview."""
    name = f"after-{seed}.png"
    upload(at, name, good_png(seed), "image/png")
    assert caption(at) is not None and caption(at).startswith(f"{name}, as the model sees it"), caption(at)
    assert not at.error
    visit(at, OVERVIEW)
    assert caption(at).startswith(f"{name}, as the model sees it")
    assert not at.error


@pytest.fixture(scope="module")
def app():
    # small_session seeds the first run through session state, so the default ViT-B/16 is never built; that
    # only saves time: if the sidebar ignored those values, the sliders below would still set the same ones
    at = small_session(SMALL, timeout=TIMEOUT)
    use_small_random_model(at, SMALL)
    visit(at, OVERVIEW)
    assert f"({SMALL['image_size']} x {SMALL['image_size']})" in caption(at)
    return at


@pytest.fixture
def media(monkeypatch):
    """The in-memory media store of the next AppTest run, to read back the pictures the app shows."""
    stores: list[MemoryMediaFileStorage] = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Recording)
    return stores


def shown_picture(at: AppTest, stores: list[MemoryMediaFileStorage]) -> np.ndarray:
    url = at.sidebar.get("image")[0].proto.imgs[0].url
    content = stores[-1].get_file(url.rsplit("/", 1)[-1]).content
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB")).astype(int)


# ------------------------------------------------------------------------------------------
# uploads
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(UPLOADS))
def test_bad_upload_then_next_upload_works(app, case):
    at = app
    name, data, mime, words, refused = UPLOADS[case]
    seed = list(UPLOADS).index(case)
    visit(at, OVERVIEW)
    before = caption(at)

    upload(at, name, data, mime)
    shown = [e.value for e in at.sidebar.error]
    if refused:
        assert len(shown) == 1, messages(at)
        # said on the page too, with the picture the page keeps showing instead
        on_page = [e.value for e in at.main.error]
        assert len(on_page) == 1 and name in on_page[0] and "instead" in on_page[0], on_page
        assert before.split(", as the model sees it")[0] in on_page[0]
        text = shown[0]
        assert name in text and any(w.lower() in text.lower() for w in words), text
        assert "Traceback" not in text and len(text) < 600
        assert caption(at) == before  # the previous picture stays in use
    else:
        assert not at.error, messages(at)
        assert caption(at).startswith(f"{name}, as the model sees it"), caption(at)

    visit(at, STAGE)
    assert at.title, "the stage page rendered nothing"
    if refused:
        assert [e.value for e in at.sidebar.error] == shown  # the message stays until a good upload
        assert caption(at) == before
    else:
        assert caption(at).startswith(f"{name}, as the model sees it")

    assert_next_upload_works(at, 1000 + seed)


def test_exif_rotation_reaches_the_model(app, media):
    at = app
    visit(at, OVERVIEW)
    name, data, mime, _, _ = UPLOADS["exif-rotated"]
    upload(at, name + "-again.jpg", data, mime)
    picture = shown_picture(at, media)
    s = SMALL["image_size"]
    assert picture.shape == (s, s, 3)
    # Turned a quarter clockwise, the stored top-left block sits at the top right.
    top_right = picture[: s // 8, -s // 8 :].mean(axis=(0, 1))
    top_left = picture[: s // 8, : s // 8].mean(axis=(0, 1))
    assert top_right[0] > 180 and top_right[1] < 80, top_right
    assert top_left.max() < 60, top_left


def test_sample_after_bad_upload_and_uploader_max_size(app):
    at = app
    visit(at, OVERVIEW)
    # The browser refuses files over server.maxUploadSize before sending them; the uploader
    # widget carries the configured limit to the browser.
    limit = at.sidebar.file_uploader[0].proto.max_upload_size_mb
    assert 0 < limit < 200
    upload(at, "broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")
    assert len(at.sidebar.error) == 1 and len(at.main.error) == 1
    names = [n for n in at.sidebar.selectbox(key="w:sample").options if not n.startswith("Your upload")]
    if len(names) > 1:
        other = next(n for n in names if n != at.sidebar.selectbox(key="w:sample").value)
        at.sidebar.selectbox(key="w:sample").set_value(other).run()
        ok(at)
        assert caption(at).startswith(f"{other}, as the model sees it")
    assert_next_upload_works(at, 77)


# ------------------------------------------------------------------------------------------
# the 200 MB upload: refused by Streamlit itself, configured in .streamlit/config.toml
# ------------------------------------------------------------------------------------------


def test_config_toml_limits_uploads_and_hides_error_details():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["maxUploadSize"] < 200
    assert settings["server"]["maxUploadSize"] * 1024 * 1024 <= MAX_BYTES  # Streamlit speaks first
    assert settings["client"]["showErrorDetails"] in ("none", "type", False)
    assert settings["browser"]["gatherUsageStats"] is False
    assert settings["server"].get("enableXsrfProtection", True) is True


def test_config_toml_is_what_streamlit_applies():
    """Streamlit started in the repository reads the file: every key is known and the values apply."""
    code = (
        "import json, tomllib\n"
        "from streamlit import config\n"
        "opts = config.get_config_options()\n"
        "data = tomllib.load(open('.streamlit/config.toml', 'rb'))\n"
        "keys = [f'{s}.{k}' for s, v in data.items() for k in v]\n"
        "print(json.dumps({'unknown': [k for k in keys if k not in opts],\n"
        "                  'where': {k: opts[k].where_defined for k in keys if k in opts},\n"
        "                  'values': {k: config.get_option(k) for k in keys if k in opts}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["unknown"] == []
    assert all(str(w).endswith("config.toml") for w in report["where"].values()), report["where"]
    values = report["values"]
    assert values["server.maxUploadSize"] < 200
    assert values["client.showErrorDetails"] == "none"
    assert values["browser.gatherUsageStats"] is False
    assert values["server.headless"] is True


# ------------------------------------------------------------------------------------------
# sliders at their extremes
# ------------------------------------------------------------------------------------------


def test_smallest_model_and_largest_token_count(app):
    at = app
    visit(at, OVERVIEW)
    smallest = {"hidden_size": 32, "num_layers": 1, "num_heads": 1, "mlp_size": 32, "image_size": 32, "patch_size": 16}
    for key in ("hidden_size", "num_heads", "num_layers", "mlp_size", "image_size", "patch_size"):
        set_slider(at, key, smallest[key])
    assert "(32 x 32)" in caption(at)
    tokens = [m for m in at.sidebar.metric if m.label == "Tokens"]
    assert tokens and tokens[0].value == "5"  # a 2 x 2 grid + CLS
    visit(at, STAGE)
    assert at.title and not at.error
    assert_next_upload_works(at, 501)

    # The largest image with the smallest patch the sidebar offers: exactly the token limit.
    set_slider(at, "image_size", 384)
    patches = at.sidebar.select_slider(key="w:patch_size").options
    smallest_patch = min(int(p) for p in patches)
    assert (384 // smallest_patch) ** 2 + 1 <= MAX_TOKENS
    set_slider(at, "patch_size", smallest_patch)
    tokens = [m for m in at.sidebar.metric if m.label == "Tokens"][0].value
    assert int(tokens.replace(",", "")) == (384 // smallest_patch) ** 2 + 1
    assert not at.error
    visit(at, STAGE)
    assert at.title and not at.error
    assert_next_upload_works(at, 502)

    # back to the small working size for the other tests of this session
    use_small_random_model(at, SMALL)


# ------------------------------------------------------------------------------------------
# checkpoints: a pickle with code in it, another architecture, a ViT without head
# ------------------------------------------------------------------------------------------


def _tiny_config(**changes) -> ViTConfig:
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=8, num_labels=3, id2label={0: "circle", 1: "square", 2: "star"})
    kwargs.update(changes)
    return ViTConfig(**kwargs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    marker = root / "CODE-RAN"

    good = root / "good"
    torch.manual_seed(0)
    save_checkpoint(ViTForImageClassification(_tiny_config()).eval(), good)

    headless = root / "no-head"
    save_checkpoint(ViTModel(_tiny_config(), add_pooling_layer=False).eval(), headless)

    evil_dir = root / "evil"
    evil_dir.mkdir()
    (evil_dir / "config.json").write_text(json.dumps(_tiny_config().to_dict()))
    state = {"embeddings.cls_token": torch.zeros(1, 1, 32), "payload": CodeInPickle(marker)}
    torch.save(state, evil_dir / "pytorch_model.bin")
    evil_file = root / "weights.pt"
    with open(evil_file, "wb") as fh:  # a plain pickle, not even torch's zip format
        pickle.dump({"weight": CodeInPickle(marker)}, fh)
    assert not marker.exists()

    bert = root / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32, "num_attention_heads": 2,
                    "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 100}))
    from safetensors.torch import save_file

    save_file({"embeddings.word_embeddings.weight": torch.zeros(100, 32),
               "encoder.layer.0.attention.self.query.weight": torch.zeros(32, 32),
               "pooler.dense.weight": torch.zeros(32, 32)}, str(bert / "model.safetensors"))

    mismatch = root / "mismatch"  # weights of one size, config.json of another
    save_checkpoint(ViTForImageClassification(_tiny_config()).eval(), mismatch)
    (mismatch / "config.json").write_text(json.dumps(_tiny_config(hidden_size=64, intermediate_size=128).to_dict()))

    return {"marker": marker, "good": good, "headless": headless, "evil_dir": evil_dir, "evil_file": evil_file,
            "bert": bert, "mismatch": mismatch, "missing": root / "does-not-exist"}


def choose_local(at: AppTest, path: Path) -> AppTest:
    at.sidebar.selectbox(key="w:model_choice").set_value("local").run()
    ok(at)
    at.sidebar.text_input(key="w:local_path").input(str(path)).run()
    ok(at)
    return at


BAD_CHECKPOINTS = {
    "pickle-with-code-in-a-folder": ("evil_dir", ["refused", "run code"]),
    "pickle-with-code-as-a-file": ("evil_file", ["refused", "not a readable"]),
    "another-architecture": ("bert", ["bert"]),
    "config-and-weights-disagree": ("mismatch", ["shape", "expected"]),
    "missing-folder": ("missing", ["neither", "no local folder", "not"]),
}


@pytest.fixture(scope="module")
def local_app(checkpoints):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["w:model_choice"] = "local"  # seeded: the first run never builds ViT-B/16
    at.session_state["w:local_path"] = str(checkpoints["good"])
    at.run()
    ok(at)
    choose_local(at, checkpoints["good"])
    assert not at.error, messages(at)
    assert "(32 x 32)" in caption(at)
    return at


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_then_good_one_works(local_app, checkpoints, case):
    at = local_app
    key, words = BAD_CHECKPOINTS[case]
    visit(at, OVERVIEW)
    at.sidebar.text_input(key="w:local_path").input(str(checkpoints[key])).run()
    ok(at)
    sidebar_errors = [e.value for e in at.sidebar.error]
    assert len(sidebar_errors) == 1, messages(at)
    text = sidebar_errors[0]
    assert any(w.lower() in text.lower() for w in words), text
    assert "Traceback" not in text
    assert [w.value for w in at.main.warning], "the page says why nothing is drawn"
    assert caption(at) is None  # nothing runs on a model that did not load
    visit(at, STAGE)
    assert [e.value for e in at.sidebar.error] == sidebar_errors
    assert not checkpoints["marker"].exists(), "code inside the pickle ran"

    # the next good checkpoint and the next upload work
    at.sidebar.text_input(key="w:local_path").input(str(checkpoints["good"])).run()
    ok(at)
    assert not at.error, messages(at)
    assert caption(at) is not None
    assert_next_upload_works(at, 300 + list(BAD_CHECKPOINTS).index(case))
    assert not checkpoints["marker"].exists()


def test_checkpoint_without_head_or_pooler_renders(local_app, checkpoints):
    at = local_app
    at.sidebar.text_input(key="w:local_path").input(str(checkpoints["headless"])).run()
    ok(at)
    assert not at.error, messages(at)
    visit(at, STAGE)
    visit(at, OVERVIEW)
    assert caption(at) is not None
    at.sidebar.text_input(key="w:local_path").input(str(checkpoints["good"])).run()
    ok(at)


# ------------------------------------------------------------------------------------------
# many students at once: what the load test found
# ------------------------------------------------------------------------------------------


def test_plotly_never_sees_a_half_imported_pandas():
    """Plotly reads ``sys.modules['pandas']`` without the import lock; Streamlit imports pandas lazily.

    When 20 sessions opened the app at once, a session building a figure while another imported
    pandas crashed ("partially initialized module 'pandas'"). Importing the app's UI module must
    therefore leave pandas fully imported before any page code runs.
    """
    code = "import sys, vit_explain.ui; m = sys.modules.get('pandas'); print(bool(m) and hasattr(m, 'Series'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_classroom_mode_offers_no_server_paths(checkpoints, monkeypatch):
    """VIT_EXPLAIN_CLASSROOM=1: no folder box, and a session state that still names a path loads nothing."""
    monkeypatch.setenv("VIT_EXPLAIN_CLASSROOM", "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["w:model_choice"] = "local"  # what an earlier, non-classroom run could have left
    at.session_state["w:local_path"] = str(checkpoints["good"])
    at.run()
    ok(at)
    choice = at.sidebar.selectbox(key="w:model_choice")  # .options are the labels the user reads
    assert choice.options and not any("folder" in label.lower() for label in choice.options), choice.options
    assert choice.value.startswith("bundled:")  # the stale choice fell back to the first offered one
    assert not [t for t in at.sidebar.text_input if t.key == "w:local_path"]
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown) + " ".join(str(m.help) for m in at.metric)
    assert "bundled" in shown and "model (assets/models/" in shown and str(Path(APP).resolve().parent) not in shown  # no server paths

    # the sidebar itself refuses a local source in classroom mode, even if asked directly
    from vit_explain import ui

    assert ui.load_base("local:" + str(checkpoints["good"])) is False

    monkeypatch.delenv("VIT_EXPLAIN_CLASSROOM")
    at.run()
    labels = at.sidebar.selectbox(key="w:model_choice").options
    assert "A checkpoint folder on this computer" in labels  # a personal install keeps it
