"""Smoke runs of benchmarks/load_test.py: a few protocol-level students for a few seconds.

The load test is a benchmark, but its client speaks Streamlit's wire protocol and walks the app's
pages by their widgets, so a change in the app or in Streamlit can break it silently. These runs keep
it honest: the same command as the README's, small. They check behaviour (no errors, every
interaction equal to the same student's single-user run, each session on one replica behind nginx,
and that the affinity check does catch a balancer without affinity), never timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Only look for the load test's libraries: importing locust here would let gevent monkey-patch this
# whole pytest process (every threading.Thread after it a greenlet on one OS thread), which broke the
# trainer's one-torch-thread test. The load test runs them in its own processes.
for _needed in ("locust", "websocket"):
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
LOAD_TEST = ROOT / "benchmarks" / "load_test.py"
NGINX = Path("/usr/sbin/nginx")
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.slow


def run_load_test(tmp_path: Path, *options: str, timeout: float = 600, pages: str = "attention,") -> tuple[int, dict, str]:
    """Run the load test; on a timeout stop it with SIGTERM, so that it stops its servers too."""
    report = tmp_path / "load.json"
    every = ",".join(str(i) for i in range(os.cpu_count() or 1))  # no pinning: a smoke run measures nothing
    proc = subprocess.Popen(
        [sys.executable, str(LOAD_TEST), "--think", "0.2", "--pages", pages, "--timeout", "60",
         "--server-cores", every, "--client-cores", every, "--json", str(report), *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"the load test did not finish in {timeout:.0f} s:\n{output[-3000:]}")
    assert report.exists(), f"no report written:\n{output[-3000:]}"
    return proc.returncode, json.loads(report.read_text()), output


def test_students_on_one_server_see_only_their_own_pages(tmp_path):
    browsers = "1" if CHROMIUM.exists() else "0"
    code, report, output = run_load_test(tmp_path, "--students", "2", "--duration", "8", "--browsers", browsers)
    level = report["levels"][0]
    assert code == 0, output[-3000:]
    assert level["errors"] == [] and level["reference_errors"] == []
    assert level["isolation_mismatches"] == []
    # every interaction was compared with the same step of the same student alone
    # alone, each student went the whole round: page, slider, patch click (how far the crowd gets in a
    # few seconds depends on the machine's speed, so only the first steps are required there)
    assert {"open", "upload", "page", "slider", "click"} <= set(level["reference_kinds"])
    assert {"open", "upload"} <= set(level["by_kind"])
    assert level["interactions"] >= 2 * 2
    assert level["isolation_checked"] == level["interactions"]
    assert level["server_cpu_s"] > 0 and level["server_peak_rss_mb"][0] > 50
    if browsers == "1":
        steps = [s["step"] for s in level["browser_page_ready"]["steps"]]
        assert steps[:2] == ["open", "upload"], steps


def test_students_walk_the_lesson_revealing_answers_as_they_go(tmp_path):
    """The lesson in the students' mix: Next and "Just show me" are button presses over the protocol, each
    compared with the same screen of the same student alone (the lesson's place is part of every step's name)."""
    code, report, output = run_load_test(tmp_path, "--students", "2", "--duration", "8", "--browsers", "0",
                                         pages="lesson,")
    level = report["levels"][0]
    assert code == 0, output[-3000:]
    assert level["errors"] == [] and level["reference_errors"] == []
    assert level["isolation_mismatches"] == []
    # alone, two rounds: each student pressed Next and asked for at least one answer on the lesson page
    assert {"page", "lesson", "reveal"} <= set(level["reference_kinds"])
    assert level["isolation_checked"] >= 2 * 2


@pytest.mark.skipif(not NGINX.exists(), reason="needs Debian's nginx (apt-get install nginx)")
def test_through_nginx_every_session_stays_on_one_replica(tmp_path):
    code, report, output = run_load_test(tmp_path, "--students", "3", "--duration", "8", "--browsers", "0",
                                         "--through-nginx", "2")
    level = report["levels"][0]
    assert code == 0, output[-3000:]
    assert level["errors"] == [] and level["isolation_mismatches"] == []
    affinity = level["affinity"]
    assert affinity["students_checked"] == 3 and affinity["moved"] == []
    assert sum(affinity["students_per_replica"].values()) == 3


@pytest.mark.skipif(not NGINX.exists(), reason="needs Debian's nginx (apt-get install nginx)")
def test_the_affinity_check_catches_a_balancer_without_affinity(tmp_path):
    """Round robin (the template without its hash line) must fail the way #4173 describes."""
    code, report, output = run_load_test(tmp_path, "--students", "2", "--duration", "4", "--browsers", "0",
                                         "--through-nginx", "2", "--without-affinity", "--no-reference")
    level = report["levels"][0]
    assert code != 0
    # students start a second apart, so each one's first requests alternate between the replicas
    assert level["affinity"]["moved"], output[-3000:]
