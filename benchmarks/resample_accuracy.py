"""How well does the bundled model survive a change of patch size? PI-resize against plain resize.

    python benchmarks/resample_accuracy.py [--model assets/models/shapes] [--n 1000] [--seed 12345]

The bundled model was trained on 64-pixel synthetic images with 8-pixel patches (an 8 x 8 grid).
For each other patch size, :func:`vit_explain.weights.resample` rebuilds it twice: with FlexiViT's
pseudo-inverse resize of the patch kernel ("PI") and with the kernel resized like an image
("plain"), and the accuracy on ``vit_explain.synthetic.sample(n, seed)`` is printed for two cases:

* grid kept: the image grows with the patch (image = 8 x patch), the pictures are resized to it
  (bilinear), the position embeddings stay as trained. PI-resize is exact for patches that grow
  when each patch is upsampled on its own; resizing the whole picture blends across patch borders.
* image kept: 64-pixel pictures as trained; the grid changes (64 / patch) and the position
  embeddings are interpolated to it.
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

from vit_explain.synthetic import sample  # noqa: E402
from vit_explain.weights import load_checkpoint, resample  # noqa: E402


def pixel_values(images) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> [n, 3, H, W] normalised the ViT way (mean = std = 0.5)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


@torch.no_grad()
def accuracy(model, x: torch.Tensor, labels: torch.Tensor, batch: int = 100) -> float:
    size = model.config.image_size
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        if chunk.shape[-1] != size:
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=size < chunk.shape[-1])
        correct += int((model(chunk).logits.argmax(-1) == labels[i : i + batch]).sum())
    return correct / len(x)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "models" / "shapes"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--patches", default="4,8,16,32", help="comma-separated patch sizes")
    args = parser.parse_args(argv)

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        print(f"No model at {model_dir} (train it with: python -m vit_explain.train --out assets/models/shapes)")
        return 1
    model = load_checkpoint(model_dir)
    config = model.config
    images, labels, _ = sample(args.n, seed=args.seed, image_size=config.image_size)
    x, y = pixel_values(images), torch.from_numpy(labels)
    grid = config.grid_size
    start = time.perf_counter()
    print(f"model: {model_dir} ({config.image_size} px, patch {config.patch_size}, grid {grid}x{grid}, "
          f"{config.num_hidden_layers} layers, width {config.hidden_size}); {args.n} images, seed {args.seed}")
    print(f"trained setting: accuracy {accuracy(model, x, y):.3f}\n")

    patches = [int(p) for p in args.patches.split(",")]
    rows = []
    for patch in patches:
        row = [patch]
        # grid kept: the image scales with the patch
        image = grid * patch
        for method in ("pi", "bilinear"):
            row.append(accuracy(resample(model, patch_size=patch, image_size=image, kernel_resize=method), x, y))
        # image kept: the grid changes, position embeddings interpolated
        if config.image_size % patch == 0:
            for method in ("pi", "bilinear"):
                row.append(accuracy(resample(model, patch_size=patch, kernel_resize=method), x, y))
        else:
            row += [None, None]
        rows.append(row)

    def cell(v):
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"grid kept = image scaled to keep the {grid}x{grid} grid; image kept = {config.image_size} px, grid changes")
    print("| patch | grid kept: image | PI     | plain  | image kept: grid | PI     | plain  |")
    print("|------:|-----------------:|-------:|-------:|-----------------:|-------:|-------:|")
    for patch, gk_pi, gk_plain, ik_pi, ik_plain in rows:
        g = config.image_size // patch if config.image_size % patch == 0 else None
        print(f"| {patch:5d} | {grid * patch:13d} px | {cell(gk_pi)} | {cell(gk_plain)} | "
              f"{(f'{g}x{g}' if g else '-'):>16} | {cell(ik_pi)} | {cell(ik_plain)} |")
    print(f"\n({time.perf_counter() - start:.1f} s; chance is {1 / config.num_labels:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
