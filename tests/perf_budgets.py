"""Every performance and size budget, in one place: the tests and the benchmarks import them from here.

The budgets themselves (what the app must stay within) are stated in the README, section "Performance"
and its subsections; ``benchmarks/budgets.py`` measures all of the first group in one run. The guards
below them are what the tests check on every run: tighter than the budget, so a page that grows
is caught long before it reaches it. Change a budget here and in the README together.

No imports, no side effects: ``benchmarks/*.py`` put this folder at the end of ``sys.path`` to read it.
"""

MIB = 1024 * 1024

# ------------------------------------------------------------------------------------------ budgets
# Forward pass, ViT-B/16 at 224, batch 1, CPU, judged on the fastest rounds: the trace the app runs / transformers'
# eager forward with attentions + hidden states <= 1.00; the every-tap trace / the same <= 1.15 (README,
# "Performance"; measured by benchmarks/forward.py and benchmarks/budgets.py).
FORWARD_RATIO = {"traced_app/eager": 1.00, "traced/eager": 1.15}

# A page rerun after a layer/head picker change, the trace cached: seconds of Python work (README, "Performance";
# benchmarks/budgets.py, and benchmarks/training.py with a training run beside it).
RERUN_S = 0.3

# The first page after an upload, the model already cached: seconds (README, "Performance"; benchmarks/budgets.py).
FIRST_PAGE_AFTER_UPLOAD_S = 2.0

# The Plotly specs one page sends, summed, at ViT-B/16: bytes (README, "Performance": <= 2 MB;
# benchmarks/budgets.py). The tests guard each page below it (PAGE_PAYLOAD_GUARD).
PAGE_PAYLOAD_BYTES = 2 * MIB

# Server memory (VmHWM) with ViT-B/16 and a few cached traces: MB (README, "Performance": <= 1.5 GB;
# benchmarks/budgets.py).
SERVER_MEMORY_MB = 1536

# Browser CPU (DevTools TaskDuration) per stage page at ViT-B/16: seconds (README, "What the browser pays";
# benchmarks/browser_cost.py).
BROWSER_CPU_S = 1.0

# p95 latency of a student's interactions with a class on one server core: seconds, by model (README, "A class on
# one server: the load test" and "Deploying for a class"; benchmarks/load_test.py).
LOAD_P95_S = {"default": 2.0, "random-b16": 3.0}

# The layer-similarity (CKA) matrix of two ViT-B/16 with random weights over 8 pictures, on the Compare page:
# seconds (README, "Compare two models", which gives the measured figure; benchmarks/compare.py).
CKA_S = 20.0

# ------------------------------------------------------------------------------------------ guards the tests check
# Per page at ViT-B/16 (AppTest, ``app_helpers.payload_bytes``): each well under PAGE_PAYLOAD_BYTES (README,
# "Performance", which gives the measured 0.07 (overview) to 1.03 MB (self-attention)).
PAGE_PAYLOAD_GUARD = {
    "overview": 400_000,
    "patching": 1_000_000,  # its lazy sections open
    "embeddings": 1_200_000,
    "attention": 1_600_000,  # its lazy sections closed, as a page first shows
    "prediction": 2_000_000,  # its lazy sections open
}

# Every figure a page's builders make from ViT-B/16-sized arrays, summed (``charts.common.figure_bytes``): the same
# bound, checked without the app (README, "Performance").
FIGURE_PAYLOAD_GUARD = {
    "attention": 1_600_000,
    "mlp": 1_000_000,
    "layers": 1_000_000,
    "prediction": 500_000,
}

# One photo as a figure's picture (a JPEG data URI, 224 px): bytes. Pictures are most of a page's payload.
PHOTO_SOURCE_BYTES = 60_000

# The Training page's figures of one snapshot, summed: bytes. They are sent again about once a second while a run
# trains (README, "The Training stage (page 7)").
TRAINING_FIGURES_BYTES = 400_000
