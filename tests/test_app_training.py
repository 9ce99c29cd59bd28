"""AppTest of the Training page: start a run, see it update, stop, scrub back, explore the trained model."""

from __future__ import annotations

import json

import pytest
from app_helpers import open_app


QUICK = dict(image_size=32, patch_size=8, hidden_size=32, num_heads=2, num_layers=1, mlp_size=64)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("meta", {}).get("title", "") for c in at.get("plotly_chart")]


def _wait_for_steps(at, steps: int, timeout: float = 120.0):
    """Block until the page's run has taken ``steps`` steps and kept two snapshots (woken by the run itself)."""
    run = at.session_state["train:run"]
    if not run.wait_until(lambda s: s.step >= steps and len(s.snapshots) >= 2, timeout):
        raise AssertionError(f"the run did not reach step {steps}: {run.status()}")
    return run.status()


@pytest.fixture
def page():
    at = _ok(open_app("random", page="pages/training.py", **QUICK))
    yield at
    run = at.session_state["train:run"] if "train:run" in at.session_state else None
    if run is not None:
        run.stop()


def test_the_page_before_a_run_states_its_limits(page):
    at = page
    assert at.title[0].value == "8 · Training"
    captions = "\n".join(c.value for c in at.caption)
    assert "at most" in captions and "steps" in captions and "one CPU thread" in captions
    assert at.button(key="train:start_button").disabled is False
    assert at.button(key="train:stop").disabled and at.button(key="train:resume").disabled
    assert [r.value for r in at.radio if r.key == "train:data"] == ["shapes"]
    assert not at.get("plotly_chart")  # nothing to draw yet


def test_start_update_stop_scrub_and_explore(page):
    at = page
    at.button(key="train:start_button").click().run()
    _ok(at)
    assert at.button(key="train:stop").disabled is False
    first = _wait_for_steps(at, 12)
    at.run()  # what the page's once-a-second fragment does
    _ok(at)
    titles = _titles(at)
    for expected in ("Training curves", "Where the CLS token looks", "Top-5 for the probe", "in every layer and head",
                     "Position-embedding similarity", "Patch-embedding filters", "How far the heads look"):
        assert any(expected in t for t in titles), (expected, titles)
    assert not any("Replay" in t for t in titles)  # the replay is for a finished run
    assert any("Training: step" in i.value for i in at.info)
    later = _wait_for_steps(at, first.step + 10)
    at.run()
    assert later.step > first.step
    newest = at.select_slider(key="train:snapshot").value
    assert newest >= first.snapshots[-1].step  # follows the newest snapshot while training

    at.button(key="train:stop").click().run()
    _ok(at)
    status = at.session_state["train:run"].status()
    assert status.state == "stopped" and status.reason == "stopped"
    assert any("Stopped at step" in s.value for s in at.success)
    # the stopped run replayed by the browser: one frame per snapshot kept
    replay = next(c for c in at.get("plotly_chart") if "Replay of the run" in json.dumps(json.loads(c.proto.spec)["layout"].get("meta", {})))
    frames = json.loads(replay.proto.spec)["frames"]
    assert [f["name"] for f in frames] == [f"step {s.step}" for s in status.snapshots]
    assert at.button(key="train:resume").disabled is False
    options = at.sidebar.selectbox(key="w:model_choice").options
    label = f"The model you trained (step {status.step:,})"
    assert label in options, options

    # scrub back to the first snapshot: every figure shows it
    at.select_slider(key="train:snapshot").set_value(0).run()
    _ok(at)
    assert at.toggle(key="train:follow").value is False
    titles = _titles(at)
    assert any(t == "Where the CLS token looks at step 0" for t in titles), titles
    assert any(t == "Position-embedding similarity, step 0" for t in titles), titles
    assert any(t == "Patch-embedding filters, step 0" for t in titles), titles

    # the trained model on another page
    at.button(key="train:explore").click().run()
    _ok(at)
    assert at.sidebar.selectbox(key="w:model_choice").value.startswith("session:")
    at.switch_page("pages/attention.py").run()
    _ok(at)
    assert at.sidebar.selectbox(key="w:model_choice").value.startswith("session:")
    assert at.title[0].value.startswith("3")


def test_resume_continues_the_same_run(page):
    at = page
    at.button(key="train:start_button").click().run()
    first = _wait_for_steps(at, 5)
    at.button(key="train:stop").click().run()
    stopped = at.session_state["train:run"].status().step
    assert stopped >= first.step
    at.button(key="train:resume").click().run()
    _ok(at)
    again = _wait_for_steps(at, stopped + 5)
    assert again.run_id == first.run_id and again.steps[:stopped] == list(range(1, stopped + 1))
    at.button(key="train:stop").click().run()
    assert at.session_state["train:run"].status().state == "stopped"


def test_a_run_waits_for_a_free_slot_and_shows_its_place(page):
    from test_trainer import make_run

    from vit_explain import trainer

    pool = trainer.server_pool()
    others = [make_run(pool=pool, max_steps=100_000) for _ in range(pool.slots)]
    try:
        for other in others:  # another session holds every slot of this server
            other.start()
        assert all(o.wait_until(lambda s: s.state == "running", 60.0) for o in others)
        at = page
        at.button(key="train:start_button").click().run()
        _ok(at)
        assert at.session_state["train:run"].status().state == "queued"
        assert any("place 1 in the queue" in w.value for w in at.warning), [w.value for w in at.warning]
        for other in others:
            other.stop()
        assert at.session_state["train:run"].wait_until(lambda s: s.state == "running", 60.0)
        at.run()
        assert any("Training: step" in i.value for i in at.info)
    finally:
        for other in others:
            other.stop()

