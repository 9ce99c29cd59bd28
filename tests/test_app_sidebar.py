"""The sidebar tells the truth about the picture in use, and problems are said on the page (AppTest).

A student uploads a photo, walks to another page, picks a sample, goes back to the upload, removes
it; a bad upload, an animated GIF and architecture settings over the memory limit each get a
message on the page itself, and the page keeps its content.
"""

from __future__ import annotations

import io

import numpy as np
from streamlit.testing.v1 import AppTest

from app_helpers import ok, sidebar_caption, small_session
from helpers import animated_gif, noise_png
from vit_explain import ui

SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_size": 64, "image_size": 64, "patch_size": 16}


def session(**arch) -> AppTest:
    """Random weights at a small architecture (``SMALL`` with ``arch``), never building ViT-B/16."""
    return small_session({**SMALL, **arch})


def picture_box(at: AppTest):
    return at.sidebar.selectbox(key="w:sample")


def caption(at: AppTest) -> str:
    shown = sidebar_caption(at)
    assert shown is not None, "the sidebar shows the picture in use"
    return shown


def in_use(at: AppTest) -> str:
    """What the sidebar's picture list shows as chosen (its label, as the user reads it)."""
    box = picture_box(at)
    return box.format_func(box.value)


def test_the_sidebar_says_which_picture_is_in_use_across_pages_and_switches_both_ways():
    at = session()
    first_sample = picture_box(at).value
    assert first_sample in ui.sample_names() and caption(at).endswith("sample picture")

    ok(at.sidebar.file_uploader[0].upload("flower.png", noise_png(1), "image/png").run())
    assert at.session_state["image"][0] == "flower.png"
    assert in_use(at) == "Your upload: flower.png"
    assert caption(at).startswith("flower.png, as the model sees it") and caption(at).endswith("your upload")

    for page in ("pages/attention.py", "pages/overview.py", "pages/layers.py"):
        ok(at.switch_page(page).run())
        # a page switch draws an empty upload box, but the sidebar still names the upload as the picture in use
        assert in_use(at) == "Your upload: flower.png", page
        assert caption(at).startswith("flower.png, as the model sees it"), page
        assert at.session_state["image"][0] == "flower.png", page

    # choosing a sample switches to it at once, even the one that was listed before the upload
    ok(picture_box(at).set_value(first_sample).run())
    assert at.session_state["image"][0] == first_sample
    assert caption(at).startswith(f"{first_sample}, as the model sees it")
    other = next(n for n in ui.sample_names() if n != first_sample)
    ok(picture_box(at).set_value(other).run())
    assert at.session_state["image"][0] == other
    ok(at.run())  # a plain rerun changes nothing
    assert in_use(at) == other
    ok(at.switch_page("pages/mlp.py").run())
    assert in_use(at) == other and caption(at).startswith(f"{other}, as the model sees it")

    # the upload stays in the list until it is removed: choosing it again switches back
    assert "Your upload: flower.png" in picture_box(at).options
    ok(picture_box(at).set_value(ui.UPLOAD).run())
    assert at.session_state["image"][0] == "flower.png"


def test_removing_the_upload_goes_back_to_the_sample_in_use_before():
    at = session()
    ok(picture_box(at).set_value("coffee.jpg").run())
    ok(at.sidebar.file_uploader[0].upload("flower.png", noise_png(2), "image/png").run())
    assert at.session_state["image"][0] == "flower.png"
    ok(at.sidebar.file_uploader[0].clear().run())
    assert at.session_state["image"][0] == "coffee.jpg"
    assert in_use(at) == "coffee.jpg" and caption(at).startswith("coffee.jpg, as the model sees it")
    assert not any(o.startswith("Your upload") for o in picture_box(at).options)


def test_a_rejected_upload_is_said_on_the_page_with_the_picture_shown_instead():
    at = session()
    ok(at.sidebar.file_uploader[0].upload("flower.png", noise_png(3), "image/png").run())
    ok(at.sidebar.file_uploader[0].upload("notes.pdf", b"%PDF-1.4 not a picture", "application/pdf").run())
    page_errors = [e.value for e in at.main.error]
    assert len(page_errors) == 1, page_errors
    assert "notes.pdf" in page_errors[0] and "could not be used" in page_errors[0]
    assert "flower.png (your upload)" in page_errors[0]  # which picture the page shows instead
    assert any("notes.pdf" in e.value for e in at.sidebar.error)
    assert at.title and caption(at).startswith("flower.png")  # the page itself is still there
    # on the next page the sidebar keeps the note, the page does not repeat it
    ok(at.switch_page("pages/attention.py").run())
    assert not at.main.error and any("notes.pdf" in e.value for e in at.sidebar.error)
    # choosing a picture clears it
    ok(picture_box(at).set_value("coffee.jpg").run())
    assert not at.sidebar.error


