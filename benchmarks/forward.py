"""Forward-pass speed of our ViT-B/16 against transformers, measured side by side in one run.

    python benchmarks/forward.py [--rounds 20] [--threads 2] [--clock wall|cpu]

Prints the fastest and the median time of each variant and two ratios of the fastest times
(budgets from DESIGN.md; on a shared machine the fastest of many rounds is the estimate least
disturbed by other work, the medians are printed beside it):
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


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


LABELS = {
    "eager": "transformers eager (attentions + hidden states)",
    "traced": "ours, traced (every tap)",
    "untraced": "ours, untraced",
}


def measure(rounds: int = 20, threads: int = 2, clock: str = "wall") -> dict[str, list[float]]:
    """Times of each variant (keys of LABELS) on the same ViT-B/16 weights, interleaved round by round."""
    import transformers
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ref = transformers.ViTForImageClassification(
        transformers.ViTConfig(num_labels=1000, attn_implementation="eager")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
        ours.load_state_dict(load_file(f"{tmp}/model.safetensors"), strict=True)
    x = torch.randn(1, 3, 224, 224)

    variants = {
        "eager": lambda: ref(x, output_attentions=True, output_hidden_states=True),
        "traced": lambda: trace(ours, x),
        "untraced": lambda: ours(x),
    }
    times = {name: [] for name in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm up
            for _ in range(2):
                fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                times[name].append(_time(fn, CLOCKS[clock]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which other programs on a busy "
                             "machine disturb far less (use it with --threads 1)")
    args = parser.parse_args()
    times = measure(args.rounds, args.threads, args.clock)
    report(times, f"{args.threads} threads, {args.clock} clock")


def report(times: dict[str, list[float]], setting: str) -> tuple[float, float]:
    """Print the table and the two ratios (of the fastest rounds); return the ratios."""
    best = {name: min(t) for name, t in times.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    rounds = len(next(iter(times.values())))
    print(f"ViT-B/16 at 224, batch 1, CPU, {setting}, {rounds} interleaved rounds:")
    print(f"  {'variant':50s} {'fastest':>9s} {'median':>9s}")
    for name in times:
        print(f"  {LABELS[name]:50s} {best[name] * 1000:7.1f}ms {med[name] * 1000:7.1f}ms")
    ref, traced, plain = "eager", "traced", "untraced"
    r1, r2 = best[traced] / best[ref], best[traced] / best[plain]
    m1, m2 = med[traced] / med[ref], med[traced] / med[plain]
    print(f"traced / transformers eager: {r1:.3f} (medians {m1:.3f})  budget <= 1.00  {'OK' if r1 <= 1.0 else 'OVER'}")
    print(f"traced / untraced:           {r2:.3f} (medians {m2:.3f})  budget <= 1.10  {'OK' if r2 <= 1.10 else 'OVER'}")
    return r1, r2


if __name__ == "__main__":
    main()
