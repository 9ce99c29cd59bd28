"""What the Lesson page costs, measured in one run: server time per step change, figure bytes per step, browser CPU.

    python benchmarks/lesson.py                  # the default model, normal and presenter mode
    python benchmarks/lesson.py --no-browser     # only the server side (AppTest, no Chromium)
    python benchmarks/lesson.py --json lesson.json

Server side (in this process, Streamlit's AppTest): the lesson is walked forward once (first visit: each step
computes and caches its figures), each question revealed with "Just show me", then walked again from the start
(revisit). The time of each step change is the script run it triggers (the sidebar, the page, the figures sent),
plus AppTest's own handling of the messages (a few milliseconds). Figure bytes: the Plotly specs the step sends,
question and reveal.

Browser side (a real server, Chromium): the lesson walked with the right-arrow key, first visit then revisit;
for each step Chrome DevTools' ``Performance.getMetrics`` before the key and once the page is quiet:
``TaskDuration`` (the main thread's busy time), ``ScriptDuration`` and ``ThreadTime`` (the main thread's CPU
time; on a busy machine TaskDuration also counts time spent waiting for a core, so read ThreadTime there).

Budgets (the lesson's issue): a step change <= 0.3 s of server time after the first visit; a step's figures
<= 1 MB; <= 0.5 s of browser CPU per step at the default model. This script reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUDGET_SERVER_S = 0.3
BUDGET_BYTES = 1_000_000
BUDGET_BROWSER_S = 0.5
METRICS = ("TaskDuration", "ScriptDuration", "ThreadTime")


# ---------------------------------------------------------------------------------- the server side
def server_side(presenter: bool) -> list[dict]:
    from streamlit import config

    from app_helpers import APP, ok, payload_bytes
    from streamlit.testing.v1 import AppTest

    config.set_option("client.showErrorDetails", "full")
    at = AppTest.from_file(APP, default_timeout=600)
    if presenter:
        at.session_state["view:presenter"] = True
    ok(at.run())
    t = time.perf_counter()
    ok(at.switch_page("pages/lesson.py").run())
    rows = [{"step": 1, "title": at.header[0].value, "first_s": time.perf_counter() - t}]

    def timed(action) -> float:
        start = time.perf_counter()
        ok(action.run())
        return time.perf_counter() - start

    def reveal(row: dict) -> None:
        row["question_bytes"] = payload_bytes(at)
        shown = [b for b in at.button if b.key and b.key.startswith("lesson:show:")]
        if shown:
            row["reveal_s"] = timed(shown[0].click())
        row["bytes"] = payload_bytes(at)

    reveal(rows[0])
    while not at.button(key="lesson:next").proto.disabled:
        seconds = timed(at.button(key="lesson:next").click())
        rows.append({"step": len(rows) + 1, "title": at.header[0].value, "first_s": seconds})
        reveal(rows[-1])
    for _ in range(len(rows) - 1):  # back to the start (not measured)
        ok(at.button(key="lesson:back").click().run())
    for row in rows[1:]:
        row["revisit_s"] = timed(at.button(key="lesson:next").click())
        assert at.header[0].value == row["title"]
    for row in reversed(rows[:-1]):  # and back again: the Back key's step changes, landing on ``row``
        row["back_s"] = timed(at.button(key="lesson:back").click())
        assert at.header[0].value == row["title"]
    for _ in range(3):  # a few more rounds for steadier numbers (medians below)
        for row in rows[1:]:
            row.setdefault("more_s", []).append(timed(at.button(key="lesson:next").click()))
        for _ in range(len(rows) - 1):
            ok(at.button(key="lesson:back").click().run())
    for row in rows[1:]:
        row["revisit_median_s"] = statistics.median([row["revisit_s"], *row.pop("more_s")])
    return rows


# ---------------------------------------------------------------------------------- the browser side
def browser_side(presenter: bool) -> list[dict]:
    from playwright.sync_api import sync_playwright

    import test_browser as tb

    rows = []
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "lesson-benchmark-server.log"
    with tb._streamlit_server(log) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1024 if presenter else 1366, "height": 768})
            page = context.new_page()
            page.set_default_timeout(300_000)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def metrics() -> dict[str, float]:
                got = cdp.send("Performance.getMetrics")["metrics"]
                return {m["name"]: m["value"] for m in got if m["name"] in METRICS}

            page.goto(url + "/lesson" + ("?presenter=true" if presenter else ""))
            tb._wait_idle(page)
            page.wait_for_timeout(1500)  # a key pressed while the page is still settling can be lost
            count = None
            for visit in ("first", "revisit"):
                if visit == "revisit":
                    for _ in range(count - 1):
                        page.evaluate("() => document.activeElement && document.activeElement.blur()")
                        page.keyboard.press("ArrowLeft")
                        tb._wait_idle(page, 300)
                step = 1
                while True:
                    title = page.locator('[data-testid="stMain"] h2').first.inner_text().strip()
                    if title == "Your score":
                        count = step
                        break
                    before = metrics()
                    page.evaluate("() => document.activeElement && document.activeElement.blur()")
                    page.keyboard.press("ArrowRight")
                    tb._wait_idle(page, 300)
                    tb._no_exception(page, f"step {step + 1}")
                    after = metrics()
                    step += 1
                    now = page.locator('[data-testid="stMain"] h2').first.inner_text().strip()
                    if now == title:
                        raise RuntimeError(f"the right arrow did not leave {title!r}")
                    row = {"visit": visit, "step": step, "title": now,
                           "charts": page.locator('[data-testid="stPlotlyChart"]').count()}
                    row.update({name: after[name] - before[name] for name in METRICS})
                    rows.append(row)
        finally:
            browser.close()
    return rows


# ---------------------------------------------------------------------------------- report
def report(server: list[dict], browser: list[dict], mode: str) -> None:
    print(f"\n== {mode} ==")
    print(f"{'step':>4}  {'title':44} {'first s':>8} {'revisit s':>10} {'back s':>7} {'reveal s':>9} "
          f"{'question KB':>12} {'reveal KB':>10}")
    for row in server:
        print(f"{row['step']:>4}  {row['title'][:44]:44} {row['first_s']:8.3f} "
              f"{row.get('revisit_median_s', float('nan')):10.3f} {row.get('back_s') or float('nan'):7.3f} "
              f"{row.get('reveal_s', float('nan')):9.3f} {row['question_bytes'] / 1024:12.1f} {row['bytes'] / 1024:10.1f}")
    revisits = [r["revisit_median_s"] for r in server[1:]]
    largest = max(max(r["question_bytes"], r["bytes"]) for r in server)
    print(f"step change after the first visit: median {statistics.median(revisits):.3f} s, largest "
          f"{max(revisits):.3f} s (budget {BUDGET_SERVER_S} s); largest step's figures {largest / 1024:.1f} KB "
          f"(budget {BUDGET_BYTES / 1e6:.0f} MB)")
    if browser:
        print(f"\n{'visit':8} {'step':>4}  {'title':44} {'charts':>6} {'TaskDuration':>13} {'ScriptDuration':>15} "
              f"{'ThreadTime':>11}")
        for row in browser:
            print(f"{row['visit']:8} {row['step']:>4}  {row['title'][:44]:44} {row['charts']:>6} "
                  f"{row['TaskDuration']:13.3f} {row['ScriptDuration']:15.3f} {row['ThreadTime']:11.3f}")
        for visit in ("first", "revisit"):
            rows = [r for r in browser if r["visit"] == visit]
            print(f"{visit}: browser main-thread CPU per step: median {statistics.median(r['ThreadTime'] for r in rows):.3f} s, "
                  f"largest {max(r['ThreadTime'] for r in rows):.3f} s; TaskDuration largest "
                  f"{max(r['TaskDuration'] for r in rows):.3f} s (budget {BUDGET_BROWSER_S} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-browser", action="store_true", help="only the server side (no Chromium)")
    parser.add_argument("--mode", choices=("normal", "presenter", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} · load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = {}
    for mode in (("normal", "presenter") if args.mode == "both" else (args.mode,)):
        presenter = mode == "presenter"
        server = server_side(presenter)
        browser = [] if args.no_browser else browser_side(presenter)
        report(server, browser, mode)
        results[mode] = {"server": server, "browser": browser}
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} · load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
