"""Forward-pass speed of our ViT-B/16 against transformers, measured side by side in one run.

    python benchmarks/forward.py [--rounds 20] [--threads 2] [--clock wall|cpu]

Variants, run interleaved round after round on the same weights so background load hits them alike:

  eager       transformers' eager forward with output_attentions + output_hidden_states
  traced      ours, trace(model, x): every tap of the forward pass (what ``trace`` returns by default)
  traced_app  ours, trace(model, x, taps=EMBEDDING_TAPS): the hidden states and attention maps that
              transformers returns, plus the embedding-stage taps; the trace the app runs (it
              recomputes one layer's full detail on demand)
  untraced    ours, plain forward (fused attention, keeps nothing)
  keep / drop a memory probe: the same element-wise writes, of the sizes of the tensors that the
              every-tap trace keeps beyond traced_app, into buffers that are kept (fresh memory
              every time) or dropped at once (the allocator hands the same warm buffer back)

Budgets (README, "Performance"; tests/perf_budgets.py; judged on the fastest of the rounds, the
estimate a shared machine disturbs least; medians printed beside): the trace the app runs /
transformers eager <= 1.00, and the every-tap trace / transformers eager <= 1.15 (it keeps about 6x
the memory of transformers' outputs, and writing that much fresh memory costs a few per cent by
itself). The ratios to our untraced forward are printed too, for information. ``keep - drop``
estimates what keeping the extra tensors costs by itself on this machine: transformers keeps about
as much as traced_app.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vit_explain import ViTConfig, ViTForImageClassification
from vit_explain.capture import trace
from vit_explain.pipeline import EMBEDDING_TAPS

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # perf_budgets: every budget in one place
from perf_budgets import FORWARD_RATIO  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

LABELS = {
    "eager": "transformers eager (attentions + hidden states)",
    "traced": "ours, traced: every tap",
    "traced_app": "ours, traced as the app does (hidden states, attention maps, embedding taps)",
    "untraced": "ours, untraced",
    "keep": "probe: write the every-tap trace's extra tensors, keep them",
    "drop": "probe: the same writes, each dropped at once",
}


def _time(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def kept_bytes(tensors) -> int:
    """Bytes of the distinct storages behind these tensors (views of one buffer count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t is not None}
    return sum(storages.values())


def _result_tensors(result) -> list[torch.Tensor]:
    if hasattr(result, "tensors"):  # our Trace
        return list(result.tensors.values())
    return [result.logits, *result.hidden_states, *result.attentions]  # transformers' output


def _extra_storage_sizes(full, small) -> list[int]:
    """Float counts of the storages behind the taps that the full trace keeps and the small one (same
    input, fewer taps) does not, in forward order."""
    have = {full.tensors[key].untyped_storage().data_ptr() for key in small.tensors}
    sizes = {}
    for t in full.tensors.values():
        storage = t.untyped_storage()
        if storage.data_ptr() not in have:
            sizes[storage.data_ptr()] = storage.nbytes() // 4
    return list(sizes.values())


def _write_probe(sizes: list[int], keep: bool):
    """One element-wise write per size from a small warm source; keep the results or drop each at once."""
    source = torch.ones(max(sizes))
    kept = []
    for n in sizes:
        out = torch.add(source[:n], 1.0)
        if keep:
            kept.append(out)
    return kept


