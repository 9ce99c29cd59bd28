"""Load test: a class of simulated students on one server (or on replicas behind nginx).

    python benchmarks/load_test.py --students 30 --think 5 --duration 120 --json load.json
    python benchmarks/load_test.py --students 30,40,50,60 --think 5 --duration 120    # find the knee
    python benchmarks/load_test.py --students 10 --model random-b16 --duration 120    # ViT-B/16 weights
    python benchmarks/load_test.py --students 12 --through-nginx 3 --duration 60      # scale-out, affinity

What it measures, and how:

* The students are Locust users (``locustfile.py``) that speak Streamlit's own protocol (websocket
  ``/_stcore/stream`` with the ``BackMsg``/``ForwardMsg`` protobufs of the installed streamlit,
  uploads through ``/_stcore/upload_file``; ``st_client.py``), so a student costs the client side a few
  milliseconds per interaction, not a browser. What a student does: ``students.py``.
* The server runs on its own cores (``--server-cores``, default core 0, with ``taskset``); this
  process, its students and the browsers run on the others (``--client-cores``). The CPU time of
  both sides is reported, from /proc.
* Latency of an interaction: from the message sent (the rerun request, or the upload's first
  message) to the ``script_finished`` message of that run. p50/p95/p99 over every interaction
  of the concurrent run.
* Isolation: every student first runs alone (two rounds, no think time: its reference). Under load,
  each interaction's fingerprint (everything the run put on screen) must equal the same step's
  fingerprint alone. Any difference is a mismatch.
* Errors: an exception or error box on a page, a step that timed out, a refused upload, a media file
  that did not load, a traceback in the server's log.
* ``--browsers K`` (default 1) real Chromium sessions (``browser_session.py``) run in the same
  window on the client cores and report page-ready latency end to end.
* ``--through-nginx R``: R replicas behind Debian's nginx (``/usr/sbin/nginx``), configured by the
  deployment's own template ``deploy/nginx/vit-explain.conf.template``; every student must stay on
  one replica: all its HTTP answers (page, upload, media) name one upstream (``X-Upstream``), and its
  Streamlit session id is known to that replica only (each replica logs the sessions it ran).

The server is ``streamlit run app.py`` wrapped to log every script run (start, end, thread CPU,
session) and every accepted upload: see ``serve_timed`` below. Everything runs on 127.0.0.1 and stops
by itself: a run is bounded by ``--duration`` plus ``--timeout``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
sys.path.append(str(ROOT / "tests"))  # perf_budgets: every budget in one place

from perf_budgets import LOAD_P95_S  # noqa: E402

NGINX = "/usr/sbin/nginx"
TEMPLATE = ROOT / "deploy" / "nginx" / "vit-explain.conf.template"
P95_BUDGET_S = LOAD_P95_S["default"]  # the classroom budget (README, "A class on one server"); ViT-B/16: 3 s


# ---------------------------------------------------------------------------------- /proc
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


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """User + system CPU seconds of these processes (and, with ``children``, of their waited-for children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def parse_cores(text: str) -> set[int]:
    cores = set()
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-")
            cores.update(range(int(low), int(high) + 1))
        elif part.strip():
            cores.add(int(part))
    return cores


class MemorySampler(threading.Thread):
    """Samples the RSS of each process tree every ``interval`` seconds: the peak of each."""

    def __init__(self, pids: list[int], interval: float = 0.25):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peaks = [0] * len(pids)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for i, pid in enumerate(self.pids):
                self.peaks[i] = max(self.peaks[i], rss_bytes(process_tree(pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------------- servers
class Replica:
    """``streamlit run app.py`` (wrapped by serve_timed) on a free loopback port, pinned to ``cores``."""

    def __init__(self, folder: Path, number: int, cores: set[int], extra_env: dict[str, str] | None = None,
                 script: str = "app.py"):
        self.number = number
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"replica{number}.log"
        self.runs_path = folder / f"replica{number}.runs.jsonl"
        self.runs_path.write_text("")
        env = dict(os.environ, **(extra_env or {}))
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(VIT_LOAD_TIMING=str(self.runs_path), VIT_LOAD_REPLICA=str(number))
        self._log = open(self.log_path, "w")
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-timed", "run", script,
                   "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
                   "--server.fileWatcherType", "none"]
        if cores and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(map(str, sorted(cores)))] + command
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.number} exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"replica {self.number} did not become healthy in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own process group only
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def events(self) -> list[dict]:
        out = []
        for line in self.runs_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def tracebacks(self) -> list[str]:
        """The last line of every traceback in the replica's log."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))
        found = []
        for match in re.finditer(r"Traceback \(most recent call last\)", text):
            tail = text[match.end():match.end() + 20000]
            last = re.search(r"^\s*((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$", tail, re.M)
            found.append(last.group(1).strip()[:300] if last else tail[:300])
        return found


def render_template(template: str, values: dict[str, str]) -> str:
    """envsubst for the named variables only (nginx's own $variables stay as they are)."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    left = re.findall(r"\$\{[A-Z_]+\}", template)
    if left:
        raise ValueError(f"unfilled variables in {TEMPLATE.name}: {left}")
    return template


class Nginx:
    """Debian's nginx as a plain foreground process, with the deployment's template, on a free port."""

    def __init__(self, folder: Path, upstreams: list[str], cores: set[int], affinity: bool = True):
        self.folder = folder / "nginx"
        self.folder.mkdir()
        os.chmod(folder, 0o755)  # the workers (user nobody) walk into it
        os.chmod(self.folder, 0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = render_template(TEMPLATE.read_text(), {
            "NGINX_PORT": f"127.0.0.1:{self.port}",
            "VIT_UPSTREAM_SERVERS": " ".join(f"server {u};" for u in upstreams),
        })
        if not affinity:  # the control experiment: nginx's default round robin, to show what the check catches
            site, found = re.subn(r"^\s*hash \$vx_route consistent;\n", "", site, flags=re.M)
            assert found == 1, "the template's hash line moved"
        (self.folder / "vit-explain.conf").write_text(site)
        f = self.folder
        # The top level that the nginx image (or Debian's /etc/nginx/nginx.conf) provides around a site file.
        (f / "nginx.conf").write_text(f"""
worker_processes 1;
pid {f}/nginx.pid;
error_log {f}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {f}/access.log;
    client_body_temp_path {f}/client_body;
    proxy_temp_path {f}/proxy;
    fastcgi_temp_path {f}/fastcgi;
    uwsgi_temp_path {f}/uwsgi;
    scgi_temp_path {f}/scgi;
    include {f}/vit-explain.conf;
}}
""")
        command = [NGINX, "-p", str(f), "-c", str(f / "nginx.conf"), "-g", "daemon off;"]
        check = subprocess.run(command[:-2] + ["-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
        if cores and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(map(str, sorted(cores)))] + command
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(f / "stderr.log", "w"),
                                     start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not start: {(f / 'stderr.log').read_text()[-500:]} {(f / 'error.log').read_text()[-500:] if (f / 'error.log').exists() else ''}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def errors(self) -> list[str]:
        log = self.folder / "error.log"
        if not log.exists():
            return []
        return [line for line in log.read_text(errors="replace").splitlines() if "[error]" in line or "[crit]" in line]


# ---------------------------------------------------------------------------------- the students
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def references(url: str, students: list[int], base) -> tuple[dict, list[str]]:
    """Every student alone, one after another, two rounds, no think time: step -> fingerprint."""
    from students import Lesson, Settings

    prints, errors = {}, []
    for index in students:
        settings = Settings(model=base.model, patch_sizes=base.patch_sizes, pages=base.pages, think=0.0, rounds=2,
                            timeout=base.timeout)
        try:
            Lesson(index, url, settings).run()
        except Exception:
            pass
        for r in settings.records:
            if r.error:
                errors.append(f"student {index} alone: {r.error}")
            else:
                prints[(index, r.step)] = r.fingerprint
    return prints, errors


def load(url: str, n: int, args, base) -> tuple[object, float]:
    """The class at once: ``n`` Locust users, arriving over a few seconds, until the duration is over."""
    import gevent
    from locust.env import Environment

    import locustfile

    locustfile._numbers = itertools.count()
    settings = locustfile.SETTINGS
    settings.__init__(model=base.model, patch_sizes=base.patch_sizes, pages=base.pages, think=args.think,
                      timeout=args.timeout)
    environment = Environment(user_classes=[locustfile.Student], host=url, events=locustfile.events)
    runner = environment.create_local_runner()
    ramp = min(10.0, max(1.0, args.duration / 6))
    start = time.time()
    settings.deadline = start + args.duration
    runner.start(n, spawn_rate=max(1.0, n / ramp))
    hard_stop = settings.deadline + args.timeout
    gevent.sleep(1.0)
    while time.time() < hard_stop:
        gevent.sleep(0.5)
        if time.time() > settings.deadline and runner.user_count == 0:
            break
    runner.quit()
    return settings, time.time() - start


# ---------------------------------------------------------------------------------- one level
def run_level(n: int, args, replicas: list[Replica], entry_url: str, nginx: Nginx | None, prints: dict,
              client_cores: set[int], folder: Path) -> dict:
    """The concurrent run of ``n`` students, with its figures."""
    from students import Settings

    base = Settings(model=args.model, patch_sizes=args.patch_sizes, pages=args.pages, timeout=args.timeout)
    replica_pids = [r.proc.pid for r in replicas]
    server_pids = lambda: [p for pid in replica_pids for p in process_tree(pid)] + (  # noqa: E731
        process_tree(nginx.proc.pid) if nginx else [])
    sampler = MemorySampler(replica_pids)
    sampler.start()
    browser_proc, browser_json = None, folder / f"browsers-{n}.json"
    if args.browsers > 0:
        command = [sys.executable, str(HERE / "browser_session.py"), "--url", entry_url, "--browsers",
                   str(args.browsers), "--duration", str(args.duration), "--think", str(args.think),
                   "--model", args.model, "--pages", ",".join(args.pages), "--json", str(browser_json),
                   "--timeout", str(args.timeout)]
        if client_cores and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(map(str, sorted(client_cores)))] + command
        browser_proc = subprocess.Popen(["nice", "-n", "5"] + command, cwd=ROOT, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=open(folder / f"browsers-{n}.log", "w"))
    server_cpu0 = cpu_seconds(server_pids())
    nginx_cpu0 = cpu_seconds(process_tree(nginx.proc.pid)) if nginx else 0.0
    me = os.getpid()
    client_cpu0 = cpu_seconds([me], children=True)  # children: the browsers, once waited for
    events_before = [len(r.events()) for r in replicas]
    busy0 = machine_busy_seconds()
    t0 = time.time()
    settings, wall = load(entry_url, n, args, base)
    server_cpu = cpu_seconds(server_pids()) - server_cpu0
    nginx_cpu = cpu_seconds(process_tree(nginx.proc.pid)) - nginx_cpu0 if nginx else 0.0
    browsers = {"records": [], "errors": []}
    if browser_proc is not None:
        try:
            browser_proc.wait(timeout=args.timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(browser_proc.pid, signal.SIGKILL)
            browser_proc.wait()
        try:
            browsers = json.loads(browser_json.read_text())
        except (OSError, ValueError):
            browsers = {"records": [], "errors": [f"the browser sessions wrote no report; see {folder}/browsers-{n}.log"]}
    sampler.stop()
    wall_all = time.time() - t0
    client_cpu = cpu_seconds([me], children=True) - client_cpu0
    server_cpu_all = cpu_seconds(server_pids()) - server_cpu0  # to the same moment as the machine's figure
    others_cpu = max(0.0, machine_busy_seconds() - busy0 - server_cpu_all - client_cpu)

    records = settings.records
    latencies = [r.seconds for r in records if not r.error]
    errors = [f"student {r.student}: {r.error}" for r in records if r.error]
    mismatches, unchecked = [], 0
    for r in records:
        if r.error:
            continue
        expected = prints.get((r.student, r.step))
        if expected is None:
            unchecked += 1
        elif expected != r.fingerprint:
            mismatches.append(f"student {r.student} step {r.step}: differs from the same step alone")
    for i, replica in enumerate(replicas):
        errors += [f"replica {replica.number} log: {tb}" for tb in replica.tracebacks()]
    if nginx is not None:
        errors += [f"nginx: {line[-200:]}" for line in nginx.errors()]
    errors += browsers.get("errors", [])

    # where each session lived: the replicas' own logs, and the upstream named in nginx's answers
    affinity = None
    if nginx is not None:
        session_homes: dict[str, set[int]] = {}
        for replica, before in zip(replicas, events_before):
            for event in replica.events()[before:]:
                session_homes.setdefault(event["session"], set()).add(replica.number)
        port_of = {f"127.0.0.1:{r.port}": r.number for r in replicas}
        moved, per_replica = [], {r.number: 0 for r in replicas}
        for student, info in sorted(settings.sessions.items()):
            homes = session_homes.get(info["session"], set())
            named = {port_of.get(u, u) for u in info["upstreams"]}
            sessions_used = {r.session for r in records if r.student == student and r.session}
            if len(homes) != 1 or named != homes or len(sessions_used) > 1:
                moved.append(f"student {student}: session {info['session'][:8]} ran on replicas {sorted(homes)}, "
                             f"HTTP answers from {sorted(named)}, sessions {len(sessions_used)}")
            for home in homes:
                per_replica[home] += 1
        affinity = {"students_checked": len(settings.sessions), "moved": moved, "students_per_replica": per_replica}

    kinds = sorted({r.kind for r in records})
    by_kind = {k: {"n": len(v), "p50": percentile(v, .5), "p95": percentile(v, .95), "p99": percentile(v, .99)}
               for k in kinds if (v := [r.seconds for r in records if r.kind == k and not r.error])}
    page_ready = [b["seconds"] for b in browsers.get("records", []) if b["step"].startswith("page")]
    runs = [e for r, before in zip(replicas, events_before) for e in r.events()[before:] if e.get("kind") == "run"]
    return {
        "students": n, "interactions": len(latencies), "wall_s": wall,
        "p50_s": percentile(latencies, .5), "p95_s": percentile(latencies, .95), "p99_s": percentile(latencies, .99),
        "max_s": max(latencies) if latencies else float("nan"), "by_kind": by_kind,
        "errors": errors, "isolation_mismatches": mismatches, "isolation_checked": len(latencies) - unchecked,
        "isolation_unchecked": unchecked,
        "server_cpu_s": server_cpu, "server_cores_used": server_cpu / wall, "nginx_cpu_s": nginx_cpu,
        "server_cpu_per_interaction_s": server_cpu / max(1, len(latencies)), "client_cpu_s": client_cpu,
        "client_cores_used": client_cpu / wall_all,
        "other_processes_cpu_s": others_cpu, "other_processes_cores_used": others_cpu / wall_all,
        "server_peak_rss_mb": [p / 2**20 for p in sampler.peaks],
        "script_runs": len(runs), "script_run_thread_cpu_p50_s": percentile([e["thread_cpu"] for e in runs], .5),
        "browser_page_ready": {"n": len(page_ready), "p50_s": percentile(page_ready, .5),
                               "p95_s": percentile(page_ready, .95), "max_s": max(page_ready) if page_ready else None,
                               "steps": browsers.get("records", [])},
        "affinity": affinity,
    }


# ---------------------------------------------------------------------------------- report
def describe_model(args) -> str:
    if args.model == "random-b16":
        return "random weights, ViT-B/16 (224 px, patch 16, 12 layers x 12 heads, D 768)"
    import ast

    # The order of vit_explain.ui.sources.BUNDLED_MODELS, read from the source: importing ui outside a Streamlit
    # server prints a warning per cache.
    tree = ast.parse((ROOT / "vit_explain" / "ui" / "sources.py").read_text())
    names = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "BUNDLED_MODELS")
    for name in names:
        if (ROOT / "assets" / "models" / name / "config.json").is_file():
            return f"the app's default: bundled:{name} (assets/models/{name})"
    return "the app's default: random weights (no bundled model found)"


def print_level(level: dict, budget: float) -> None:
    print(f"  {level['students']} students: {level['interactions']} interactions in {level['wall_s']:.0f} s; "
          f"p50 {level['p50_s']:.2f} s, p95 {level['p95_s']:.2f} s, p99 {level['p99_s']:.2f} s, max {level['max_s']:.2f} s "
          f"({'within' if level['p95_s'] <= budget else 'OVER'} the {budget:.0f} s p95 budget)")
    for kind, v in level["by_kind"].items():
        print(f"      {kind:8s} n {v['n']:4d}  p50 {v['p50']:6.2f}  p95 {v['p95']:6.2f}  p99 {v['p99']:6.2f} s")
    print(f"    errors {len(level['errors'])}, isolation mismatches {len(level['isolation_mismatches'])} "
          f"(of {level['isolation_checked']} interactions checked against the same student alone; "
          f"{level['isolation_unchecked']} without a reference)")
    for line in (level["errors"] + level["isolation_mismatches"])[:12]:
        print("      ", line)
    print(f"    server CPU {level['server_cpu_s']:.1f} s = {level['server_cores_used']:.2f} cores; clients (students "
          f"+ browsers) CPU {level['client_cpu_s']:.1f} s = {level['client_cores_used']:.2f} cores; peak RSS per replica "
          f"{', '.join(f'{m:.0f} MB' for m in level['server_peak_rss_mb'])}; {level['script_runs']} script runs, "
          f"thread CPU p50 {level['script_run_thread_cpu_p50_s']:.3f} s")
    print(f"    server CPU per interaction {level['server_cpu_per_interaction_s']:.3f} s: one core keeps up with about "
          f"{1 / max(level['server_cpu_per_interaction_s'], 1e-9):.0f} interactions/s")
    print(f"    other processes on this machine meanwhile: {level['other_processes_cpu_s']:.1f} s CPU = "
          f"{level['other_processes_cores_used']:.2f} cores (should be near 0 for a clean measurement)")
    b = level["browser_page_ready"]
    if b["n"]:
        print(f"    Chromium page ready (end to end, {b['n']} page visits): p50 {b['p50_s']:.2f} s, p95 {b['p95_s']:.2f} s")
    if level["affinity"] is not None:
        a = level["affinity"]
        print(f"    affinity: {a['students_checked']} students checked, {len(a['moved'])} not on exactly one replica; "
              f"students per replica {a['students_per_replica']}; nginx CPU {level['nginx_cpu_s']:.1f} s (in the server CPU)")
        for line in a["moved"][:10]:
            print("      ", line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", default="30", help="how many students; a comma-separated list runs each in "
                        "turn on the same server and reports the knee (the most with p95 within the budget)")
    parser.add_argument("--think", type=float, default=5.0, help="mean think time between a student's actions (s)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the concurrent run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--model", default="default", choices=["default", "random-b16"],
                        help="the app's default model, or random ViT-B/16 weights (every student picks them)")
    parser.add_argument("--patch-sizes", default=None, choices=["vary", "fixed"],
                        help="half the students move the patch size one step (default: vary; fixed for random-b16)")
    parser.add_argument("--pages", default="lesson,attention,patching,mlp,layers,prediction,",
                        help="URL slugs of the pages each round visits (an empty one is the overview)")
    parser.add_argument("--browsers", type=int, default=1, help="real Chromium sessions in the same run")
    parser.add_argument("--through-nginx", type=int, default=0, metavar="R",
                        help="run R replicas behind nginx (deploy/nginx) and check each session stays on one")
    parser.add_argument("--without-affinity", action="store_true",
                        help="control experiment: drop the template's affinity (round robin) to see what breaks")
    parser.add_argument("--server-cores", default="0", help="cores for the server(s) (taskset -c)")
    parser.add_argument("--client-cores", default=None, help="cores for the students and browsers (default: the others)")
    parser.add_argument("--budget", type=float, default=None,
                        help="p95 budget in s (default %s)" % "; ".join(f"{v:g} for {k}" for k, v in LOAD_P95_S.items()))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one interaction may take")
    parser.add_argument("--no-reference", action="store_true", help="skip the single-user runs (no isolation check)")
    parser.add_argument("--keep", type=Path, help="keep the servers' logs in this folder")
    args = parser.parse_args()
    levels = [int(v) for v in args.students.split(",") if v.strip()]
    if not levels or min(levels) < 1 or max(levels) > 200:
        raise SystemExit("--students: between 1 and 200 (this machine only)")
    args.pages = [p.strip().strip("/") for p in args.pages.split(",")]
    args.patch_sizes = args.patch_sizes or ("fixed" if args.model == "random-b16" else "vary")
    budget = args.budget if args.budget is not None else LOAD_P95_S.get(args.model, P95_BUDGET_S)
    if args.through_nginx and not Path(NGINX).exists():
        raise SystemExit(f"{NGINX} is missing (apt-get install nginx)")

    every = set(range(os.cpu_count() or 1))
    server_cores = parse_cores(args.server_cores) & every or every
    client_cores = (parse_cores(args.client_cores) if args.client_cores else every - server_cores) & every or every
    os.sched_setaffinity(0, client_cores)

    def stop_on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    folder = Path(tempfile.mkdtemp(prefix="vit-load-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    replicas, nginx, results = [], None, []
    model = describe_model(args)
    try:
        count = max(1, args.through_nginx)
        replicas = [Replica(folder, i + 1, server_cores) for i in range(count)]
        for r in replicas:
            r.wait_healthy()
        entry = replicas[0].url
        if args.through_nginx:
            nginx = Nginx(folder, [f"127.0.0.1:{r.port}" for r in replicas], server_cores, affinity=not args.without_affinity)
            entry = nginx.url
        print(f"vit-explain load test: model {model}; think {args.think:g} s; pages {args.pages}; "
              f"{count} replica(s){' behind nginx' if nginx else ''} on core(s) {sorted(server_cores)}, students and "
              f"{args.browsers} Chromium session(s) on core(s) {sorted(client_cores)}", flush=True)
        prints, ref_errors = {}, []
        if not args.no_reference:
            t = time.time()
            prints, ref_errors = references(entry, list(range(max(levels))), _base(args))
            print(f"  single-user references: {max(levels)} students alone, {len(prints)} steps, "
                  f"{len(ref_errors)} errors, {time.time() - t:.0f} s", flush=True)
            for line in ref_errors[:10]:
                print("      ", line)
        for n in levels:
            level = run_level(n, args, replicas, entry, nginx, prints, client_cores, folder)
            level["reference_errors"] = ref_errors
            level["reference_kinds"] = sorted({step.split(":", 2)[2].split()[0] for _, step in prints})
            results.append(level)
            print_level(level, budget)
    finally:
        if nginx is not None:
            nginx.stop()
        for r in replicas:
            r.stop()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    ok_levels = [lv["students"] for lv in results
                 if lv["p95_s"] <= budget and not lv["errors"] and not lv["isolation_mismatches"]]
    knee = max(ok_levels) if ok_levels else None
    failed = any(lv["errors"] or lv["isolation_mismatches"] or lv["interactions"] == 0
                 or (lv["affinity"] and lv["affinity"]["moved"]) for lv in results) or bool(ref_errors)
    if len(results) > 1:
        print(f"  knee: {knee if knee is not None else 'none'} (the most students tried with p95 <= {budget:g} s, "
              f"0 errors and 0 mismatches)")
    if args.json:
        args.json.write_text(json.dumps({
            "model": model, "think_s": args.think, "duration_s": args.duration, "pages": args.pages,
            "replicas": max(1, args.through_nginx), "through_nginx": bool(args.through_nginx),
            "server_cores": sorted(server_cores), "client_cores": sorted(client_cores), "budget_p95_s": budget,
            "knee": knee, "levels": results,
        }, indent=1, default=str))
    return 1 if failed else 0


def _base(args):
    from students import Settings

    return Settings(model=args.model, patch_sizes=args.patch_sizes, pages=args.pages, timeout=args.timeout)


# ---------------------------------------------------------------------------------- the server side
def serve_timed(argv: list[str]) -> None:
    """The server process: ``streamlit run`` itself, logging every script run and every accepted upload.

    Streamlit logs neither, so this wraps ``ScriptRunner._run_script`` (start, end and thread CPU of each
    full or fragment run, with its session id) and the upload manager's ``add_file``, one JSON line each
    to the file named by ``VIT_LOAD_TIMING``. The replica's number (``VIT_LOAD_REPLICA``) goes in every
    line: the scale-out test uses these to show that each session stayed on one replica.
    """
    import streamlit.web.cli as cli
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.scriptrunner import script_runner

    path, lock = os.environ["VIT_LOAD_TIMING"], threading.Lock()
    replica = int(os.environ.get("VIT_LOAD_REPLICA", "1"))

    def write(record: dict) -> None:
        with lock, open(path, "a") as fh:
            fh.write(json.dumps(dict(record, replica=replica)) + "\n")

    original_run = script_runner.ScriptRunner._run_script

    def timed(self, rerun_data):
        start, cpu = time.time(), time.thread_time()
        try:
            return original_run(self, rerun_data)
        finally:
            write({"kind": "run", "start": start, "end": time.time(), "thread_cpu": time.thread_time() - cpu,
                   "session": self._session_id, "fragment": bool(rerun_data.fragment_id_queue or rerun_data.fragment_id)})

    original_add = MemoryUploadedFileManager.add_file

    def add_file(self, session_id, file):
        write({"kind": "upload", "start": time.time(), "session": session_id, "bytes": len(file.data)})
        return original_add(self, session_id, file)

    script_runner.ScriptRunner._run_script = timed
    MemoryUploadedFileManager.add_file = add_file
    sys.argv = ["streamlit", *argv]
    cli.main()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-timed":
        serve_timed(sys.argv[2:])
    else:
        # Locust patches the standard library's sockets for gevent: do it before anything opens one.
        import locust  # noqa: F401

        sys.exit(main())
