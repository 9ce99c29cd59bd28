"""The Training stage's two promises, measured: what a student gets in two minutes, and that a run
does not slow the other sessions beyond the budgets.

    python benchmarks/training.py two-minutes        # the page's defaults, from random weights, 120 s
    python benchmarks/training.py two-minutes --cpu  # 120 s of the run's own CPU time (on a busy machine)
    python benchmarks/training.py concurrency        # another session's page reruns, without and with a run
    python benchmarks/training.py concurrency --process   # ... and with the same training in another process

``two-minutes`` trains exactly what the page trains after "Use the two-minute settings" and "Start
a new run" (same model, data, settings and trainer: :class:`vit_explain.trainer.TrainingRun`) for
120 s of wall-clock time, and prints the held-out accuracy over time and how much the views the
page draws changed between step 0 and the end:

* position similarity: mean cosine similarity of the position embeddings of neighbouring patches
  minus that of patches at least 3 apart (0 for random vectors; positive once the grid is learned);
* the CLS token's attention in the last layer (mean over heads) on the probe picture: the share that
  lands on the patches overlapping the object (even attention gives the object's share of the
  patches), and the largest weight as a multiple of even attention.

``concurrency`` times another session's page reruns in AppTest as benchmarks/budgets.py does
(random ViT-B/16 at 224; the self-attention page: a layer/head picker change with the trace cached,
and the first page after an upload), without and with a training run of the page's defaults in the
same process, as on the server; the two conditions alternate round after round, so a busy machine
weighs on both alike, and the ratio of their medians is printed.

Run it on a quiet machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.append(str(ROOT / "tests"))  # perf_budgets: every budget in one place

from perf_budgets import FIRST_PAGE_AFTER_UPLOAD_S, RERUN_S  # noqa: E402

QUICK_START = dict(image_size=64, patch_size=8, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                   intermediate_size=128)


def quick_run(seconds: float | None = None, timer=time.perf_counter, **settings):
    """A TrainingRun exactly as the page starts it after the two-minute settings (random weights, shapes)."""
    from vit_explain import trainer
    from vit_explain.train import default_config

    changes = dict(settings)
    if seconds is not None:
        changes["max_seconds"] = seconds
    s = trainer.TrainSettings(**changes)
    config = default_config(**QUICK_START)
    model = trainer.build_model(config, trainer.CLASS_NAMES)
    data = trainer.ShapesData(config.image_size, settings=s)
    return trainer.TrainingRun(model, data, s, abandon_after_s=3600.0, timer=timer)


def neighbour_contrast(similarity: np.ndarray) -> float:
    sim = np.asarray(similarity, dtype=np.float64)
    g = int(round(sim.shape[0] ** 0.5))
    r, c = np.divmod(np.arange(g * g), g)
    dist = np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :])
    return float(sim[dist == 1].mean() - sim[dist >= 3].mean())


def object_patches(box: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    g = image_size // patch_size
    lo = np.arange(g) * patch_size
    cols = (lo < box[2]) & (lo + patch_size > box[0])
    rows = (lo < box[3]) & (lo + patch_size > box[1])
    return (rows[:, None] & cols[None, :]).ravel()


def two_minutes(args) -> int:
    run = quick_run(seconds=args.seconds, timer=time.thread_time if args.cpu else time.perf_counter)
    print(f"two-minute settings from random weights, {args.seconds:.0f} s of "
          + ("the run's own CPU time (one core's worth, for a busy machine)" if args.cpu else "wall-clock training"))
    started = time.perf_counter()
    run.start()
    printed = 0
    while run.thread.is_alive():
        time.sleep(0.5)
        status = run.status()
        if status.snapshots and time.perf_counter() - started >= printed:
            snap = status.snapshots[-1]
            print(f"{time.perf_counter() - started:6.1f} s wall  step {snap.step:5d}  training time {snap.seconds:6.1f} s  "
                  f"held-out accuracy {snap.held_out_accuracy:.3f}  loss {snap.held_out_loss:.3f}", flush=True)
            printed += args.every
    run.join()
    status = run.status()
    first, last = status.snapshots[0], status.snapshots[-1]
    cfg = run.model.config
    on_object = object_patches(run.data.probe_box, cfg.image_size, cfg.patch_size)
    n = cfg.num_patches

    def attention_facts(snap):
        cls = snap.cls_attention[-1].mean(0)  # last layer, mean over heads, [N]
        cls = cls / cls.sum()
        return float(cls[on_object].sum()), float(cls.max() * n)

    (obj0, peak0), (obj1, peak1) = attention_facts(first), attention_facts(last)
    print()
    print(f"run: {status.message} {status.step} steps in {status.seconds:.1f} s of training "
          f"({status.step / max(status.seconds, 1e-9):.1f} steps/s), {len(status.snapshots)} snapshots kept "
          f"({run.snapshot_memory() / 1024:.0f} KB)")
    print(f"held-out accuracy (256 shapes, chance 0.125): step 0 {first.held_out_accuracy:.3f} -> "
          f"step {last.step} {last.held_out_accuracy:.3f}")
    print(f"position similarity, neighbours minus patches >= 3 apart: {neighbour_contrast(first.position_similarity):.3f}"
          f" -> {neighbour_contrast(last.position_similarity):.3f}")
    print(f"last layer's CLS attention on the probe's object ({on_object.sum()} of {n} patches, even share "
          f"{on_object.mean():.3f}): {obj0:.3f} -> {obj1:.3f}; largest weight x even attention: {peak0:.2f} -> {peak1:.2f}")
    print(f"probe ({run.data.classes[run.data.probe_label]}) top-1: {first.top5[0]} -> {last.top5[0]}")
    return 0


def concurrency(args) -> int:
    import torch
    from budgets import _get, _number, new_app, picture, pickers, timed_run

    from vit_explain import trainer

    at = new_app()
    at.switch_page("pages/attention.py").run()
    assert not at.exception, at.exception

    def measure(label: str) -> dict:
        reruns, uploads = [], []
        for kind, key in pickers(at):
            widget = _get(at, kind, key)
            values = [_number(o) for o in widget.options] if kind != "slider" else list(
                range(int(widget.min), int(widget.max) + 1))
            for value in [v for v in values if v is not None][: args.changes]:
                if value == _get(at, kind, key).value:
                    continue
                _get(at, kind, key).set_value(value)
                reruns.append(timed_run(at)[0])
        for i in range(args.uploads):
            at.sidebar.file_uploader[0].set_value((f"c-{label}-{i}.png", picture(7000 + 100 * len(label) + i),
                                                   "image/png"))
            uploads.append(timed_run(at)[0])
        return dict(rerun=reruns, upload=uploads)

    def line(label: str, values: list[float]) -> str:
        values = sorted(values)
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        return f"{label}: median {statistics.median(values):.3f} s, p95 {p95:.3f} s, max {values[-1]:.3f} s (n={len(values)})"

    measure("warm-up")
    # Alternate the conditions, round after round, so that whatever else the machine does weighs on
    # all alike; report each condition's pooled figures and the ratio of medians. With --process a
    # third condition runs the same training in another process (paused with SIGSTOP between its
    # phases): what the CPU alone costs, without sharing this process's interpreter lock.
    import signal
    import subprocess

    run = quick_run(seconds=3600.0, max_steps=1_000_000)
    results = {"without a run": dict(rerun=[], upload=[]), "while training": dict(rerun=[], upload=[])}
    other = None
    if args.process:
        results["other process"] = dict(rerun=[], upload=[])
        other = subprocess.Popen([sys.executable, __file__, "two-minutes", "--seconds", "100000", "--every", "100000"],
                                 stdout=subprocess.DEVNULL)
        time.sleep(5)
        other.send_signal(signal.SIGSTOP)
    steps_during, seconds_during = 0, 0.0
    try:
        for round_ in range(args.rounds):
            for key, values in measure(f"alone{round_}").items():
                results["without a run"][key] += values
            run.start()  # resumes after the first round
            while run.status().state != "running" or run.status().step < 5:
                time.sleep(0.05)
            step_before, t_before = run.status().step, time.perf_counter()
            for key, values in measure(f"training{round_}").items():
                results["while training"][key] += values
            steps_during += run.status().step - step_before
            seconds_during += time.perf_counter() - t_before
            run.stop()
            if other is not None:
                other.send_signal(signal.SIGCONT)
                time.sleep(0.5)
                for key, values in measure(f"process{round_}").items():
                    results["other process"][key] += values
                other.send_signal(signal.SIGSTOP)
    finally:
        if other is not None:
            other.send_signal(signal.SIGCONT)
            other.terminate()
            other.wait()
    print(f"torch threads in this (server) thread: {torch.get_num_threads()}; training slots: {trainer.server_pool().slots}; "
          f"{args.rounds} rounds of: " + ", ".join(results))
    print(f"self-attention page, random ViT-B/16 at 224 (budgets: rerun <= {RERUN_S:g} s, "
          f"first page after upload <= {FIRST_PAGE_AFTER_UPLOAD_S:g} s)")
    base = results["without a run"]
    for key, label in (("rerun", "rerun after a layer/head change"), ("upload", "first page after an upload")):
        for name, got in results.items():
            ratio = statistics.median(got[key]) / statistics.median(base[key])
            print(f"  {name:15s} " + line(label, got[key]) + f"; x{ratio:.2f}")
    print(f"  the run meanwhile: {steps_during} steps in {seconds_during:.1f} s ({steps_during / seconds_during:.1f} steps/s)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    two = sub.add_parser("two-minutes")
    two.add_argument("--seconds", type=float, default=120.0)
    two.add_argument("--every", type=float, default=10.0, help="print a line every this many seconds")
    two.add_argument("--cpu", action="store_true",
                     help="count the run's own CPU time instead of wall-clock (what a quiet core would give)")
    con = sub.add_parser("concurrency")
    con.add_argument("--changes", type=int, default=3, help="values per layer/head picker per round")
    con.add_argument("--uploads", type=int, default=1, help="uploads per round")
    con.add_argument("--rounds", type=int, default=4)
    con.add_argument("--process", action="store_true",
                     help="also measure with the same training in another process (the CPU's share alone)")
    args = parser.parse_args(argv)
    return two_minutes(args) if args.what == "two-minutes" else concurrency(args)


if __name__ == "__main__":
    raise SystemExit(main())
