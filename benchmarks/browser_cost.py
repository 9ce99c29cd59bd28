"""What the browser pays: Chromium's own CPU time to draw each page, first visit and revisit.

    python benchmarks/browser_cost.py                       # the default model and random ViT-B/16
    python benchmarks/browser_cost.py --model random-b16 --json cost.json
    python benchmarks/browser_cost.py --model random-b16 --repeat 3   # medians of 3 fresh browsers

Chrome DevTools' ``Performance.getMetrics`` (through Playwright's CDP session) reports the time the
page's renderer main thread spent on tasks (``TaskDuration``), running JavaScript (``ScriptDuration``)
and on layout and style (``LayoutDuration``, ``RecalcStyleDuration``), cumulative, in seconds; these
are wall-clock durations of the main thread's tasks, so they are only the browser's own CPU on a
quiet machine: the CPU time of that thread (``ThreadTime``) and of the whole renderer process
(``ProcessTime``, with its compositor and raster threads) are printed beside them. Read
before a click in the sidebar's navigation and again once the page is ready (see browser_session.py:
script run finished, every Plotly chart drawn, nothing changing for 400 ms), the difference is what
drawing that page cost the browser. The readiness poll itself (a short query every 200 ms) is part of
it, a few milliseconds.

Every page is visited once in navigation order (first visit: Plotly builds each chart from scratch),
then once more (revisit: Streamlit's front end and Plotly are warm, the figures are new objects all
the same). The server runs on ``--server-cores`` and the browser on the others, so neither slows the
other. Budget (README, "What the browser pays"; tests/perf_budgets.py): <= 1.0 s of browser CPU per
stage page at ViT-B/16.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
sys.path.append(str(HERE.parent / "tests"))  # perf_budgets: every budget in one place

from browser_session import CHROMIUM, CHROMIUM_ARGS, choose_random_weights, goto_page, wait_ready  # noqa: E402
from load_test import Replica, parse_cores  # noqa: E402
from perf_budgets import BROWSER_CPU_S as BUDGET_S  # noqa: E402
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "ThreadTime", "ProcessTime")


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
                    print(f"  {title:26s} {visit:8s} task {row['TaskDuration']:5.2f} s, script {row['ScriptDuration']:5.2f} s, "
                          f"layout {row['LayoutDuration']:4.2f} s, style {row['RecalcStyleDuration']:4.2f} s; main-thread CPU "
                          f"{row['ThreadTime']:5.2f} s, renderer CPU {row['ProcessTime']:5.2f} s ({charts} charts)", flush=True)
        finally:
            await browser.close()
    return rows


def medians(runs: list[list[dict]]) -> list[dict]:
    """Per page and visit, the median of each metric over fresh-browser runs (and its lowest and highest)."""
    rows = []
    for same in zip(*runs):
        assert len({(r["slug"], r["visit"]) for r in same}) == 1, "the runs visited the pages in another order"
        row = {key: same[0][key] for key in ("page", "slug", "visit", "charts")}
        for name in METRICS:
            values = [r[name] for r in same]
            row[name] = statistics.median(values)
            row[name + "_range"] = [min(values), max(values)]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- figure by figure
# A one-widget Streamlit app that draws figure number N (a JSON file beside it) with st.plotly_chart, so
# each figure is drawn by Streamlit's own front end exactly as in the app, one at a time.
FIGURE_APP = """
import json
from pathlib import Path

import plotly.io as pio
import streamlit as st

st.set_page_config(layout="wide")
folder = Path(__file__).parent
st.title("One figure")
number = st.number_input("figure", min_value=-1, value=-1, step=1, key="figure")
if number >= 0:
    spec = json.loads((folder / f"figure{number:03d}.json").read_text())
    st.plotly_chart(pio.from_json(json.dumps(spec["figure"])), key=f"figure{number}",
                    on_select="rerun" if spec["clickable"] else "ignore",
                    selection_mode="points")
"""


def page_figures(url: str, model: str, timeout: float) -> dict[str, list[tuple[str, str, str]]]:
    """Each page's Plotly figures as the server sends them: page -> [(key, title, spec JSON)]."""
    import st_client

    figures: dict[str, list] = {}
    current: list = []
    original = st_client.StreamlitSession._receive

    def spy(self, deadline):
        msg = original(self, deadline)
        if msg.WhichOneof("type") == "delta" and msg.delta.new_element.WhichOneof("type") == "plotly_chart":
            chart = msg.delta.new_element.plotly_chart
            layout = json.loads(chart.spec).get("layout", {})
            title = layout.get("title", "")
            title = title.get("text", "") if isinstance(title, dict) else str(title)
            current.append((chart.id.split("-", 2)[-1], title, chart.spec, len(chart.selection_mode) > 0))
        return msg

    st_client.StreamlitSession._receive = spy
    try:
        session = st_client.StreamlitSession(url, timeout=timeout, fetch_assets=False)
        session.open()
        if model == "random-b16":
            weights = session.widget("w:model_choice")
            session.set_widget("w:model_choice", next(o for o in weights.options if o.startswith("Random")))
        for slug in [p for p in session.pages if p] + [""]:
            if slug == "training":
                continue
            current.clear()
            session.switch_page(slug)
            figures[slug or "overview"] = list(current)
        session.close()
    finally:
        st_client.StreamlitSession._receive = original
    return figures


