"""Load test: many students on one server, each with their own picture and settings.

    python benchmarks/load_test.py                 # 20 concurrent sessions
    python benchmarks/load_test.py --quick         # 3 sessions, a smoke test
    python benchmarks/load_test.py --sessions 30 --pages attention,mlp,prediction

What it does, on the loopback interface only, bounded in sessions and time, and cleaning up after
itself:

1. starts the app (``streamlit run app.py`` on a free port, the repository's config.toml) and a
   thread that samples the resident memory of the server process and its children from /proc;
2. gives every session its own picture (the sample photos, then synthetic shapes from
   ``vit_explain.synthetic.sample``) and its own patch size;
3. runs every session ALONE first (the reference), recording what it sees: the sidebar caption
   "<name>, as the model sees it", a hash of the picture the sidebar shows, the overview's top-5
   prediction and the chart titles of every page;
4. runs all sessions AT ONCE (one Chromium, one browser context per session): open the app, choose
   the model, set the patch size, upload the picture, visit three stage pages, return to the
   overview; every step waits until the page is ready and records how long that took;
5. reports p50/p95 page-ready latency, errors, peak server memory and CPU, and checks isolation:
   every session must see exactly what it saw alone (never another session's picture or numbers).

Page-ready means: the script run finished (``data-test-script-state="notRunning"`` on the app
root), no "Running" status widget and no spinner, the expected content is on screen (the page
title, this session's image caption, the token count of its patch size), every Plotly chart has
been drawn, and the page's element count has been stable for 400 ms (polled every 200 ms) (the time reported is the
start of that stable window). An error is any ``stException`` element, a step that timed out, a
traceback in the server log or an isolation mismatch.

Model: ``--model auto`` uses the bundled model if ``assets/models/shapes`` exists; otherwise a small
random-weight checkpoint of the same shape, saved to a temporary folder and loaded through the
sidebar's "checkpoint folder" option. ``--model random-b16`` runs random ViT-B/16 weights (the
heaviest case; every patch size is a different 86M-parameter model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
READY_BUDGET_S = 10.0  # p95 budget from the issue
STEP_TIMEOUT_S = 180.0
LOCAL_OPTION = "A checkpoint folder on this computer"

# ---------------------------------------------------------------------------------- in the page
# Resolves (to the start of the stable window, ms since the epoch) once the page is ready; see the
# module docstring. ``want`` holds the content to expect: path, title (or notTitle), name, suffix,
# tokens, and charts (how many Plotly charts the same step drew in the session's single-user run).
READY_JS = r"""
(want) => {
  const no = () => { window.__vxN = -1; return false; };
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return no();
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  if (status && /running|connecting/i.test(status.innerText)) return no();
  if (document.querySelector('[data-testid="stSpinner"], [data-stale="true"]')) return no();
  if (want.path !== undefined && !location.pathname.replace(/\/$/, '').endsWith(want.path)) return no();
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  if (!h1) return no();
  if (want.title && !h1.textContent.includes(want.title)) return no();
  if (want.notTitle && h1.textContent.includes(want.notTitle)) return no();
  const caption = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stImageCaption"]')]
      .map(e => e.innerText).join(' | ');
  if (want.name && !caption.includes(want.name + ', as the model sees it')) return no();
  if (want.suffix && !caption.includes(want.suffix)) return no();
  if (want.tokens) {
    const m = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stMetric"]')]
        .map(e => e.innerText.split('\n').filter(Boolean)).find(p => p[0] === 'Tokens');
    if (!m || m[m.length - 1].replace(/,/g, '') !== String(want.tokens)) return no();
  }
  const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]');
  if (want.charts && charts.length < want.charts) return no();
  for (const c of charts)
    if (!c.querySelector('.main-svg')) return no();
  const n = document.querySelectorAll('[data-testid]').length;
  const now = Date.now();
  if (window.__vxN !== n) { window.__vxN = n; window.__vxSince = now; return false; }
  return now - window.__vxSince >= 400 ? window.__vxSince : false;
}
"""

# Installed in every page before Streamlit loads: records each change of the script-run state, so
# the moment the server finished ("notRunning") can be told apart from the moment the page was drawn.
STATE_LOG_JS = r"""
window.__vxStates = [];
new MutationObserver(ms => { for (const m of ms) window.__vxStates.push([Date.now(), m.target.getAttribute('data-test-script-state')]); })
  .observe(document, {attributes: true, subtree: true, attributeFilter: ['data-test-script-state']});
