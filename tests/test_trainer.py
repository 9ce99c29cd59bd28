"""The background trainer of the Training stage: it learns, keeps its caps, frees its slot, leaves no thread.

Time is the runs' injectable clock (:class:`FakeClock`), moved by the tests: nothing here sleeps.
Waits block on the run's own notifications (:meth:`TrainingRun.wait_until`) or on its thread.
"""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
import torch

from vit_explain import trainer
from vit_explain.synthetic import CLASS_NAMES, sample
from vit_explain.training import Pictures, default_config, images_to_pixel_values

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64)
WAIT = 60.0  # seconds a test waits for something that takes milliseconds, before it fails


def tiny_config(**changes):
    return default_config(**{**TINY, **changes})


class FakeClock:
    """A clock that moves only when told: the runs' ``clock`` and ``timer``, and their page activity's."""

    def __init__(self):
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class FixedData:
    """One fixed batch every step (so the loss must fall as the model memorises it); optional hooks.

    ``on_batch(step)`` runs in the worker as each step draws its pictures; ``fail_at`` makes that fail.
    """

    name = "shapes"

    def __init__(self, image_size=32, n=16, on_batch=None, fail_at=None):
        images, labels, _ = sample(n, seed=7, image_size=image_size)
        self.images, self.labels = images, labels
        self.x, self.y = images_to_pixel_values(images), torch.from_numpy(labels)
        self.classes = list(CLASS_NAMES)
        self.probe_image, self.probe_label = images[0], int(labels[0])
        self.on_batch, self.fail_at = on_batch, fail_at
        self.loaded = 0

    def load(self):
        self.loaded += 1

    def steps_per_epoch(self, batch_size):
        return None

    def pictures(self, step, config):
        if self.fail_at is not None and step >= self.fail_at:
            raise RuntimeError("the data went away")
        if self.on_batch is not None:
            self.on_batch(step)
        return Pictures(self.images, self.labels, np.random.default_rng(step))

    def held_out(self):
        return self.x, self.y


def make_run(data=None, pool=None, clock=None, max_snapshots=trainer.MAX_SNAPSHOTS, **settings):
    """A tiny run; on a :class:`FakeClock` (its own, unless given) for its clock, timer and page activity."""
    settings = trainer.TrainSettings(**{"max_steps": 30, "max_seconds": 120.0, "lr": 3e-3, "warmup": 3,
                                        "snapshot_every": 5, **settings})
    model = trainer.build_model(tiny_config(), CLASS_NAMES)
    clock = clock or FakeClock()
    run = trainer.TrainingRun(model, data or FixedData(), settings, pool=pool or trainer.SlotPool(1),
                              abandon_after_s=60.0, clock=clock, timer=clock, activity=trainer.PageActivity(clock),
                              max_snapshots=max_snapshots)
    run.fake_clock = clock
    return run


def steps_reach(run, step):
    assert run.wait_until(lambda s: s.step >= step, WAIT), run.status()
    return run.status()


def no_training_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("vit-explain-training-")]


@pytest.fixture(autouse=True)
def _no_thread_left_behind():
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("vit-explain-training-"):
            thread.join(10.0)
    assert no_training_threads(), [t.name for t in threading.enumerate()]


def test_a_run_lowers_the_loss_and_records_every_step():
    run = make_run(max_steps=40)
    run.start()
    run.join(60)
    status = run.status()
    assert status.state == "stopped" and status.reason == "steps" and status.step == 40
    assert status.steps == list(range(1, 41)) and len(status.train_loss) == 40
    assert np.mean(status.train_loss[-5:]) < 0.5 * np.mean(status.train_loss[:5]), status.train_loss
    first, last = status.snapshots[0], status.snapshots[-1]
    assert first.step == 0 and last.step == 40
    assert last.held_out_loss < 0.5 * first.held_out_loss and last.held_out_accuracy > first.held_out_accuracy
    assert not run.thread.is_alive()