async def figure_costs(figures: dict[str, list], server_cores: set[int], timeout: float) -> list[dict]:
    """Each figure drawn alone by Streamlit's front end: the renderer's CPU for that rerun, less an empty rerun's."""
    from playwright.async_api import async_playwright

    folder = Path(tempfile.mkdtemp(prefix="vit-figures-"))
    index = []
    for slug, items in figures.items():
        for key, title, spec, clickable in items:
            (folder / f"figure{len(index):03d}.json").write_text(
                json.dumps({"figure": json.loads(spec), "clickable": clickable}))
            index.append((slug, key, title, spec))
    (folder / "figure_app.py").write_text(FIGURE_APP)
    replica = Replica(folder, 9, server_cores, script=str(folder / "figure_app.py"))
    rows = []
    try:
        replica.wait_healthy()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1366, "height": 900})
                page.set_default_timeout(timeout * 1000)
                cdp = await page.context.new_cdp_session(page)
                await cdp.send("Performance.enable")
                await page.goto(replica.url + "/")
                await wait_ready(page, {}, timeout)
                field = page.locator('[data-testid="stNumberInput"] input')

                async def show(number: int) -> dict[str, float]:
                    before = await metrics(cdp)
                    await field.fill(str(number))
                    await field.press("Enter")
                    await page.wait_for_function(
                        "n => n < 0 ? !document.querySelector('[data-testid=stPlotlyChart]') : "
                        "!!document.querySelector('[data-testid=stPlotlyChart] .main-svg')", arg=number)
                    await wait_ready(page, {}, timeout)
                    after = await metrics(cdp)
                    return {name: after[name] - before[name] for name in METRICS}

                empty = []
                for number, (slug, key, title, spec) in enumerate(index):
                    drawn = await show(number)
                    empty.append(await show(-1))
                    data = json.loads(spec).get("data", [])
                    rows.append({"page": slug, "figure": key, "title": title, "traces": len(data),
                                 "kinds": sorted({t.get("type", "scatter") for t in data}), "kB": len(spec) / 1e3,
                                 **{name: drawn[name] for name in METRICS}})
                base = {name: sorted(e[name] for e in empty)[len(empty) // 2] for name in METRICS}
                for row in rows:  # what the figure itself costs: less the median rerun that drew nothing
                    for name in METRICS:
                        row[name + "_net"] = row[name] - base[name]
                rows.append({"page": "-", "figure": "(empty rerun)", "title": "median of the reruns without a figure",
                             "traces": 0, "kinds": [], "kB": 0.0, **base})
            finally:
                await browser.close()
    finally:
        replica.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="both", choices=["default", "random-b16", "both"])
    parser.add_argument("--server-cores", default="0")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=1,
                        help="visit the pages in N fresh browsers, one after another, and judge the medians")
    parser.add_argument("--per-figure", action="store_true",
                        help="also draw every figure alone with plotly.js and report its cost (which figure is heavy)")
    parser.add_argument("--figures-only", action="store_true", help="only the figure-by-figure costs")
    args = parser.parse_args()
    args.per_figure = args.per_figure or args.figures_only
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
            runs = [] if args.figures_only else [asyncio.run(measure(replica.url, model, args.timeout))
                                                 for _ in range(args.repeat)]
            rows = medians(runs) if runs else []
            report[model] = rows
            if len(runs) > 1:
                report[model + " runs"] = runs
                print(f"median of {len(runs)} fresh browsers, model {model} (lowest to highest TaskDuration):")
                for row in rows:
                    low, high = row["TaskDuration_range"]
                    print(f"  {row['page']:26s} {row['visit']:8s} task {row['TaskDuration']:5.2f} s ({low:.2f} to "
                          f"{high:.2f}), main-thread CPU {row['ThreadTime']:5.2f} s ({row['charts']} charts)")
            if model == "random-b16":
                over += [r for r in rows if r["TaskDuration"] > BUDGET_S]
            if args.per_figure:
                costs = asyncio.run(figure_costs(page_figures(replica.url, model, args.timeout), server_cores,
                                                 args.timeout))
                report[model + " figures"] = costs
                print(f"every figure drawn alone by Streamlit's front end, model {model} (net: less the median "
                      f"rerun without a figure, the last line):")
                for c in sorted(costs, key=lambda c: (c["page"], -c.get("ThreadTime_net", 0))):
                    print(f"  {c['page']:12s} {c['figure']:22s} task {c.get('TaskDuration_net', c['TaskDuration']):5.2f} s, "
                          f"main-thread CPU {c.get('ThreadTime_net', c['ThreadTime']):5.2f} s, {c['traces']:3d} traces "
                          f"{'/'.join(c['kinds']):24s} {c['kB']:6.0f} kB  {c['title'][:48]}")
    finally:
        replica.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if "random-b16" in report:
        print(f"budget: <= {BUDGET_S:.1f} s of TaskDuration per stage page at ViT-B/16"
              + (f" (medians of {args.repeat} browsers)" if args.repeat > 1 else "") + ": "
              + ("OK" if not over else "OVER on " + ", ".join(f"{r['page']} ({r['visit']} visit, "
                                                                f"{r['TaskDuration']:.2f} s)" for r in over)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