"""

# What a session sees on the current page (compared with its own single-user run).
SEEN_JS = r"""
async () => {
  const sidebar = document.querySelector('[data-testid="stSidebar"]');
  const caption = [...sidebar.querySelectorAll('[data-testid="stImageCaption"]')].map(e => e.innerText).join(' | ');
  let picture = null;
  const img = sidebar.querySelector('[data-testid="stImage"] img');
  if (img) {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    picture = [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('');
  }
  const titles = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')].map(t => t.textContent);
  let prediction = null;
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    const t = c.querySelector('.gtitle');
    if (!t || !/prediction/i.test(t.textContent)) continue;
    const gd = c.querySelector('.js-plotly-plot');
    if (gd && gd._fullData) prediction = gd._fullData.map(tr => [
      Array.from(tr.y || []).map(v => typeof v === 'number' ? v.toFixed(4) : String(v)),
      Array.from(tr.x || []).map(v => typeof v === 'number' ? v.toFixed(4) : String(v))]);
    break;
  }
  const exceptions = [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 300));
  const errors = [...document.querySelectorAll('[data-testid="stAlertContentError"]')].map(e => e.innerText.slice(0, 300));
  const h1 = (document.querySelector('[data-testid="stMain"] h1') || {textContent: ''}).textContent;
  const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]').length;
  return {caption, picture, titles, prediction, exceptions, errors, h1, charts};
}
"""


# ---------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat.

    The browser's own figure misses the renderer processes that exited when their context closed;
    this one misses nothing, so it tells whether the cores were saturated.
    """
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class MemorySampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = rss_bytes(process_tree(self.pid))
            self.samples.append((time.time(), rss))
            self.peak = max(self.peak, rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Server:
    """``streamlit run app.py`` on a free loopback port, in its own process group."""

    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, **(extra_env or {}))
        env.setdefault("HF_HUB_OFFLINE", "1")
        self._log = open(log_path, "w")
        self.timing_path = log_path.with_suffix(".runs.jsonl")
        self.timing_path.write_text("")
        env["VIT_LOAD_TIMING"] = str(self.timing_path)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-timed", "run", "app.py", "--server.port",
             str(self.port), "--server.headless", "true", "--server.address", "127.0.0.1"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the server did not become healthy in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def script_runs(self, since: float = 0.0) -> list[dict]:
        """Every script run the server timed (see serve_timed) that started after ``since``."""
        runs = []
        for line in self.timing_path.read_text().splitlines():
            try:
                run = json.loads(line)
            except json.JSONDecodeError:
                continue
            if run["start"] >= since:
                runs.append(run)
        return runs

    def tracebacks(self) -> list[str]:
        """The final error line of every traceback in the server log (plain or rich-formatted)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))
        found = []
        for match in re.finditer(r"Traceback \(most recent call last\)", text):
            tail = text[match.end():match.end() + 20000]
            last = re.search(r"^\s*((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$", tail, re.M)
            found.append(last.group(1).strip()[:300] if last else tail[:300])
        return found


# ---------------------------------------------------------------------------------- sessions
@dataclass
class Spec:
    index: int
    image_name: str
    image_path: Path
    patch_size: int
    image_size: int

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass
class Result:
    spec: Spec
    latencies: dict[str, float] = field(default_factory=dict)  # step -> seconds
    seen: dict[str, dict] = field(default_factory=dict)  # page -> what it showed
    errors: list[str] = field(default_factory=list)
    failed_in_a_row: int = 0
    server_done: dict[str, float] = field(default_factory=dict)  # step -> seconds until the run finished
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # step -> (server, browser) CPU s


def make_inputs(n: int, folder: Path, image_size: int, patch_sizes: list[int]) -> list[Spec]:
    """One picture and one patch size per session: the sample photos first, then synthetic shapes."""
    from PIL import Image

    from vit_explain.synthetic import sample

    samples = sorted(p for p in (ROOT / "assets" / "samples").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    specs = []
    for i in range(n):
        if i < len(samples):
            name = f"s{i:02d}-{samples[i].name}"
            path = folder / name
            path.write_bytes(samples[i].read_bytes())
        else:
            images, _, _ = sample(1, 9000 + i, image_size=160)
            name = f"s{i:02d}-shapes.png"
            path = folder / name
            Image.fromarray(images[0]).save(path)
        specs.append(Spec(i, name, path, patch_sizes[i % len(patch_sizes)], image_size))
    return specs


async def wait_ready(page, want: dict, timeout: float | None = None) -> float:
    """Wait until the page is ready (see READY_JS); return that moment as epoch seconds."""
    await page.evaluate("() => { window.__vxN = -1; }")
    timeout = STEP_TIMEOUT_S if timeout is None else timeout
    handle = await page.wait_for_function(READY_JS, arg=want, polling=200, timeout=timeout * 1000)
    return float(await handle.json_value()) / 1000.0


VERBOSE = False
SHOTS: Path | None = None  # screenshots of failed steps go here (--shots)
LOAD_BEFORE = "?"
METER = None  # during the one-at-a-time runs: () -> (server CPU s, browser CPU s)


async def step(result: Result, name: str, page, action, want: dict) -> None:
    cpu_before = METER() if METER else None
    start = time.time()
    try:
        await action()
        acted = time.time()
        ready = await wait_ready(page, want)
        result.latencies[name] = max(0.0, ready - start)
        states = await page.evaluate("() => window.__vxStates || []")
        done = [t / 1000.0 for t, state in states if state == "notRunning" and start * 1000 <= t <= ready * 1000 + 1]
        if done:
            result.server_done[name] = done[-1] - start
        if cpu_before is not None:
            after = METER()
            result.cpu[name] = (after[0] - cpu_before[0], after[1] - cpu_before[1])
    except Exception as exc:  # a timeout or a broken page: an error, the session goes on
        result.errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        result.failed_in_a_row += 1
        try:  # what was on screen: alerts, and a screenshot for the report
            alerts = await page.evaluate(
                "() => [...document.querySelectorAll('[data-testid=\"stAlert\"], [data-testid=\"stException\"]')]"
                ".map(e => e.innerText.slice(0, 200))")
            if alerts:
                result.errors[-1] += f" (on screen: {alerts})"
            if SHOTS is not None:
                SHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SHOTS / f"session{result.spec.index:02d}-{name.replace(' ', '_')}.png"))
        except Exception:
            pass
        if VERBOSE:
            print(f"    [{result.spec.index}] {name}: {result.errors[-1]}", flush=True)
        if result.failed_in_a_row >= 2:
            raise RuntimeError("two steps in a row failed; this session stops")
        return
    result.failed_in_a_row = 0
    if VERBOSE:
        print(f"    [{result.spec.index}] {name}: {result.latencies[name]:.2f} s (the action itself "
              f"{acted - start:.2f} s)", flush=True)
    seen = await page.evaluate(SEEN_JS)
    result.seen[name] = seen
    for text in seen["exceptions"]:
        result.errors.append(f"{name}: exception on the page: {text!r}")


async def set_select_slider(page, label: str, target: str) -> None:
    """Move a sidebar select_slider to ``target`` with the keyboard (as a keyboard user would)."""
    thumb = page.locator(f'[data-testid="stSidebar"] input[type="range"][aria-label="{label}"]')
    await thumb.focus()
    for _ in range(40):
        now = await thumb.get_attribute("aria-valuetext")
        if now == target:
            return
        values = [int(v) for v in re.findall(r"\d+", now or "")]
        key = "ArrowRight" if values and int(target) > values[0] else "ArrowLeft"
        await thumb.press(key)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"could not move {label!r} to {target}")


async def run_session(browser, base_url: str, spec: Spec, model: dict, pages: list[tuple[str, str]],
                      titles: dict[str, str] | None, stagger: float, reference: Result | None = None) -> Result:
    """One student: open, (choose the model), set the patch size, upload, visit pages, back to the overview."""
    result = Result(spec)
    alone = reference.seen if reference is not None else {}

    def expect(step_name: str, want: dict) -> dict:
        charts = alone.get(step_name, {}).get("charts")
        return dict(want, charts=charts) if charts else want

    await asyncio.sleep(stagger)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(STATE_LOG_JS)
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_S * 1000)
    overview_title = (titles or {}).get("")
    try:
        await step(result, "open", page, lambda: page.goto(base_url + "/"), {"path": "", "title": overview_title})
        if model.get("local_path"):
            async def choose_local():
                await page.locator('[data-testid="stSidebar"] input[role="combobox"][aria-label="Weights"]').click()
                await page.get_by_role("option", name=LOCAL_OPTION).click()
                field = page.locator('[data-testid="stSidebar"] [data-testid="stTextInput"] input')
                await field.fill(model["local_path"])
                await field.press("Enter")
            await step(result, "model", page, choose_local,
                       {"path": "", "suffix": f"({spec.image_size} x {spec.image_size})", "title": overview_title})
        await step(result, "patch size", page,
                   lambda: set_select_slider(page, "Patch size (pixels)", str(spec.patch_size)),
                   {"path": "", "tokens": spec.tokens, "title": overview_title})
        upload = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploaderDropzoneInput"]')
        await step(result, "upload", page, lambda: upload.set_input_files(str(spec.image_path)),
                   expect("upload", {"path": "", "name": spec.image_name, "tokens": spec.tokens, "title": overview_title}))
        previous = overview_title or result.seen.get("upload", {}).get("h1")
        for slug, _ in pages + [("", "Overview")]:
            link = page.locator(f'[data-testid="stSidebarNav"] a[href$="/{slug}"]').first
            want = {"path": f"/{slug}" if slug else "", "name": spec.image_name, "tokens": spec.tokens}
            if titles and slug in titles:
                want["title"] = titles[slug]
            elif previous:
                want["notTitle"] = previous
            await step(result, f"page {slug or 'overview'}", page, link.click, expect(f"page {slug or 'overview'}", want))
            previous = result.seen.get(f"page {slug or 'overview'}", {}).get("h1", previous)
    except Exception as exc:
        result.errors.append(f"session: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await context.close()
    return result


def compare(reference: Result, concurrent: Result) -> list[str]:
    """Differences between what a session saw alone and under load (isolation)."""
    problems = []
    for step_name, alone in reference.seen.items():
        if not step_name.startswith(("page", "upload")):
            continue
        crowd = concurrent.seen.get(step_name)
        if crowd is None:
            continue  # that step failed: counted as an error already
        for key in ("caption", "picture", "prediction", "titles"):
            if alone.get(key) != crowd.get(key):
                problems.append(f"{step_name}: {key} differs: alone {str(alone.get(key))[:120]!r}, "
                                f"under load {str(crowd.get(key))[:120]!r}")
        if reference.spec.image_name not in (crowd.get("caption") or ""):
            problems.append(f"{step_name}: caption shows {crowd.get('caption')!r}")
    return problems


# ---------------------------------------------------------------------------------- main
def choose_model(kind: str, tmp: Path) -> dict:
    bundled = ROOT / "assets" / "models" / "shapes" / "config.json"
    if kind == "auto":
        kind = "bundled" if bundled.is_file() else "local-small"
    if kind == "bundled":
        if not bundled.is_file():
            raise SystemExit("assets/models/shapes does not exist; use --model local-small or random-b16")
        from vit_explain.weights import load_checkpoint

        config = load_checkpoint(ROOT / "assets" / "models" / "shapes").config
        return {"kind": "bundled", "image_size": config.image_size, "patch_size": config.patch_size}
    if kind == "local-small":
        from vit_explain import ViTForImageClassification
        from vit_explain.train import default_config
        from vit_explain.weights import save_checkpoint

        config = default_config()
        model = ViTForImageClassification(config)
        model.init_weights(seed=0)
        save_checkpoint(model.eval(), tmp / "small-random")
        return {"kind": "local-small (random weights, the bundled model's shape)", "local_path": str(tmp / "small-random"),
                "image_size": config.image_size, "patch_size": config.patch_size}
    if kind == "random-b16":
        return {"kind": "random ViT-B/16", "image_size": 224, "patch_size": 16}
    raise SystemExit(f"unknown --model {kind}")


def patch_choices(image_size: int, default: int) -> list[int]:
    from vit_explain.pipeline import MAX_TOKENS

    allowed = [p for p in range(2, image_size // 2 + 1) if image_size % p == 0 and (image_size // p) ** 2 + 1 <= MAX_TOKENS]
    # the model's own patch size first, then its neighbours; skip the extreme 1025-token end
    near = sorted(allowed, key=lambda p: (abs(allowed.index(p) - allowed.index(default)), -p))
    return [p for p in near if (image_size // p) ** 2 + 1 <= 400][:4] or [default]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def drive(args, server: Server, specs: list[Spec], model: dict, pages: list[tuple[str, str]]):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        executable = CHROMIUM
        if args.nice_browser:  # every browser process at the lowest CPU priority: the server goes first
            executable = str(Path(args.tmp) / "chromium-nice")
            Path(executable).write_text(f'#!/bin/sh\nexec nice -n 19 {CHROMIUM} "$@"\n')
            os.chmod(executable, 0o755)
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            # 1. every session alone, one after another: the reference of what it must see
            print(f"reference runs: {len(specs)} sessions, one at a time ...", flush=True)
            references, titles = [], None
            global METER

            def meter() -> tuple[float, float]:
                helpers = [p for p in process_tree(os.getpid()) if p != os.getpid()]
                return cpu_seconds(process_tree(server.proc.pid)), cpu_seconds(helpers)

            METER = meter
            for spec in specs:
                ref = await run_session(browser, server.url, spec, model, pages, titles, 0.0)
                references.append(ref)
                if titles is None and not ref.errors:
                    titles = {"": ref.seen.get("open", {}).get("h1", "")}
                    titles.update({slug: ref.seen.get(f"page {slug}", {}).get("h1", "") for slug, _ in pages})
                    titles = {k: v for k, v in titles.items() if v}
                print(f"  {spec.image_name:28s} patch {spec.patch_size:3d}: "
                      f"{'ok' if not ref.errors else ref.errors}", flush=True)

            METER = None
            # 2. all sessions at once
            print(f"concurrent run: {len(specs)} sessions at once ...", flush=True)
            cpu_before = cpu_seconds(process_tree(server.proc.pid))
            machine_before = machine_busy_seconds()
            browser_pids = [p for p in process_tree(os.getpid()) if p != os.getpid()]
            browser_cpu_before = cpu_seconds(browser_pids)
            t0 = time.time()
            args.concurrent_start = t0
            rng = random.Random(0)
            results = await asyncio.wait_for(
                asyncio.gather(*(run_session(browser, server.url, s, model, pages, titles, rng.uniform(0, args.stagger), ref)
                                 for s, ref in zip(specs, references))),
                timeout=args.timeout,
            )
            wall = time.time() - t0
            cpu = cpu_seconds(process_tree(server.proc.pid)) - cpu_before
            browser_pids = [p for p in process_tree(os.getpid()) if p != os.getpid()]
            browser_cpu = cpu_seconds(browser_pids) - browser_cpu_before
            args.machine_busy = machine_busy_seconds() - machine_before

            # 3. the 200 MB upload, refused by the browser before it reaches the server
            limit_message = None
            if args.upload_limit_check:
                limit_message = await upload_limit_check(browser, server.url, Path(args.tmp), titles)
        finally:
            await browser.close()
    return references, list(results), wall, cpu, browser_cpu, limit_message


async def upload_limit_check(browser, base_url: str, tmp: Path, titles) -> str:
    big = tmp / "holiday-200MB.jpg"
    with open(big, "wb") as fh:  # sparse: no 200 MB written to disk
        fh.truncate(200 * 1024 * 1024)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(base_url + "/")
        await wait_ready(page, {"path": "", "title": (titles or {}).get("")})
        await page.locator('[data-testid="stSidebar"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(big))
        box = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploader"]')
        await page.wait_for_function(
            "() => /MB|too large|smaller/i.test(document.querySelector('[data-testid=\"stSidebar\"] "
            "[data-testid=\"stFileUploader\"]').innerText.split('\\n').slice(2).join(' '))", timeout=60_000)
        text = " ".join((await box.inner_text()).split())
        caption = await page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stSidebar\"] [data-testid=\"stImageCaption\"]')].map(e => e.innerText).join(' | ')")
        return f"{text}  (the sidebar still shows: {caption})"
    except Exception as exc:
        return f"NOT CONFIRMED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        await context.close()
        big.unlink(missing_ok=True)


def serve_timed(argv: list[str]) -> None:
    """The server process: ``streamlit run`` itself, with every script run timed.

    Streamlit does not log how long a run takes, so this wraps ``ScriptRunner._run_script`` (start and
    end of each full or fragment run, per session) and appends one JSON line per run to the file named
    by ``VIT_LOAD_TIMING``. That separates the server's share of the latency from the browsers', which
    share this machine's cores in the test but sit on the students' laptops in a classroom.
    """
    import streamlit.web.cli as cli
    from streamlit.runtime.scriptrunner import script_runner

    path, lock = os.environ["VIT_LOAD_TIMING"], threading.Lock()
    original = script_runner.ScriptRunner._run_script

    def timed(self, rerun_data):
        start, cpu = time.time(), time.thread_time()
        try:
            return original(self, rerun_data)
        finally:
            record = {"start": start, "end": time.time(), "thread_cpu": time.thread_time() - cpu,
                      "session": self._session_id, "page": rerun_data.page_name or "",
                      "fragment": bool(rerun_data.fragment_id_queue or rerun_data.fragment_id)}
            with lock, open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    script_runner.ScriptRunner._run_script = timed
    sys.argv = ["streamlit", *argv]
    cli.main()


def main() -> int:
    global VERBOSE, STEP_TIMEOUT_S, SHOTS, LOAD_BEFORE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 sessions")
    parser.add_argument("--model", default="auto", choices=["auto", "bundled", "local-small", "random-b16"])
    parser.add_argument("--pages", default="patching,attention,layers", help="three stage pages (URL slugs)")
    parser.add_argument("--stagger", type=float, default=2.0, help="sessions start within this many seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on the concurrent run after this")
    parser.add_argument("--no-upload-limit-check", dest="upload_limit_check", action="store_false",
                        help="skip the 200 MB upload through the browser")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--step-timeout", type=float, default=STEP_TIMEOUT_S, help="seconds one step may take")
    parser.add_argument("--verbose", action="store_true", help="print every step as it completes")
    parser.add_argument("--nice-browser", action="store_true",
                        help="run Chromium at nice 19, so the server is measured as if the browsers were on the "
                             "students' own laptops (they still share the 2 cores)")
    parser.add_argument("--log", type=Path, help="keep the server's log in this file")
    parser.add_argument("--only", help="debugging: run only these session numbers (comma-separated)")
    parser.add_argument("--shots", type=Path, help="save a screenshot of every failed step in this folder")
    args = parser.parse_args()
    VERBOSE, STEP_TIMEOUT_S, SHOTS = args.verbose, args.step_timeout, args.shots

    def stop_on_sigterm(signum, frame):  # `timeout` or Ctrl-C: still stop the server and browser
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    n = 3 if args.quick else args.sessions
    if not 1 <= n <= 40:
        raise SystemExit("--sessions must be between 1 and 40 (one machine, one browser)")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")

    with tempfile.TemporaryDirectory(prefix="vit-load-") as tmp_name:
        tmp = Path(tmp_name)
        args.tmp = tmp_name
        model = choose_model(args.model, tmp)
        patches = patch_choices(model["image_size"], model["patch_size"])
        specs = make_inputs(n, tmp, model["image_size"], patches)
        if args.only:
            keep = {int(i) for i in args.only.split(",")}
            specs = [s for s in specs if s.index in keep]
            n = len(specs)
        pages = [(slug.strip(), slug.strip()) for slug in args.pages.split(",") if slug.strip()]
        LOAD_BEFORE = " ".join(open("/proc/loadavg").read().split()[:3])
        server = Server(args.log or tmp / "server.log")
        sampler = None
        try:
            server.wait_healthy()
            sampler = MemorySampler(server.proc.pid)
            sampler.start()
            references, results, wall, cpu, browser_cpu, limit_message = asyncio.run(drive(args, server, specs, model, pages))
        finally:
            if sampler is not None:
                sampler.stop()
            server.stop()
        tracebacks = server.tracebacks()
        runs = server.script_runs(since=getattr(args, "concurrent_start", 0.0))  # before the folder goes

    # ------------------------------------------------------------------ report
    page_steps = [s for s in ("upload",) + tuple(f"page {slug}" for slug, _ in pages) + ("page overview",)]
    visits = [r.latencies[s] for r in results for s in page_steps if s in r.latencies]
    by_step = {s: [r.latencies[s] for r in results if s in r.latencies] for s in ["open", "model", "patch size"] + page_steps}
    errors = [f"session {r.spec.index} ({r.spec.image_name}): {e}" for r in results for e in r.errors]
    reference_errors = [f"session {r.spec.index} alone: {e}" for r in references for e in r.errors]
    isolation = [f"session {c.spec.index} ({c.spec.image_name}): {p}"
                 for ref, c in zip(references, results) if not ref.errors for p in compare(ref, c)]
    expected_visits = len(results) * len(page_steps)
    p50, p95 = percentile(visits, 0.5), percentile(visits, 0.95)

    print()
    print(f"vit-explain load test: {n} concurrent sessions, model: {model['kind']}, "
          f"patch sizes {sorted({s.patch_size for s in specs})}, pages: upload -> "
          f"{' -> '.join(slug for slug, _ in pages)} -> overview")
    print(f"machine: {os.cpu_count()} cores; one Chromium{' at nice 19' if args.nice_browser else ''}, one context per "
          f"session; all on 127.0.0.1; load average before the run {LOAD_BEFORE}")
    busy = getattr(args, "machine_busy", float("nan"))
    print(f"concurrent run wall time: {wall:.1f} s; server CPU {cpu:.1f} s ({cpu / wall:.2f} cores), "
          f"browser CPU {browser_cpu:.1f} s ({browser_cpu / wall:.2f} cores, live processes only); whole machine "
          f"busy {busy:.1f} s ({busy / wall:.2f} of {os.cpu_count()} cores)")
    print()
    print("page-ready latency under load (server done = the script run finished, before the browser drew it);")
    print("CPU per step = one session alone (median over the single-user runs), server and browser:")
    print(f"{'step':22s} {'n':>4s} {'p50 s':>8s} {'p95 s':>8s} {'max s':>8s} {'server done p50/p95':>20s} "
          f"{'CPU server':>11s} {'CPU browser':>12s}")
    for name, values in by_step.items():
        if values:
            done = [r.server_done[name] for r in results if name in r.server_done]
            cpu = [r.cpu[name] for r in references if name in r.cpu]
            cpu_s = statistics.median(c[0] for c in cpu) if cpu else float("nan")
            cpu_b = statistics.median(c[1] for c in cpu) if cpu else float("nan")
            print(f"{name:22s} {len(values):4d} {percentile(values, .5):8.2f} {percentile(values, .95):8.2f} "
                  f"{max(values):8.2f} {percentile(done, .5):9.2f} /{percentile(done, .95):8.2f} {cpu_s:10.2f}s {cpu_b:11.2f}s")
    print(f"{'ALL page visits':22s} {len(visits):4d} {p50:8.2f} {p95:8.2f} {max(visits) if visits else float('nan'):8.2f}"
          f"   (of {expected_visits} expected)")
    full = [r for r in runs if not r["fragment"]]
    if full:
        durations = [r["end"] - r["start"] for r in full]
        events = sorted([(r["start"], 1) for r in full] + [(r["end"], -1) for r in full])
        running = most = 0
        for _, delta in events:
            running += delta
            most = max(most, running)
        print(f"server side, the same concurrent run: {len(full)} script runs (+{len(runs) - len(full)} fragment runs) "
              f"took p50 {percentile(durations, .5):.2f} s, p95 {percentile(durations, .95):.2f} s, max "
              f"{max(durations):.2f} s from start to end; up to {most} ran at once; their own CPU "
              f"(thread time) p50 {percentile([r['thread_cpu'] for r in full], .5):.2f} s")
    per_session = [sum(a + b for a, b in r.cpu.values()) for r in references if r.cpu]
    if per_session:
        server_share = [sum(a for a, _ in r.cpu.values()) for r in references if r.cpu]
        need = statistics.median(per_session) * n / (os.cpu_count() or 1)
        print(f"one session's whole visit costs {statistics.median(per_session):.1f} CPU s alone "
              f"({statistics.median(server_share):.1f} s of it in the server): {n} sessions need at least "
              f"{need:.0f} s of this machine's {os.cpu_count()} cores, whatever the order")
    print()
    print(f"peak server RSS (process tree): {sampler.peak / 2**20:.0f} MB")
    print(f"errors: {len(errors)} in the concurrent run, {len(reference_errors)} in the single-user runs, "
          f"{len(tracebacks)} tracebacks in the server log")
    for line in (errors + reference_errors)[:20]:
        print("   ", line)
    for tb in tracebacks[:3]:
        print("    server:", tb.replace("\n", " | ")[:300])
    print(f"isolation: {len(isolation)} mismatches between a session under load and the same session alone")
    for line in isolation[:20]:
        print("   ", line)
    if limit_message is not None:
        print(f"200 MB upload: {limit_message}")
    ok = not errors and not reference_errors and not tracebacks and not isolation and len(visits) == expected_visits \
        and p95 < READY_BUDGET_S
    print()
    print(f"budget (no errors, p95 < {READY_BUDGET_S:.0f} s, isolation): {'OK' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({
            "sessions": n, "model": model["kind"], "p50": p50, "p95": p95, "visits": len(visits),
            "by_step": {k: {"p50": percentile(v, .5), "p95": percentile(v, .95), "n": len(v)} for k, v in by_step.items() if v},
            "errors": errors + reference_errors + tracebacks, "isolation": isolation,
            "peak_rss_mb": sampler.peak / 2**20, "wall_s": wall, "server_cpu_s": cpu, "browser_cpu_s": browser_cpu,
            "machine_busy_s": busy,
            "upload_limit": limit_message,
        }, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-timed":
        serve_timed(sys.argv[2:])
    else:
        sys.exit(main())
