"""The Lesson in a real browser, in presenter mode at 1024 x 768 (a projector), driven with the keyboard.

Switches presenter mode on (the sidebar closes, text is large), opens the Lesson, and walks every step with
the arrow keys and Page Down (what a presentation clicker sends); answers every question, some right and
some wrong (the right answers are computed here from the model, not read off the page), sees each reveal and
the score; plays the patches-to-tokens motion (drawn by the browser: nothing is sent to the server while it
plays, and nothing plays before the button is pressed); then chooses a second picture and asks a question
again, whose revealed answer is that picture's own. On every step, question and reveal: no figure text
overlaps, leaves its figure or is under 18 px, no page text is under 22 px or reaches outside the page.
A screenshot of every step is saved (``lesson-presenter-<n>-<step>.png`` in the screenshots folder).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from test_browser import (  # noqa: F401  (browser, server and shots_dir are fixtures)
    _no_exception, _go, _open, _screenshot, _wait_idle, browser, figure_text_problems, server, shots_dir,
)

pytestmark = pytest.mark.browser

#: Text on the page (outside figures and folded code) under 22 px, reaching outside the page, or cut short.
PAGE_TEXT_JS = r"""
() => {
  const problems = [];
  const main = document.querySelector('[data-testid="stMain"]');
  const frame = main.getBoundingClientRect();
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    problems.push(`the page scrolls sideways (${document.documentElement.scrollWidth} px)`);
  main.querySelectorAll('p, li, h1, h2, h3, label, summary, [data-testid="stCaptionContainer"]').forEach(el => {
    if (el.closest('.js-plotly-plot, [data-testid="stCode"], .katex, .st-key-lesson-clicker')) return;
    const box = el.getBoundingClientRect();
    if (box.width < 1 || box.height < 1) return;
    const words = (el.innerText || '').trim().slice(0, 50);
    if (!words) return;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < 21.5) problems.push(`"${words}" is ${size.toFixed(1)} px`);
    if (box.left < frame.left - 1 || box.right > frame.right + 1) problems.push(`"${words}" reaches outside the page`);
    if (el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).textOverflow === 'ellipsis')
      problems.push(`"${words}" is cut short`);
  });
  return problems;
}
"""

#: The smallest figure text drawn on the page, in CSS pixels (99 when there is none).
SMALLEST_FIGURE_TEXT_JS = r"""
() => {
  let smallest = [99, ''];
  document.querySelectorAll('.js-plotly-plot svg text').forEach(node => {
    if (node.closest('.hoverlayer')) return;
    const words = (node.textContent || '').trim();
    const box = node.getBoundingClientRect();
    if (!words || box.width < 0.5) return;
    const m = node.getScreenCTM();
    const size = parseFloat(getComputedStyle(node).fontSize) * (m ? Math.sqrt(m.a * m.a + m.b * m.b) : 1);
    if (size < smallest[0]) smallest = [size, words];
  });
  return smallest;
}
"""


def facts(picture: str) -> dict:
    """The right answers for the default model on a sample picture, computed here without the app."""
    from vit_explain import analysis, lesson
    from vit_explain.interventions import head_importance
    from vit_explain.pipeline import final_norm_and_head, run_core
    from vit_explain.preprocess import load_image, to_pixel_values
    from vit_explain.ui.pictures import SAMPLES_DIR
    from vit_explain.weights import load_checkpoint

    model = load_checkpoint("assets/models/vit-cifar10")
    x = to_pixel_values(load_image((SAMPLES_DIR / picture).read_bytes()), model.preprocess_spec)
    core = run_core(model, x)
    norm, head = final_norm_and_head(model)
    top1 = analysis.logit_lens(core["hidden_states"][:, :1, :], norm, head, top_k=1)["top_indices"][:, 0]
    drops = head_importance(model, x)
    cfg = model.config
    return {"tokens": cfg.grid_size ** 2 + cfg.num_prefix_tokens, "width": cfg.hidden_size,
            "pixels": cfg.num_channels * cfg.patch_size ** 2,
            "winner": cfg.id2label[int(np.argmax(core["logits"]))], "settled": lesson.settled_depth(top1),
            "layers": cfg.num_hidden_layers, "head": tuple(int(i) for i in np.unravel_index(np.argmax(drops), drops.shape)),
            "best": int(np.argmax(core["attentions"][-1][:, 0, 1:].mean(0)))}


def _title(page) -> str:
    return page.locator('[data-testid="stMain"] h2').first.inner_text().strip()


def _press(page, key: str) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # keys go to the page
    page.keyboard.press(key)
    _wait_idle(page)
    _no_exception(page, f"after {key}")


def _alerts(page) -> str:
    return "\n".join(page.locator('[data-testid="stMain"] [data-testid="stAlert"]').all_inner_texts())


def _check(page) -> None:
    page.get_by_role("button", name="Check my answer").click()
    _wait_idle(page)
    _no_exception(page, "after checking an answer")


def _pill(page, key: str, text: str) -> None:
    page.locator(f".st-key-{key} button").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$")).first.click()


def _sidebar_open(page, open_: bool) -> None:
    collapsed = page.locator('[data-testid="stSidebar"]').get_attribute("data-collapsed") == "true"
    if collapsed == open_:
        button = ('[data-testid="stExpandSidebarButton"]' if open_ else
                  '[data-testid="stSidebarCollapseButton"] button')
        page.locator(button).first.click()
        page.wait_for_timeout(600)


def _inspect(page, shots_dir: Path, name: str, problems: list[str]) -> None:
    _screenshot(page, shots_dir / f"lesson-presenter-{name}.png")
    problems += [f"{name}: {p}" for p in figure_text_problems(page)]
    problems += [f"{name}: {p}" for p in page.evaluate(PAGE_TEXT_JS)]
    size, words = page.evaluate(SMALLEST_FIGURE_TEXT_JS)
    if size < 17.5:
        problems.append(f"{name}: figure text \"{words}\" is {size:.1f} px")


def _answer(page, title: str, right: dict, log: list[str]) -> bool:
    """Answer the question of this step (some right, some wrong on purpose); returns whether it asked one."""
    if title.startswith("Cut into patches"):
        page.locator('.st-key-lesson-guess-tokens input').fill(str(right["tokens"]))  # right
        _check(page)
    elif title == "From pixels to a vector":
        _pill(page, "lesson-guess-width", f"{right['pixels']:,}")  # wrong: the pixel values, not the width
        _check(page)
    elif title.startswith("Where does the CLS token look"):
        chart = page.locator(".st-key-lesson-look_pick")
        chart.scroll_into_view_if_needed()
        drag = chart.locator(".nsewdrag").first
        box = drag.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.06, box["y"] + box["height"] * 0.94)  # a corner patch
        _wait_idle(page)
        _no_exception(page, "after clicking a patch")
    elif title == "Which class will win?":
        _pill(page, "lesson-guess-winner", right["winner"])  # right
        _check(page)
    elif title == "When does the answer appear?":
        _pill(page, "lesson-guess-lens", str((right["settled"] + 1) % (right["layers"] + 1)))  # wrong
        _check(page)
    elif title == "Which head matters most?":
        layer, head = right["head"]
        page.locator('.st-key-lesson-guess-head_layer input').fill(str(layer))  # right
        page.locator('.st-key-lesson-guess-head_head input').fill(str(head))
        _check(page)
    elif title == "Shuffle the patches":
        _pill(page, "lesson-guess-shuffle", "No, it stays the same")  # right
        _check(page)
    else:
        return False
    alerts = _alerts(page)
    verdict = "right" if "Right!" in alerts else "wrong" if "Not quite." in alerts else None
    assert verdict, f"{title}: no verdict after answering ({alerts!r})"
    log.append(verdict)
    return True


def _play_the_motion(page) -> None:
    """The patches-to-tokens figure waits for its button, then moves in the browser alone."""
    chart = page.locator(".st-key-lesson-tokens_motion .js-plotly-plot")
    chart.scroll_into_view_if_needed()
    cls_opacity = "el => el.data[el.data.length - 1].opacity"
    page.wait_for_timeout(1500)
    assert chart.evaluate(cls_opacity) == 0, "the motion started on its own"
    assert page.sent is not None, "the page's websocket is not being watched"
    before = len(page.sent)
    assert before > 0, "the key presses and the answer reached the server through the watched websocket"
    page.locator(".st-key-lesson-tokens_motion").get_by_text("▶ Play").click()
    page.wait_for_function(
        "() => { const el = document.querySelector('.st-key-lesson-tokens_motion .js-plotly-plot');"
        " return el && el.data[el.data.length - 1].opacity === 1; }", timeout=20_000)
    assert page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state") != "running"
    page.wait_for_timeout(500)
    assert len(page.sent) == before, "playing the motion sent messages to the server"


def test_the_lesson_in_presenter_mode_with_the_keyboard(server, browser, shots_dir):
    horse, cat = facts("horse.png"), facts("chelsea.jpg")
    assert horse["winner"] != cat["winner"]
    page = _open(browser, server, 1024, 768)
    problems, verdicts = [], []
    try:
        # watch what the browser sends to the server over Streamlit's websocket (opened again by a reload)
        page.sent = None

        def watch(socket) -> None:
            page.sent = []
            socket.on("framesent", lambda payload: page.sent.append(payload))

        page.on("websocket", watch)
        page.reload()
        _wait_idle(page)
        page.locator('.st-key-view-presenter').get_by_text("Presenter mode").click()  # the sidebar's toggle
        _wait_idle(page)
        page.wait_for_timeout(800)
        assert page.locator('[data-testid="stSidebar"]').get_attribute("data-collapsed") == "true"
        _sidebar_open(page, True)
        _go(page, "Lesson")
        page.wait_for_timeout(800)
        assert page.locator('[data-testid="stSidebar"]').get_attribute("data-collapsed") == "true", \
            "presenter mode: the sidebar closes after a page is chosen"
        assert "presenter=true" in page.url

        titles = []
        for n in range(20):
            title = _title(page)
            titles.append(title)
            slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]
            _inspect(page, shots_dir, f"{n + 1:02d}-{slug}", problems)
            if _answer(page, title, horse, verdicts):
                _inspect(page, shots_dir, f"{n + 1:02d}-{slug}-answer", problems)
                if title.startswith("Cut into patches"):
                    _play_the_motion(page)
                    _screenshot(page, shots_dir / "lesson-presenter-tokens-played.png")
            if title == "Your score":
                break
            _press(page, "PageDown" if n == 2 else "ArrowRight")  # a clicker's key once, the arrow otherwise
            assert _title(page) != title, f"the key did not leave {title!r}"
        assert len(titles) == 13, titles
        _press(page, "ArrowLeft")
        assert _title(page) == titles[-2]
        _press(page, "PageUp")
        assert _title(page) == titles[-3]
        _press(page, "ArrowRight")
        _press(page, "ArrowRight")

        body = page.locator('[data-testid="stMain"]').inner_text()
        right = verdicts.count("right")
        assert "right" in verdicts and "wrong" in verdicts and len(verdicts) == 7
        assert f"Your score: {right} of 7" in body, body[:400]

        # a second picture: the same question is asked again, and its revealed answer is that picture's own
        _sidebar_open(page, True)
        page.locator('[data-testid="stSidebar"] input[aria-label="Picture in use"]').click()
        page.wait_for_timeout(300)
        if not page.get_by_role("option").count():  # the click landed while the sidebar slid open
            page.keyboard.press("ArrowDown")
        page.get_by_role("option", name="chelsea.jpg", exact=True).click()
        _wait_idle(page)
        _no_exception(page, "after choosing another picture")
        _sidebar_open(page, False)
        for _ in range(6):
            if _title(page) == "Which class will win?":
                break
            _press(page, "ArrowLeft")
        assert _title(page) == "Which class will win?"
        assert page.get_by_role("button", name="Check my answer").count() == 1  # asked again on this picture
        _pill(page, "lesson-guess-winner", horse["winner"])  # the first picture's answer: wrong here
        _check(page)
        alerts = _alerts(page)
        assert "Not quite." in alerts and f"picks {cat['winner']}" in alerts, alerts
        _inspect(page, shots_dir, "second-picture-winner", problems)
        assert not problems, "\n".join(problems)
    finally:
        page.context.close()
