"""Size of "Download this page" (one self-contained HTML file) for every stage page, at the default model and at
ViT-B/16 (random weights), measured in AppTest sessions.

    python benchmarks/page_files.py            # both models
    python benchmarks/page_files.py --default  # the default model only

The README's "Share and keep" section quotes its output; the budget is 10 MB a page at the default model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PAGES = ["pages/overview.py", "pages/patching.py", "pages/embeddings.py", "pages/attention.py", "pages/mlp.py",
         "pages/layers.py", "pages/prediction.py"]
VIT_B16 = dict(image_size=224, patch_size=16, hidden_size=768, num_heads=12, num_layers=12, mlp_size=3072)


def sizes(model: str, sliders: dict) -> dict[str, int]:
    from app_helpers import open_app

    from vit_explain.ui import PAGES as TITLES, keep

    at = open_app(model, **sliders)
    out = {}
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        record = at.session_state[keep.RECORD]
        title = next(t for p, t, _ in TITLES if p == page)
        html = keep.page_html(record["items"], page_title=title, picture=None, settings=[], link=None)
        out[page] = len(html.encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", action="store_true", help="only the default model")
    args = parser.parse_args()
    runs = [("default model (bundled:vit-cifar10)", "bundled:vit-cifar10", {})]
    if not args.default:
        runs.append(("ViT-B/16 at 224 px, random weights", "random", VIT_B16))
    for name, model, sliders in runs:
        print(name)
        for page, n in sizes(model, sliders).items():
            print(f"  {page:22s} {n / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
