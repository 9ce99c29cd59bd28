"""What one student does in the app, step by step (used by Locust's users and by the reference runs).

A student (see :class:`Lesson`): opens the app, [chooses random ViT-B/16 weights], sets a patch size,
uploads their own picture, then goes round the pages again and again: on each stage page it moves
the first slider of the page and clicks a patch of the first clickable picture; on the Lesson page
it walks on from where it was, ``LESSON_STEPS_PER_VISIT`` steps a visit: on a question step it asks
for the answer ("Just show me", which computes the reveal), then presses Next; at the end it starts
the lesson again. It thinks between actions (``think`` seconds on average, 0.5x to 1.5x).
Every value it sets is an absolute one derived from the student's number and the page, so each
round after the first sees the same stage-page screens (the lesson moves on, so every step's name
says where the lesson is, and a step is compared only with the same screen alone): the single-user
reference runs two rounds. Each interaction is timed from the message
sent to the end of the script run (see ``st_client``) and fingerprinted.

This module does not import Locust (so the browser sessions' process can use ``picture``).
"""

from __future__ import annotations

import io
import random
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path[:0] = [str(HERE), str(ROOT)]

from st_client import StreamlitSession  # noqa: E402

DEFAULT_PAGES = ["lesson", "attention", "patching", "mlp", "layers", "prediction", ""]
LESSON_STEPS_PER_VISIT = 3
RANDOM_LABEL = "Random weights"