def measure(rounds: int = 20, threads: int = 2, clock: str = "wall") -> tuple[dict[str, list[float]], dict[str, int]]:
    """Times of each variant (keys of LABELS), interleaved round by round, and the bytes each keeps."""
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

    with torch.no_grad():
        full, small = trace(ours, x), trace(ours, x, taps=EMBEDDING_TAPS)
        extra = _extra_storage_sizes(full, small)
        variants = {
            "eager": lambda: ref(x, output_attentions=True, output_hidden_states=True),
            "traced": lambda: trace(ours, x),
            "traced_app": lambda: trace(ours, x, taps=EMBEDDING_TAPS),
            "untraced": lambda: ours(x),
            "keep": lambda: _write_probe(extra, keep=True),
            "drop": lambda: _write_probe(extra, keep=False),
        }
        kept = {"eager": kept_bytes(_result_tensors(variants["eager"]())), "traced": kept_bytes(full.tensors.values()),
                "traced_app": kept_bytes(small.tensors.values()), "keep": 4 * sum(extra)}
        del full, small
        times = {name: [] for name in variants}
        for fn in variants.values():  # warm up
            for _ in range(2):
                fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                times[name].append(_time(fn, CLOCKS[clock]))
    return times, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which other programs on a busy "
                             "machine disturb far less (use it with --threads 1)")
    args = parser.parse_args()
    times, kept = measure(args.rounds, args.threads, args.clock)
    report(times, kept, f"{args.threads} threads, {args.clock} clock")


def fastest_and_median(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each variant's fastest round and median round."""
    return ({name: min(t) for name, t in times.items()}, {name: statistics.median(t) for name, t in times.items()})


def ratios(times: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """(fastest-round ratio, median ratio) of each budgeted comparison and of the memory probe."""
    best, med = fastest_and_median(times)
    pairs = {"traced/eager": ("traced", "eager"), "traced/untraced": ("traced", "untraced"),
             "traced_app/eager": ("traced_app", "eager"), "traced_app/untraced": ("traced_app", "untraced")}
    out = {key: (best[a] / best[b], med[a] / med[b]) for key, (a, b) in pairs.items()}
    # what keeping the extra tensors costs alone, added to transformers' time
    cost = best["keep"] - best["drop"], med["keep"] - med["drop"]
    out["estimate/eager"] = ((best["eager"] + cost[0]) / best["eager"], (med["eager"] + cost[1]) / med["eager"])
    return out


#: The forward-pass budgets (README, "Performance"; tests/perf_budgets.py): the app's trace <= 1.00x
#: transformers eager (attentions + hidden states), the every-tap trace <= 1.15x. The ratios to our
#: untraced forward are information only.
BUDGETS = FORWARD_RATIO
INFO = ("traced_app/untraced", "traced/untraced")


def report(times: dict[str, list[float]], kept: dict[str, int], setting: str) -> dict[str, tuple[float, float]]:
    """Print the table and the ratios (of the fastest rounds, medians beside); return the ratios."""
    best, med = fastest_and_median(times)
    rounds = len(next(iter(times.values())))
    print(f"ViT-B/16 at 224, batch 1, CPU, {setting}, {rounds} interleaved rounds:")
    print(f"  {'variant':76s} {'fastest':>9s} {'median':>9s} {'kept':>8s}")
    for name in times:
        size = f"{kept[name] / 2**20:6.0f}MB" if name in kept else ""
        print(f"  {LABELS[name]:76s} {best[name] * 1000:7.1f}ms {med[name] * 1000:7.1f}ms {size:>8s}")
    result = ratios(times)
    names = {"traced_app/eager": "the app's trace / transformers eager", "traced/eager": "every-tap trace / transformers eager",
             "traced_app/untraced": "the app's trace / our untraced", "traced/untraced": "every-tap trace / our untraced"}
    for key, limit in BUDGETS.items():
        fastest, median = result[key]
        verdict = "OK" if fastest <= limit else "OVER"
        print(f"{names[key]:40s} {fastest:.3f} (medians {median:.3f})  budget <= {limit:.2f}  {verdict}")
    for key in INFO:
        fastest, median = result[key]
        print(f"{names[key]:40s} {fastest:.3f} (medians {median:.3f})  (information)")
    fastest, median = result["estimate/eager"]
    print(f"keeping the every-tap trace's extra {kept['keep'] / 2**20:.0f} MB costs {(best['keep'] - best['drop']) * 1000:.1f} ms "
          f"alone (probe); transformers + that = {fastest:.3f} x transformers (medians {median:.3f})")
    return result


if __name__ == "__main__":
    main()
