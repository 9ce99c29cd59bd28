"""Starting the app in AppTest the way a user would: one helper instead of a set-up block per test."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def open_app(model: str = "random", *, upload: tuple[str, bytes, str] | None = None, local_path: str | None = None,
             page: str | None = None, timeout: float = 240, **sliders) -> AppTest:
    """A fresh session: choose ``model`` ("random", "bundled", "local" ...), type ``local_path`` if given,
    upload ``(name, bytes, mime)`` if given, move the sidebar sliders ``w:{key}`` in the order given
    (``hidden_size=32, num_heads=1`` ...), then open ``page``. Fails if any step raised."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.sidebar.selectbox(key="w:model_choice").set_value(model).run()
    if local_path is not None:
        at.sidebar.text_input(key="w:local_path").set_value(str(local_path)).run()
    if upload is not None:
        at.sidebar.file_uploader[0].upload(*upload).run()
    for key, value in sliders.items():
        at.sidebar.select_slider(key=f"w:{key}").set_value(value).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def closed_sections(at: AppTest) -> list[str]:
    """Keys of the page's closed lazy sections (``ui.lazy_section``: their contents are not computed yet)."""
    keys = []
    for expander in at.expander:
        key = expander.proto.id.split("-", 2)[-1] if expander.proto.id.startswith("$$ID-") else ""
        if ":open_" not in key:
            continue  # an ordinary expander (its contents are always there)
        if key in at.session_state and at.session_state[key]:
            continue  # open already
        keys.append(key)
    return keys


def open_sections(at: AppTest, *, required: bool = True) -> AppTest:
    """Open every closed lazy section of the current page, as a student's clicks would, and run
    (``required``: the page must have one)."""
    keys = closed_sections(at)
    assert keys or not required, "this page has no closed section to open"
    if not keys:
        return at
    for key in keys:
        at.session_state[key] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not closed_sections(at)
    return at
