"""How well does a trained model survive the app's architecture sliders? Accuracy after resampling.

    python benchmarks/resample_accuracy.py                                   # the shapes model
    python benchmarks/resample_accuracy.py --model assets/models/vit-cifar10 \\
        --data "$VIT_EXPLAIN_CIFAR10" --per-class 200                       # the CIFAR-10 model

Every row rebuilds the model with :func:`vit_explain.weights.resample`, exactly as the app does
when a slider moves, and measures its accuracy on the same pictures:

* patch size, grid kept: the image grows with the patch (image = grid x patch), the pictures are
  resized to it (bilinear); the patch kernel is resized with FlexiViT's pseudo-inverse resize
  ("PI") or like an image ("plain"); the position embeddings stay as trained.
* patch size, image kept: the trained image size; the grid changes and the position embeddings
  are interpolated to it.
* image size: patch kept, grid changes, position embeddings interpolated.
* heads: the same projections split into another number of heads.
* layers: only the first N layers kept (the final layer norm and head as trained).

Pictures: ``--data`` (an ImageFolder folder or archive, such as the CIFAR-10 archive (see README, The
bundled models; VIT_EXPLAIN_CIFAR10); its held-out split, ``--per-class`` of each class) or, without
it, fresh synthetic shapes (``--n`` of them, ``--seed``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_explain.train import images_to_pixel_values  # noqa: E402
from vit_explain.weights import load_checkpoint, resample  # noqa: E402


@torch.no_grad()
def accuracy(model, x: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    size = model.config.image_size
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        if chunk.shape[-1] != size:
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=size < chunk.shape[-1])
        correct += int((model(chunk).logits.argmax(-1) == labels[i : i + batch]).sum())
    return correct / len(x)


def _pictures(args, config):
    if args.data:
        from vit_explain.imagefolder import load_image_folder

        data = load_image_folder(args.data, image_size=config.image_size, limit_per_class=args.per_class)
        return data.test.images, data.test.labels, f"{len(data.test)} held-out pictures of {args.data}"
    from vit_explain.synthetic import sample

    images, labels, _ = sample(args.n, seed=args.seed, image_size=config.image_size)
    return images, labels, f"{args.n} synthetic pictures, seed {args.seed}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "models" / "shapes"))
    parser.add_argument("--data", help="ImageFolder folder or .tar/.tar.gz; without it: synthetic shapes")
    parser.add_argument("--per-class", type=int, default=200, help="held-out pictures per class read from --data")
    parser.add_argument("--n", type=int, default=1000, help="synthetic pictures (without --data)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--patches", default="2,4,8,16", help="comma-separated patch sizes")
    args = parser.parse_args(argv)

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        print(f"No model at {model_dir} (train it with: python -m vit_explain.train --recipe shapes|cifar10)")
        return 1
    torch.manual_seed(0)
    model = load_checkpoint(model_dir)
    config = model.config
    images, labels, what = _pictures(args, config)
    x, y = images_to_pixel_values(images), torch.from_numpy(labels)
    grid, size, patch = config.grid_size, config.image_size, config.patch_size
    start = time.perf_counter()
    print(f"model: {model_dir} ({size} px, patch {patch}, grid {grid}x{grid}, {config.num_hidden_layers} layers, "
          f"{config.num_attention_heads} heads, width {config.hidden_size}); {what}; chance {1 / config.num_labels:.3f}")
    print(f"\nas trained: accuracy {accuracy(model, x, y):.3f}\n")

    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    print("| patch | grid kept: image | PI | plain | image kept: grid | PI | plain |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for p in [int(v) for v in args.patches.split(",")]:
        kept = [accuracy(resample(model, patch_size=p, image_size=grid * p, kernel_resize=m), x, y) for m in ("pi", "bilinear")]
        if size % p == 0 and size // p >= 1:
            changed = [accuracy(resample(model, patch_size=p, kernel_resize=m), x, y) for m in ("pi", "bilinear")]
            g = size // p
            grid_text = f"{g}x{g}"
        else:
            changed, grid_text = [None, None], "-"
        print(f"| {p} | {grid * p} px | {cell(kept[0])} | {cell(kept[1])} | {grid_text} | {cell(changed[0])} | {cell(changed[1])} |")

    print("\n| image size (patch kept) | grid | accuracy |")
    print("|---:|---:|---:|")
    for s in sorted({size // 2, size * 3 // 4, size, size * 3 // 2, size * 2}):
        if s % patch == 0 and s >= patch:
            print(f"| {s} px | {s // patch}x{s // patch} | {accuracy(resample(model, image_size=s), x, y):.3f} |")

    print("\n| heads | per head | accuracy |")
    print("|---:|---:|---:|")
    for h in _divisors(config.hidden_size):
        if h <= 32:
            print(f"| {h} | {config.hidden_size // h} | {accuracy(resample(model, num_heads=h), x, y):.3f} |")

    print("\n| layers kept | accuracy |")
    print("|---:|---:|")
    for n in range(1, config.num_hidden_layers + 1):
        print(f"| {n} of {config.num_hidden_layers} | {accuracy(resample(model, num_layers=n), x, y):.3f} |")
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
