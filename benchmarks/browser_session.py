"""Real Chromium sessions beside the simulated students: page-ready latency, end to end.

    python benchmarks/browser_session.py --url http://127.0.0.1:8501 --browsers 1 --duration 60 --json out.json

``load_test.py`` starts this in its own process on the clients' cores (Playwright's asyncio and
Locust's gevent do not share a process well). Each browser session opens the app, [chooses random
ViT-B/16 weights], uploads its own picture, then visits the stage pages in turn, thinking between
visits, until ``--duration`` is over. A step is timed from the click to the page being ready:

page ready = the script run finished (``data-test-script-state="notRunning"``), no "Running" status
and no spinner, the right page (its path, a heading that is not the previous page's), this session's
picture in the sidebar, every Plotly chart drawn, and the page's element count stable for 400 ms
(polled every 200 ms); the time taken is the start of that stable window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
RANDOM_OPTION = "Random weights (untrained)"

READY_JS = r"""
(want) => {
  const no = () => { window.__vxN = -1; return false; };
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return no();
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  if (status && /running|connecting/i.test(status.innerText)) return no();
  if (document.querySelector('[data-testid="stSpinner"], [data-stale="true"]')) return no();
  if (want.path !== undefined && !location.pathname.replace(/\/$/, '').endsWith(want.path)) return no();
  // a stage page's title, or the Lesson page's step heading (the first heading of the page either way)
  const h1 = document.querySelector('[data-testid="stMain"] h1, [data-testid="stMain"] h2');
  if (!h1) return no();
  if (want.notTitle && h1.textContent.includes(want.notTitle)) return no();
  const caption = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stImageCaption"]')]
      .map(e => e.innerText).join(' | ');
  if (want.name && !caption.includes(want.name + ', as the model sees it')) return no();
  if (want.suffix && !caption.includes(want.suffix)) return no();
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!c.querySelector('.main-svg')) return no();
  const n = document.querySelectorAll('[data-testid]').length;
  const now = Date.now();
  if (window.__vxN !== n) { window.__vxN = n; window.__vxSince = now; return false; }
  return now - window.__vxSince >= 400 ? window.__vxSince : false;
}
"""


async def wait_ready(page, want: dict, timeout: float = 180.0) -> float:
    """Wait until the page is ready (see READY_JS); return that moment as epoch seconds."""
    await page.evaluate("() => { window.__vxN = -1; }")
    handle = await page.wait_for_function(READY_JS, arg=want, polling=200, timeout=timeout * 1000)
    return float(await handle.json_value()) / 1000.0


async def heading(page) -> str:
    return await page.evaluate("() => (document.querySelector('[data-testid=\"stMain\"] h1, [data-testid=\"stMain\"] h2') || {textContent: ''}).textContent")


async def choose_random_weights(page, timeout: float = 180.0) -> None:
    """Pick "Random weights (untrained)" in the sidebar's Weights box and wait for ViT-B/16 at 224 px."""
    await page.locator('[data-testid="stSidebar"] input[role="combobox"][aria-label="Weights"]').click()
    await page.get_by_role("option", name=RANDOM_OPTION).click()
    await wait_ready(page, {"suffix": "(224 x 224)"}, timeout)


async def upload(page, name: str, data: bytes, mime: str, timeout: float = 180.0) -> None:
    field = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploaderDropzoneInput"]')
    await field.set_input_files(files=[{"name": name, "mimeType": mime, "buffer": data}])
    await wait_ready(page, {"name": name}, timeout)


async def goto_page(page, slug: str, name: str | None, timeout: float = 180.0) -> None:
    """Click ``slug`` in the sidebar navigation ("" is the overview) and wait until it is ready."""
    previous = await heading(page)
    await page.locator(f'[data-testid="stSidebarNav"] a[href$="/{slug}"]').first.click()
    want = {"path": f"/{slug}" if slug else "", "notTitle": previous}
    if name:
        want["name"] = name
    await wait_ready(page, want, timeout)


async def one_session(browser, url: str, index: int, args, records: list, errors: list) -> None:
    from students import picture

    rng = random.Random(index)
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(args.timeout * 1000)

    async def timed(what: str, action) -> None:
        start = time.time()
        try:
            await action()
        except Exception as exc:
            errors.append(f"browser {index}: {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            raise
        records.append({"browser": index, "step": what, "seconds": time.time() - start, "started": start})

    try:
        name, data, mime = picture(1000 + index)
        name = f"b{index}-{name}"
        async def open_app():
            await page.goto(url + "/")
            await wait_ready(page, {"path": ""}, args.timeout)

        await timed("open", open_app)
        if args.model == "random-b16":
            await timed("random weights", lambda: choose_random_weights(page, args.timeout))
        await timed("upload", lambda: upload(page, name, data, mime, args.timeout))
        while time.time() < args.deadline:
            for slug in args.pages:
                await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))
                if time.time() >= args.deadline:
                    break
                await timed(f"page /{slug}", lambda: goto_page(page, slug, name, args.timeout))
            exceptions = await page.locator('[data-testid="stException"]').count()
            if exceptions:
                errors.append(f"browser {index}: {exceptions} exception box(es) on the page")
    except Exception:
        pass  # already in errors
    finally:
        await context.close()


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    records, errors = [], []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(one_session(browser, args.url, i, args, records, errors) for i in range(args.browsers)))
        finally:
            await browser.close()
    return {"records": records, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--browsers", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--think", type=float, default=5.0)
    parser.add_argument("--model", default="default", choices=["default", "random-b16"])
    parser.add_argument("--pages", default="lesson,attention,patching,mlp,layers,prediction,",
                        help="URL slugs of the pages to visit in turn (an empty one is the overview)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one step may take")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    args.pages = [p.strip() for p in args.pages.split(",")]
    args.deadline = time.time() + args.duration
    result = asyncio.run(main_async(args))
    args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