# ---------------------------------------------------------------------------------- who is who
def picture(index: int) -> tuple[str, bytes, str]:
    """Student ``index``'s own picture: a sample photo for the first ones, then synthetic shapes."""
    samples = sorted(p for p in (ROOT / "assets" / "samples").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if index < len(samples):
        path = samples[index]
        kind = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
        return f"s{index:02d}-{path.name}", path.read_bytes(), kind
    from PIL import Image

    from vit_explain.synthetic import sample

    images, _, _ = sample(1, 9000 + index, image_size=96)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    return f"s{index:02d}-shapes.png", buffer.getvalue(), "image/png"


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


@dataclass
class Record:
    """One interaction of one student."""

    student: int
    step: str  # "<round>:<n>:<what>": the same step of the same student has the same key alone and in a crowd
    kind: str  # open, model, patch, upload, page, slider, click
    seconds: float
    fingerprint: str
    session: str
    started: float  # epoch seconds
    error: str = ""


@dataclass
class Settings:
    """What the students do; load_test.py fills it in, Locust's command line uses the defaults."""

    model: str = "default"  # "default" (the app's first model) or "random-b16" (random ViT-B/16 weights)
    patch_sizes: str = "vary"  # "vary": students use the model's patch size and its neighbours; "fixed"
    pages: list[str] = field(default_factory=lambda: list(DEFAULT_PAGES))
    think: float = 5.0
    deadline: float = float("inf")  # no new interaction starts after this (epoch seconds)
    rounds: int = 0  # stop after this many rounds of the pages (0: until the deadline)
    timeout: float = 120.0
    records: list[Record] = field(default_factory=list)
    sessions: dict[int, dict] = field(default_factory=dict)  # student -> {"session": id, "upstreams": [...]}
    lock: threading.Lock = field(default_factory=threading.Lock)


class Lesson:
    """The steps of one student; ``think(seconds)`` is called between them (time.sleep, gevent.sleep...)."""

    def __init__(self, index: int, base_url: str, settings: Settings, think=None, on_record=None):
        self.index, self.settings = index, settings
        self.session = StreamlitSession(base_url, timeout=settings.timeout, name=f"student {index}")
        self.think = think or (lambda s: None)
        self.on_record = on_record
        self.rng = random.Random(index)
        self.n = 0
        self.lesson_step, self.lesson_pass = 0, 1  # where this student is in the Lesson page's walk

    def _do(self, round_: int, what: str, kind: str, action) -> None:
        self.n += 1
        if "lesson" in self.settings.pages:  # every page shows where the lesson is (the share link holds it)
            what += f" [lesson at {self.lesson_pass}.{self.lesson_step + 1}]"
        step = f"{min(round_, 2)}:{self.n if round_ == 0 else self._round_step}:{what}"
        self._round_step += 1
        started = time.time()
        try:
            result = action()
        except Exception as exc:  # recorded, then this student stops (its tab is broken)
            record = Record(self.index, step, kind, time.time() - started, "", self.session.session_id, started,
                            f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            self._record(record)
            raise
        error = "; ".join(result.exceptions)
        self._record(Record(self.index, step, kind, result.seconds, result.fingerprint, self.session.session_id,
                            started, f"{what}: {error}" if error else ""))

    def _record(self, record: Record) -> None:
        with self.settings.lock:
            self.settings.records.append(record)
        if self.on_record:
            self.on_record(record)

    def _pause(self) -> bool:
        """Think, then say whether there is time for another interaction."""
        if self.settings.think > 0:
            self.think(self.settings.think * self.rng.uniform(0.5, 1.5))
        return time.time() < self.settings.deadline

    def run(self) -> None:
        s, st = self.settings, self.session
        self._round_step = 0
        try:
            self._do(0, "open", "open", st.open)
            if s.model == "random-b16":
                weights = st.widget("w:model_choice")
                label = next(o for o in weights.options if o.startswith(RANDOM_LABEL))
                self._pause()
                self._do(0, "random weights", "model", lambda: st.set_widget("w:model_choice", label, kind="model"))
            if s.patch_sizes == "vary" and self.index % 4 in (1, 3):
                slider = st.widget("w:patch_size")
                now = slider.options.index(slider.current) if slider.current in slider.options else 0
                target = slider.options[max(0, min(len(slider.options) - 1, now + (1 if self.index % 4 == 1 else -1)))]
                self._pause()
                self._do(0, f"patch size {target}", "patch", lambda: st.set_widget("w:patch_size", target, kind="patch"))
            name, data, content_type = picture(self.index)
            self._pause()
            self._do(0, f"upload {name}", "upload", lambda: st.upload("upload", name, data, content_type))
            round_ = 0
            while s.rounds == 0 or round_ < s.rounds:
                round_ += 1
                self._round_step = 0
                for page in s.pages:
                    if not self._pause():
                        return
                    self._do(round_, f"page /{page}", "page", lambda: st.switch_page(page))
                    if page == "lesson":
                        if not self._walk_lesson(round_):
                            return
                        continue
                    slider = next((w for w in st.widgets.values() if w.root == 0 and w.kind == "slider"
                                   and not w.disabled), None)
                    if slider is not None:
                        value = self._slider_target(slider, page)
                        if not self._pause():
                            return
                        self._do(round_, f"slider {slider.label!r} on /{page} -> {value}", "slider",
                                 lambda: st.set_widget(_key(slider.id), value, kind="slider"))
                    chart = next((w for w in st.widgets.values() if w.root == 0 and w.clickable), None)
                    patches = int(str(st.metrics.get("Tokens", "2")).replace(",", "")) - 1
                    if chart is not None and patches > 0:
                        patch = _seed(self.index, page, "click") % patches
                        if not self._pause():
                            return
                        self._do(round_, f"click patch {patch} on /{page}", "click",
                                 lambda: st.click_patch(_key(chart.id), patch))
        finally:
            with s.lock:
                s.sessions[self.index] = {"session": st.session_id, "upstreams": sorted(st.upstreams)}
            st.close()

    def _walk_lesson(self, round_: int) -> bool:
        """A few steps of the Lesson page on from where this student was; False when the time is over.

        Every step's name carries the lesson's pass and step (see ``_do``), so a step under load is compared
        with the same screen alone.
        """
        st = self.session
        for _ in range(LESSON_STEPS_PER_VISIT):
            reveal = next((w for w in st.widgets.values() if w.kind == "button" and not w.disabled
                           and _key(w.id).startswith("lesson:show:")), None)
            if reveal is not None:
                if not self._pause():
                    return False
                self._do(round_, "reveal the answer (just show me)", "reveal", lambda: st.click(_key(reveal.id), kind="reveal"))
            keys = {_key(w.id): w for w in st.widgets.values() if w.kind == "button"}
            if not self._pause():
                return False
            if "lesson:next" in keys and not keys["lesson:next"].disabled:
                self._do(round_, "lesson next", "lesson", lambda: st.click("lesson:next", kind="lesson"))
                self.lesson_step += 1
            elif "lesson:restart" in keys:
                self._do(round_, "lesson start again", "lesson", lambda: st.click("lesson:restart", kind="lesson"))
                self.lesson_step, self.lesson_pass = 0, self.lesson_pass + 1
            else:
                raise RuntimeError("lesson: neither Next nor 'Start the lesson again' on the page")
        return True

    def _slider_target(self, slider, page: str):
        seed = _seed(self.index, page, "slider")
        if slider.options:
            return slider.options[seed % len(slider.options)]
        low, high, step = slider.range
        steps = int(round((high - low) / step)) if step else 0
        return low + (seed % (steps + 1)) * step


def _key(widget_id: str) -> str:
    parts = widget_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "$$ID" else widget_id
