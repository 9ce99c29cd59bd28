"""Teaching the ViT your own classes: how fast fine-tuning the bundled CIFAR-10 model learns from a few pictures.

    python benchmarks/own_classes.py [--data CIFAR10_ARCHIVE] [--seconds 60] [--per-class 10]

(the CIFAR-10 archive: see README, The bundled models; by default $VIT_EXPLAIN_CIFAR10 or its usual place beside the checkout)

Three well-separated CIFAR-10 classes (airplane, frog, truck), ``--per-class`` training-split
pictures each, stand in for a student's own pictures. The page's run (the same data source, model,
settings and :class:`~vit_explain.training.run.TrainingRun`) trains for ``--seconds`` of the run's
own CPU time (one torch thread, so one core), once from the bundled model with a new classifier
and once from random weights. Printed: the held-out accuracy the page shows (20% of the pictures,
at least one per class) over time, and at the end the accuracy on 100 unseen test-split pictures
per class (a steadier figure than a handful of held-out pictures).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not (as the other benchmarks)

from vit_explain.training.data import images_to_pixel_values  # noqa: E402
from vit_explain.training.own_classes import OwnClassesData, own_settings, pictures_from_archive, starting_model  # noqa: E402
from vit_explain.training.run import TrainingRun  # noqa: E402
from vit_explain.training.sharing import PageActivity, SlotPool  # noqa: E402

CLASSES = ("airplane", "frog", "truck")


def run_once(start: str, pictures, test, seconds: float) -> None:
    data = OwnClassesData(pictures)
    settings = own_settings(start)
    import dataclasses

    settings = dataclasses.replace(settings, max_seconds=seconds)
    model = starting_model(list(pictures), start)
    run = TrainingRun(model, data, settings, pool=SlotPool(1), alive=lambda: True, timer=time.thread_time, activity=PageActivity())
    wall = time.perf_counter()
    run.start()
    run.join()
    wall = time.perf_counter() - wall
    status = run.status()
    print(f"\n== start: {start} ({status.message}); {status.step} steps in {status.seconds:.1f} s of CPU, "
          f"{wall:.1f} s wall; {data.train_count} training and {len(data.held_out()[1])} held-out pictures")
    reached = None
    for snap in status.snapshots:
        if reached is None and snap.held_out_accuracy >= 0.9:
            reached = snap
    for snap in status.snapshots[:: max(1, len(status.snapshots) // 8)] + status.snapshots[-1:]:
        print(f"  step {snap.step:4d}  {snap.seconds:5.1f} s  held-out accuracy {snap.held_out_accuracy:6.1%}  "
              f"loss {snap.held_out_loss:.3f}")
    if reached is not None:
        print(f"  first reached >= 90% held-out at step {reached.step}, {reached.seconds:.1f} s of CPU")
    else:
        print("  never reached 90% held-out")
    model = run.trained_model()
    import numpy as np

    x = torch.cat([images_to_pixel_values(np.stack(test[c])) for c in CLASSES])
    y = torch.cat([torch.full((len(test[c]),), i) for i, c in enumerate(CLASSES)])
    with torch.no_grad():
        accuracy = (model(x).logits.argmax(-1) == y).float().mean().item()
    print(f"  unseen test pictures ({len(y)}): accuracy {accuracy:.1%}")
    print(f"  last confusion matrix (rows: true {', '.join(CLASSES)}):\n{status.snapshots[-1].extra['confusion']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("VIT_EXPLAIN_CIFAR10") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--starts", default="cifar10,random")
    args = parser.parse_args()
    t = time.perf_counter()
    pictures = pictures_from_archive(args.data, CLASSES, args.per_class, split="train")
    test = pictures_from_archive(args.data, CLASSES, 100, split="test")
    print(f"read {args.per_class} x {len(CLASSES)} training and 100 x {len(CLASSES)} test pictures in "
          f"{time.perf_counter() - t:.1f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"torch threads per run: 1")
    for start in args.starts.split(","):
        run_once(start, pictures, test, args.seconds)


if __name__ == "__main__":
    main()
