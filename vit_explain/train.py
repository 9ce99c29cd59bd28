"""Train (and check) the small ViTs that ship with the app: on synthetic shapes, or on real pictures.

    python -m vit_explain.train --recipe shapes                       # -> assets/models/shapes
    python -m vit_explain.train --recipe cifar10 --data PATH          # -> assets/models/vit-cifar10
    python -m vit_explain.train --data my_pictures/ --out my_model    # any ImageFolder folder or tar
    python -m vit_explain.train --evaluate assets/models/shapes

This module is the command line; the training itself lives in :mod:`vit_explain.training` (one
loop, :func:`~vit_explain.training.loop.train_loop`, driven by a
:class:`~vit_explain.training.config.TrainConfig`, shared with the app's Training page).

The shapes (recipe ``shapes``): every step draws a fresh batch of synthetic pictures
(:class:`~vit_explain.training.data.ShapesStream`; step ``i`` of a run seeded ``s`` uses the
seed sequence ``[s, i]``), so the data never repeats and a run is fixed by its seed. AdamW under a
linear warm-up then cosine decay; clutter ramped in over the first fifth of the run; position
embeddings started at 2-D sine-cosine values. The defaults reproduce the shipped model: 8,000
steps of 64 pictures, 27 minutes wall-clock on an idle 2-core machine. At the end: accuracy and
rollout on the object on 1,000 fresh pictures (:func:`~vit_explain.training.evaluation.evaluate`).

Real pictures (recipe ``cifar10``, or ``--data`` alone): any data set in the ImageFolder layout,
read into memory by :mod:`vit_explain.imagefolder`; epochs of shuffled, augmented batches (random
crop after a 4-pixel reflect pad, horizontal flip; optionally RandAugment and mixup / CutMix, see
:mod:`vit_explain.augment`); AdamW with a linear warm-up and cosine decay to zero; label
smoothing; a held-out check after every epoch. At the end: top-1, per-class accuracy and the
confusion matrix of the whole held-out split, written next to the weights (``evaluation.json``,
``confusion_matrix.csv``). CUDA is used when there is one.

Either way the model is saved in the Hugging Face layout by
:func:`vit_explain.weights.save_checkpoint` (``config.json``, ``model.safetensors``,
``preprocessor_config.json``), so transformers loads it too, and the run's state is saved as it
goes (``train_state.pt`` in the output folder, every epoch or every 250 steps): running the same
command again after an interruption resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

import torch

from .training import PRECISIONS, RECIPES, evaluate
from .training import default_config, evaluate_split, images_to_pixel_values  # still imported from here
from .training.recipes import run_pictures, run_shapes

__all__ = ["main", "parse", "parser", "default_config", "evaluate_split", "images_to_pixel_values"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_explain.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--recipe", choices=sorted(RECIPES), default=None,
        help="named defaults that reproduce a shipped model (default: cifar10 when --data is given, else shapes)",
    )
    p.add_argument("--data", help="ImageFolder folder or .tar/.tar.gz (train/ and test/, or one folder split 90/10)")
    p.add_argument("--out", help="directory to save the trained model in (default: the recipe's)")
    p.add_argument("--init-from", metavar="DIR", default=None,
                   help="pictures: start from the weights saved in DIR (same architecture and classes) instead of fresh "
                        "ones, for a further cycle of training; default: the recipe's (cifar10-cycle2: the shipped model)")
    p.add_argument("--evaluate", metavar="DIR", help="only measure the shapes model saved in DIR")
    p.add_argument("--seed", type=int, default=None, help="default: the recipe's, else 0")
    p.add_argument("--steps", type=int, help="shapes: optimiser steps")
    p.add_argument("--epochs", type=int, help="pictures: passes over the training split")
    p.add_argument("--stop-after-epochs", type=int, default=None, help="pictures: stop early (resumable) after this many epochs")
    p.add_argument("--stop-after-steps", type=int, default=None, help="shapes: stop early (resumable) after this many steps")
    p.add_argument("--limit-per-class", type=int, default=None, help="pictures: read at most N per class and split")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=int, help="shapes: warm-up steps")
    p.add_argument("--warmup-epochs", type=float, help="pictures: warm-up epochs")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument(
        "--curriculum", type=float, default=0.2, help="shapes: fraction of the run over which clutter ramps from 0 to 1"
    )
    p.add_argument(
        "--position-init", choices=["sincos", "random"], default="sincos",
        help="starting values of the (learned) position embeddings",
    )
    p.add_argument(
        "--attention-init", choices=["normal", "mimetic"], default=None,
        help="starting values of the attention weights (normal: Hugging Face's; mimetic: near the identity "
             "patterns trained ViTs show, see init_mimetic_attention); default: the recipe's",
    )
    p.add_argument("--image-size", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--intermediate-size", type=int, default=None, help="default: the recipe's (shapes: 4 x hidden size)")
    p.add_argument("--log-every", type=int, default=50, help="steps between progress lines (off a terminal)")
    p.add_argument("--eval-every", type=int, default=250,
                   help="shapes: steps between records, each with a quick check on 256 pictures (0: no check)")
    p.add_argument("--eval-n", type=int, default=None,
                   help="pictures measured: shapes, at the end (default 1000); pictures, by the check after each epoch "
                        "(default 2000; the end measures the whole held-out split)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16 autocasts the forward pass (weights stay float32); default: the recipe's")
    p.add_argument("--keep-patches", type=float, default=None,
                   help="fraction of each picture's patch tokens a training step sees (patch dropout; 1 = all); "
                        "default: the recipe's")
    p.add_argument("--rand-augment-ops", type=int, default=None,
                   help="RandAugment operations per picture (0: none); default: the recipe's")
    p.add_argument("--rand-augment-magnitude", type=float, default=None,
                   help="RandAugment strength, 0-30; default: the recipe's")
    p.add_argument("--mix", type=float, default=None,
                   help="share of the batches mixed up or CutMixed (0: none); default: the recipe's")
    p.add_argument("--augment-ramp", choices=["none", "linear"], default=None,
                   help="linear grows the RandAugment strength and the mixed share from nothing to their values "
                        "over the run; default: the recipe's")
    p.add_argument("--full-epochs", type=int, default=None,
                   help="pictures: the last N epochs see every patch; default: the recipe's")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads, 0 for all cores (shapes default 1: on a busy 2-core machine one thread ran twice "
        "as fast as two, and the batch generator gets the other core)",
    )
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, with the recipe's defaults (``args.recipe`` set to the recipe used) where none was given."""
    args = parser().parse_args(argv)
    args.recipe = args.recipe or ("cifar10" if args.data else "shapes")
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    recipe_name = args.recipe
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    log = lambda line: print(line, flush=True)  # noqa: E731

    if args.evaluate:
        from .weights import load_checkpoint

        metrics = evaluate(load_checkpoint(args.evaluate), n=args.eval_n)
        print(json.dumps(metrics, indent=2))
        return 0
    if recipe_name != "shapes":
        log(f"recipe {recipe_name}: " + ", ".join(f"{k}={getattr(args, k)}" for k in RECIPES[recipe_name]))
        return run_pictures(args, log)
    return run_shapes(args, log)


if __name__ == "__main__":
    raise SystemExit(main())