def test_a_snapshot_holds_what_the_page_draws():
    run = make_run(max_steps=5)
    run.start()
    run.join(60)
    snap = run.status().snapshots[-1]
    cfg = run.model.config
    L, H, N, P = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_patches, cfg.patch_size
    assert snap.cls_attention.shape == (L, H, N) and snap.cls_attention.dtype == np.float32
    assert np.all(snap.cls_attention.sum(-1) <= 1.0 + 1e-5)  # the CLS row without its own entry
    assert snap.attention_distance.shape == (L, H) and np.all(snap.attention_distance > 0)
    assert snap.position_similarity.shape == (N, N)
    np.testing.assert_allclose(np.diag(snap.position_similarity.astype(np.float32)), 1.0, atol=1e-2)
    assert snap.filters.dtype == np.uint8 and snap.filters.shape[1:] == (3, P, P)
    assert len(snap.top5) == 5 and {label for label, _ in snap.top5} <= set(CLASS_NAMES)
    probs = [p for _, p in snap.top5]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    assert snap.nbytes() <= trainer.snapshot_bytes(cfg) + 64 * 5 + 64


def test_the_step_cap_and_the_time_cap_stop_a_run():
    run = make_run(max_steps=7)
    run.start()
    run.join(60)
    assert (run.status().reason, run.status().step) == ("steps", 7)
    run.start()  # nothing left to do: it stays stopped
    assert run.status().state == "stopped" and not run.status().can_resume

    clock = FakeClock()  # every step takes 0.15 s of this clock
    slow = make_run(data=FixedData(on_batch=lambda step: clock.advance(0.15)), clock=clock, max_steps=10_000,
                    max_seconds=0.6)
    slow.start()
    slow.join(60)
    status = slow.status()
    assert status.reason == "time", status
    assert status.seconds >= 0.6 and status.step < 10_000
    assert not status.can_resume


def test_stop_then_resume_continues_from_the_same_step():
    run = make_run(max_steps=10_000)
    run.start()
    steps_reach(run, 5)
    run.stop()
    status = run.status()
    assert status.state == "stopped" and status.reason == "stopped" and status.can_resume
    stopped_at = status.step
    assert not run.thread.is_alive()  # its thread has ended: nothing can move it on
    assert run.status().step == stopped_at  # really stopped
    run.resume()
    steps_reach(run, stopped_at + 5)
    run.stop()
    assert run.status().steps == list(range(1, run.status().step + 1))
    assert run.data.loaded == 1  # the data is read once per run


def test_runs_beyond_the_slot_limit_queue_with_their_place_and_get_the_slot_when_it_is_freed():
    pool = trainer.SlotPool(1)
    first = make_run(pool=pool, max_steps=10_000)
    second = make_run(pool=pool, max_steps=10_000)
    third = make_run(pool=pool, max_steps=10_000)
    first.start()
    assert first.wait_until(lambda s: s.state == "running", WAIT)
    second.start()
    third.start()
    assert second.status().queue_position == 1 and third.status().queue_position == 2  # in the queue at once
    assert second.status().step == 0 and pool.running == 1 and pool.waiting == 2
    first.stop()
    assert second.wait_until(lambda s: s.state == "running", WAIT)
    assert third.wait_until(lambda s: s.queue_position == 1, WAIT)
    third.stop()  # leaving the queue
    assert third.status().state == "stopped" and pool.waiting == 0
    second.stop()
    assert pool.running == 0 and pool.waiting == 0


def test_an_abandoned_run_stops_by_itself_and_frees_its_slot():
    pool = trainer.SlotPool(1)
    owner_there = [True]
    run = make_run(pool=pool, max_steps=100_000)
    run._alive = lambda: owner_there[0]
    run.abandon_after_s = 0.5
    run.start()
    steps_reach(run, 1)
    run.fake_clock.advance(1.5)  # three times the grace period: alive() keeps it going
    steps_reach(run, run.status().step + 2)  # (steps taken after that time)
    assert run.status().state == "running"
    owner_there[0] = False
    run.fake_clock.advance(1.0)
    run.join(30)
    status = run.status()
    assert status.state == "stopped" and status.reason == "abandoned", status
    assert pool.running == 0 and pool.waiting == 0


