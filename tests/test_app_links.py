"""Links that reopen a view (AppTest): the view's state goes into the URL, a fresh session reads it back,
and hostile links open the app with the defaults, one notice and no exception."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, open_app

ATTENTION = "pages/attention.py"


def fresh(params: dict, page: str | None = None) -> AppTest:
    """A new session opened from a link with these query parameters, on ``page`` (its file) or the overview.

    AppTest can only switch to a page once app.py has listed them, so the session first opens plainly, then
    forgets it has read a link and goes to ``page`` with the link's parameters, as a first visit would."""
    at = AppTest.from_file(APP, default_timeout=240)
    if page is not None:
        at.run()
        at.session_state["_link_read"] = False
    for name, value in params.items():
        at.query_params[name] = value
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def notices(at: AppTest) -> str:
    return " ".join(i.value for i in at.info)


def test_the_url_holds_the_view_and_a_fresh_session_reopens_it():
    at = open_app("bundled:shapes", page=ATTENTION)
    at.sidebar.select_slider(key="w:num_layers").set_value(3).run()
    at.select_slider(key="attn:layer").set_value(2).run()
    at.select_slider(key="attn:head").set_value(1).run()
    at.session_state["attn:query"] = 9
    at.run()
    params = {k: at.query_params[k][0] if isinstance(at.query_params[k], list) else at.query_params[k]
              for k in at.query_params}
    assert params["model"] == "bundled:shapes" and params["layers"] == "3"
    assert params["attn_layer"] == "2" and params["attn_head"] == "1" and params["attn_query"] == "9"
    assert "picture" in params

    again = fresh(params, page=ATTENTION)
    assert again.sidebar.selectbox(key="w:model_choice").value == "bundled:shapes"
    assert again.sidebar.select_slider(key="w:num_layers").value == 3
    assert again.select_slider(key="attn:layer").value == 2
    assert again.select_slider(key="attn:head").value == 1
    assert again.session_state["attn:query"] == 9
    assert not again.error and "This link asked for" not in notices(again)


def test_an_upload_and_a_local_folder_stay_out_of_the_link():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buffer, format="PNG")
    at = open_app("random", upload=("mine.png", buffer.getvalue(), "image/png"))
    assert "picture" not in at.query_params  # the upload cannot travel
    with_note = " ".join(c.value for c in at.sidebar.caption)
    assert "A link cannot carry your upload" in with_note


HOSTILE = [
    {"image_size": "99999999999999999999"},
    {"attn_layer": "-1", "attn_head": "1.5"},
    {"attn_layer": "9999"},
    {"model": "local:/etc"},
    {"model": "local"},
    {"model": "hub:someone/any-model"},
    {"model": "session:abc-1"},
    {"picture": "../../../etc/passwd"},
    {"picture": "<script>alert(1)</script>"},
    {"layers": ["1", "2"]},
    {"patch_size": "x" * 10_000},
    {"fixed_scale": "maybe"},
    {"junk": "<img src=x onerror=alert(1)>", "another": "1"},
]


@pytest.mark.parametrize("params", HOSTILE, ids=lambda p: ",".join(p)[:30])
def test_hostile_links_open_the_app_with_defaults_and_at_most_one_notice(params):
    at = fresh(params, page=ATTENTION)  # the page the link opens says it once
    said = notices(at)
    assert not at.error, [e.value for e in at.error]
    at.run()  # and only once
    assert "This link asked for" not in notices(at)
    if set(params) <= {"junk", "another"}:
        assert "This link asked for" not in said  # unknown parameters are ignored
    else:
        assert said.count("This link asked for") == 1, said
    assert at.sidebar.selectbox(key="w:model_choice").value in ("bundled:vit-cifar10", "random")
    assert "junk" not in at.query_params  # the address bar now holds this view's link only


def test_every_figure_downloads_as_a_png_at_twice_its_size_named_after_page_figure_and_picture():
    import json

    at = open_app("bundled:shapes", page=ATTENTION)
    picture = at.session_state["image"][0].rsplit(".", 1)[0]
    charts = at.get("plotly_chart")
    assert charts
    for chart in charts:
        config = json.loads(chart.proto.config)
        options = config["toImageButtonOptions"]
        assert options["format"] == "png" and options["scale"] == 2
        name = options["filename"]
        assert name.startswith("self-attention_") and name.endswith("_" + picture.lower()), name
        assert all(c.isalnum() or c in "-_" for c in name), name
        assert config["modeBarButtons"] == [["toImage"]]


def test_download_this_page_writes_one_self_contained_html_file():
    from vit_explain.ui import keep

    at = open_app("bundled:shapes", page=ATTENTION)
    buttons = [b for b in at.get("download_button") if "keep" in b.proto.id]
    assert buttons, "no 'Download this page' button"
    record = at.session_state[keep.RECORD]
    assert record["page"] == ATTENTION
    figures = [i for i in record["items"] if i["kind"] == "figure"]
    assert len(figures) == len(at.get("plotly_chart"))
    text = keep.page_html(record["items"], page_title="3 · Self-attention", picture=("horse.png", np.zeros((8, 8, 3))),
                          settings=[("model", "bundled shapes")], link="http://localhost/attention?model=bundled%3Ashapes")
    assert text.count("<script>") == 2  # plotly.js once, then the script that draws the figures
    assert text.count("class='figure'") == len(figures)
    assert "http://" not in text.replace("http://localhost/attention", "").split("<script>")[0]
    assert "src='http" not in text and 'src="http' not in text  # nothing fetched from a network
    assert len(text.encode()) < 10e6
