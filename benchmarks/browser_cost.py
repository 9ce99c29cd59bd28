"""What the browser pays: Chromium's own CPU time to draw each page, first visit and revisit.

    python benchmarks/browser_cost.py                       # the default model and random ViT-B/16
    python benchmarks/browser_cost.py --model random-b16 --json cost.json

Chrome DevTools' ``Performance.getMetrics`` (through Playwright's CDP session) reports the time the
page's renderer main thread spent on tasks (``TaskDuration``), running JavaScript (``ScriptDuration``)
and on layout and style (``LayoutDuration``, ``RecalcStyleDuration``), cumulative, in seconds. Read
before a click in the sidebar's navigation and again once the page is ready (see browser_session.py:
script run finished, every Plotly chart drawn, nothing changing for 400 ms), the difference is what
drawing that page cost the browser. The readiness poll itself (a short query every 200 ms) is part of
it, a few milliseconds.

Every page is visited once in navigation order (first visit: Plotly builds each chart from scratch),
then once more (revisit: Streamlit's front end and Plotly are warm, the figures are new objects all
the same). The server runs on ``--server-cores`` and the browser on the others, so neither slows the
other. Budget (DESIGN.md): <= 1.0 s of browser CPU per stage page at ViT-B/16.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from browser_session import CHROMIUM, CHROMIUM_ARGS, choose_random_weights, goto_page, wait_ready  # noqa: E402
from load_test import Replica, parse_cores  # noqa: E402

BUDGET_S = 1.0
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


async def metrics(cdp) -> dict[str, float]:
    got = await cdp.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in got["metrics"] if m["name"] in METRICS}


async def measure(url: str, model: str, timeout: float) -> list[dict]:
    from playwright.async_api import async_playwright

    rows = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1366, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(timeout * 1000)
            cdp = await context.new_cdp_session(page)
            await cdp.send("Performance.enable")
            await page.goto(url + "/")
            await wait_ready(page, {"path": ""}, timeout)
            if model == "random-b16":
                await choose_random_weights(page, timeout)
            links = await page.eval_on_selector_all(
                '[data-testid="stSidebarNav"] a', "els => els.map(a => [new URL(a.href).pathname.replace(/^\\//, ''), a.innerText.trim().split('\\n').pop().trim()])")
            links = [(slug, title) for slug, title in links if slug != "training"]  # a page that polls a trainer
            # the overview is open already: start the cycle on the next page, end it back on the overview
            order = [link for link in links if link[0]] + [link for link in links if not link[0]]
            for visit in ("first", "revisit"):
                for slug, title in order:
                    before = await metrics(cdp)
                    await goto_page(page, slug, None, timeout)
                    after = await metrics(cdp)
                    charts = await page.locator('[data-testid="stPlotlyChart"]').count()
                    row = {"page": title, "slug": slug, "visit": visit, "charts": charts}
                    row.update({name: after[name] - before[name] for name in METRICS})
                    rows.append(row)
                    print(f"  {title:28s} {visit:8s} task {row['TaskDuration']:6.2f} s, script {row['ScriptDuration']:6.2f} s, "
                          f"layout {row['LayoutDuration']:5.2f} s, style {row['RecalcStyleDuration']:5.2f} s ({charts} charts)",
                          flush=True)
        finally:
            await browser.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="both", choices=["default", "random-b16", "both"])
    parser.add_argument("--server-cores", default="0")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    every = set(range(os.cpu_count() or 1))
    server_cores = parse_cores(args.server_cores) & every or every
    os.sched_setaffinity(0, (every - server_cores) or every)  # the browser inherits this

    folder = Path(tempfile.mkdtemp(prefix="vit-browser-cost-"))
    replica = Replica(folder, 1, server_cores)
    report, over = {}, []
    try:
        replica.wait_healthy()
        for model in (["default", "random-b16"] if args.model == "both" else [args.model]):
            print(f"browser CPU per page, model {model}:", flush=True)
            rows = asyncio.run(measure(replica.url, model, args.timeout))
            report[model] = rows
            if model == "random-b16":
                over += [r for r in rows if r["TaskDuration"] > BUDGET_S]
    finally:
        replica.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if "random-b16" in report:
        print(f"budget: <= {BUDGET_S:.1f} s of TaskDuration per stage page at ViT-B/16: "
              + ("OK" if not over else "OVER on " + ", ".join(f"{r['page']} ({r['visit']} visit, "
                                                                f"{r['TaskDuration']:.2f} s)" for r in over)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
