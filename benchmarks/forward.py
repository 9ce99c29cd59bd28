"""Forward-pass speed of our ViT-B/16 against transformers, measured side by side in one run.

    python benchmarks/forward.py [--rounds 15] [--threads 2]

Prints the median time of each variant and two ratios (budgets from DESIGN.md):
  traced / transformers eager (output_attentions + output_hidden_states)   <= 1.00
  traced / our untraced forward                                            <= 1.10
The variants run interleaved, round after round, so background load hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from vit_explain import ViTConfig, ViTForImageClassification
from vit_explain.capture import trace


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers
    from safetensors.torch import load_file

    torch.manual_seed(0)
    ref = transformers.ViTForImageClassification(
        transformers.ViTConfig(num_labels=1000, attn_implementation="eager")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
        ours.load_state_dict(load_file(f"{tmp}/model.safetensors"), strict=True)
    x = torch.randn(1, 3, 224, 224)

    variants = {
        "transformers eager (attentions + hidden states)":
            lambda: ref(x, output_attentions=True, output_hidden_states=True),
        "ours, traced (every tap)": lambda: trace(ours, x),
        "ours, untraced": lambda: ours(x),
    }
    with torch.no_grad():
        for fn in variants.values():  # warm up
            for _ in range(2):
                fn()
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                times[name].append(_time(fn))

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"ViT-B/16 at 224, batch 1, CPU, {args.threads} threads, {args.rounds} interleaved rounds (median):")
    for name, value in med.items():
        print(f"  {name:50s} {value * 1000:8.1f} ms")
    names = list(variants)
    r1 = med[names[1]] / med[names[0]]
    r2 = med[names[1]] / med[names[2]]
    print(f"traced / transformers eager: {r1:.3f}  (budget <= 1.00) {'OK' if r1 <= 1.0 else 'OVER'}")
    print(f"traced / untraced:           {r2:.3f}  (budget <= 1.10) {'OK' if r2 <= 1.10 else 'OVER'}")


if __name__ == "__main__":
    main()