def test_an_animated_upload_says_which_frame_is_used():
    at = session()
    ok(at.sidebar.file_uploader[0].upload("spinner.gif", animated_gif(), "image/gif").run())
    notes = [i.value for i in at.main.info]
    assert any("spinner.gif" in n and "3 frames" in n and "first frame" in n for n in notes), notes
    assert any("first frame" in c.value for c in at.sidebar.caption)
    # the picture the model sees is the first frame (red)
    red = at.session_state["image"]
    assert red[0] == "spinner.gif"


def test_architecture_over_the_limit_keeps_the_page_and_says_reason_and_fix():
    at = session(num_layers=1, num_heads=1)
    ok(at.sidebar.select_slider(key="w:patch_size").set_value(2).run())  # 1025 tokens, 1 layer x 1 head: fine
    assert not at.error
    ok(at.sidebar.select_slider(key="w:num_heads").set_value(32).run())
    ok(at.sidebar.select_slider(key="w:num_layers").set_value(2).run())  # 2 x 32 maps of 1025^2: over the limit
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1, errors
    assert "cannot run" in errors[0] and "fewer layers (at most 1 here)" in errors[0]  # reason and fix
    assert "last settings that ran" in errors[0] and "1 layer x 32 heads" in errors[0]
    assert at.title and at.get("plotly_chart")  # the rest of the page is still there
    ok(at.sidebar.select_slider(key="w:num_layers").set_value(1).run())
    assert not at.error and at.title


def test_a_refused_replacement_keeps_the_previous_upload():
    """A browser that gets a new file on a full upload box first empties the box, then sends the new file:
    if the new file is refused, the previous upload stays in use (and the page says so)."""
    at = session()
    ok(at.sidebar.file_uploader[0].upload("photo.png", noise_png(4), "image/png").run())
    ok(at.sidebar.file_uploader[0].clear().run())  # the box emptied by the browser ...
    ok(at.sidebar.file_uploader[0].upload("essay.jpg", b"Dear teacher, my essay", "image/jpeg").run())  # ... refused
    assert at.session_state["image"][0] == "photo.png" and in_use(at) == "Your upload: photo.png"
    assert "**photo.png (your upload)** instead" in at.main.error[0].value


def test_the_trace_download_says_the_layer_numbering():
    from vit_explain import ViTConfig

    config = ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64)
    core = {"hidden_states": np.zeros((5, 5, 32), np.float32), "attentions": np.zeros((4, 2, 5, 5), np.float32)}
    run = ui.Run(image_name="x.png", key=ui.RunKey("0" * 64, "random", ui.config_key(config)), model=None,
                 config=config, trained=False, core=core, image=np.zeros((32, 32, 3), np.uint8))
    saved = np.load(io.BytesIO(run.npz_bytes()))
    readme = str(saved["README"])
    assert "Layer i is encoder.layer[i], counted from 0 to 3" in readme
    assert "hidden_states[0] is the embeddings" in readme and "hidden_states[i + 1] is the stream after layer i" in readme
    assert saved["hidden_states"].shape == (5, 5, 32)  # the arrays themselves are unchanged


def test_the_download_is_made_on_the_click_from_the_pictures_trace():
    """The download button gets a callable that holds the picture's bytes, not the trace (Streamlit keeps a
    download's callable for the session's life); called, it gives the same arrays as the forward pass."""
    import functools

    from vit_explain import ViTConfig
    from vit_explain.preprocess import image_digest

    config = ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    picture = noise_png(5)
    key = ui.RunKey(image_digest(picture), ui.RANDOM, ui.config_key(config))
    core = ui.core_trace(key, picture)
    run = ui.Run(image_name="p.png", key=key, model=None, config=config, trained=False,
                 core=core, image=np.zeros((32, 32, 3), np.uint8), picture_data=picture)
    clicked = ui.trace_download(run)
    assert isinstance(clicked, functools.partial) and not any(isinstance(a, dict) for a in clicked.args)  # no trace
    saved = np.load(io.BytesIO(clicked()))
    assert set(saved.files) == set(core) | {"README"}
    for name, array in core.items():
        np.testing.assert_array_equal(saved[name], array, err_msg=name)
    assert saved["attentions"].shape == (2, 2, 5, 5)