def test_a_queued_run_whose_owner_left_gives_up_its_place():
    pool = trainer.SlotPool(1)
    busy = make_run(pool=pool, max_steps=100_000)
    busy.start()
    assert busy.wait_until(lambda s: s.state == "running", WAIT)
    waiting = make_run(pool=pool)
    waiting.abandon_after_s = 0.3  # no alive() and no heartbeat: silent from the start
    waiting.start()
    waiting.fake_clock.advance(1.0)
    waiting.join(30)
    assert waiting.status().reason == "abandoned" and pool.waiting == 0 and waiting.status().step == 0
    busy.stop()


def test_heartbeats_keep_a_run_alive():
    run = make_run(max_steps=100_000)
    run.abandon_after_s = 0.4
    run.start()
    steps_reach(run, 1)
    for _ in range(10):  # a second of heartbeats, 0.1 s apart, with steps taken in between
        run.fake_clock.advance(0.1)
        run.heartbeat()
        steps_reach(run, run.status().step + 1)
    assert run.status().state == "running"
    run.fake_clock.advance(1.0)  # heartbeats stop: so does the run
    run.join(30)
    assert run.status().reason == "abandoned"


def test_a_failure_becomes_a_message_and_frees_the_slot(caplog):
    pool = trainer.SlotPool(1)
    run = make_run(data=FixedData(fail_at=3), pool=pool)
    run.start()
    run.join(60)
    status = run.status()
    assert status.state == "failed" and "the data went away" in status.message and status.step == 3
    assert pool.running == 0 and not status.can_resume
    assert any(r.exc_info and "the data went away" in str(r.exc_info[1]) for r in caplog.records)  # in the server's log


def test_snapshots_stay_bounded_and_evenly_spaced():
    seen = []
    data = FixedData()
    run = make_run(data=data, max_steps=50, snapshot_every=1, max_snapshots=6)
    data.on_batch = lambda step: seen.append(len(run.status().snapshots))  # at every step of the run
    run.start()
    run.join(60)
    steps = [s.step for s in run.status().snapshots]
    assert len(seen) == 50 and max(seen + [len(steps)]) <= 6
    assert steps[0] == 0 and steps[-1] == 50 and steps == sorted(set(steps))
    gaps = np.diff(steps[:-1])
    assert len(set(gaps.tolist())) == 1, steps  # even spacing (the last one is where the run stopped)
    assert run.snapshot_memory() <= 6 * (trainer.snapshot_bytes(run.model.config) + 64 * 5 + 64)


def test_the_worker_uses_one_torch_thread_and_leaves_the_others_alone():
    before = torch.get_num_threads()
    seen = {}
    data = FixedData(on_batch=lambda step: seen.setdefault("threads", torch.get_num_threads()))
    run = make_run(data=data, max_steps=3)
    run.start()
    run.join(60)
    assert seen["threads"] == 1
    assert torch.get_num_threads() == before
    later = {}  # Streamlit runs every script run in a new thread: those must not inherit the one thread
    thread = threading.Thread(target=lambda: later.setdefault("threads", torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later["threads"] == before


def test_build_model_checks_size_and_fits_the_head_to_the_data():
    with pytest.raises(ValueError, match="smaller hidden size"):
        trainer.build_model(tiny_config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=3072), CLASS_NAMES)
    with pytest.raises(ValueError, match="larger patch size"):
        trainer.check_trainable(tiny_config(image_size=128, patch_size=4))
    with pytest.raises(ValueError, match="smaller patch size"):
        trainer.check_trainable(tiny_config(image_size=128, patch_size=64))
    base = trainer.build_model(tiny_config(), CLASS_NAMES)
    ten = [f"c{i}" for i in range(10)]
    copy = trainer.build_model(tiny_config(), ten, base=base)
    assert copy.classifier.out_features == 10 and copy.config.id2label[9] == "c9"
    assert copy is not base and base.classifier.out_features == 8
    torch.testing.assert_close(copy.vit.embeddings.position_embeddings, base.vit.embeddings.position_embeddings)
    same = trainer.build_model(tiny_config(), CLASS_NAMES, base=base)
    torch.testing.assert_close(same.classifier.weight, base.classifier.weight)


def test_the_download_is_a_checkpoint_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    run = make_run(max_steps=5)
    run.start()
    run.join(60)
    model = run.trained_model()
    with zipfile.ZipFile(io.BytesIO(trainer.checkpoint_zip(model))) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    assert {"vit-trained/config.json", "vit-trained/model.safetensors", "vit-trained/preprocessor_config.json"} <= names
    theirs = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit-trained").eval()
    x = run.data.x[:4]
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, model(x).logits, atol=1e-5, rtol=1e-4)
    assert theirs.config.id2label[0] == CLASS_NAMES[0]


def test_shapes_data_is_fixed_by_its_seeds():
    a, b = trainer.ShapesData(32, held_out=16), trainer.ShapesData(32, held_out=16)
    a.load(), b.load()
    torch.testing.assert_close(a.held_out()[0], b.held_out()[0])
    np.testing.assert_array_equal(a.probe_image, b.probe_image)
    config = trainer.TrainSettings(batch_size=8, seed=0).train_config()
    p1, p2 = a.pictures(3, config), b.pictures(3, config)
    x1, x2 = images_to_pixel_values(p1.images), images_to_pixel_values(p2.images)
    torch.testing.assert_close(x1, x2)
    assert x1.shape == (8, 3, 32, 32) and p1.labels.dtype == np.int64
    assert not np.array_equal(a.pictures(4, config).images, p1.images)


def test_folder_data_reads_an_image_folder_and_checks_its_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = trainer.FolderData(str(tmp_path), 32, classes=["cat", "dog"], held_out=4)
    data.load()
    batch = data.pictures(0, trainer.TrainSettings(batch_size=5, seed=0).train_config())
    x, y = images_to_pixel_values(batch.images), batch.labels
    assert x.shape == (5, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    hx, hy = data.held_out()
    assert len(hy) == 4 and set(hy.tolist()) == {0, 1}  # spread over the class-sorted test split
    assert data.probe_image.shape == (32, 32, 3)
    wrong = trainer.FolderData(str(tmp_path), 32, classes=["airplane", "cat"])
    with pytest.raises(ValueError, match="not the expected"):
        wrong.load()


def test_default_slots_follow_the_environment(monkeypatch):
    monkeypatch.setenv("VIT_EXPLAIN_TRAINING_SLOTS", "3")
    assert trainer.default_slots() == 3
    monkeypatch.setenv("VIT_EXPLAIN_TRAINING_SLOTS", "nonsense")
    import os

    assert trainer.default_slots() == max(1, (os.cpu_count() or 1) - 1)


def test_runs_pause_while_pages_are_drawn_for_other_sessions():
    run = make_run(max_steps=100_000)
    run.start()
    steps_reach(run, 3)
    run.activity.page_run_started()
    assert run.wait_until(lambda s: run.giving_way, WAIT)  # the step in progress ends, then it waits
    before = run.status()
    for _ in range(10):  # pages keep being drawn for a second
        run.activity.page_run_started()
        run.fake_clock.advance(0.1)
    assert not run.wait_until(lambda s: s.step > before.step, 0.2)  # (a moment of real time to go wrong in)
    during = run.status()
    assert during.step - before.step <= 1, (before.step, during.step)
    assert during.seconds - before.seconds < 0.5  # pauses are not training time
    run.fake_clock.advance(trainer.GIVE_WAY_S)
    after = steps_reach(run, during.step + 5)  # then it goes on
    assert after.seconds - before.seconds < 0.5  # (the clock moved 1.5 s, all of it in the pause)
    run.stop()
