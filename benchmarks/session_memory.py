"""What one more student costs the server in memory: the shared caches, and what a live session holds.

    python benchmarks/session_memory.py                      # random ViT-B/16, 4 students, attention page
    python benchmarks/session_memory.py --model bundled:vit-cifar10 --students 6

Each student is an in-process AppTest session (the app's own script, no browser): it chooses the
model, uploads its own picture (a different one per student) and opens ``--page``. The script runs
the students twice: once keeping every session alive, as a classroom does while the tabs are open,
and once dropping each session after its visit. After every student it prints the process's RSS and
the bytes held by ``st.cache_data`` (Streamlit's own accounting, per cached function). So:

* growth of the caches per student: what the shared caches keep per picture (bounded by each
  cache's ``max_entries``: it stops growing once a cache is full);
* growth of RSS per student with the sessions alive, less the same with them dropped: what a live
  session holds by itself (its page's last run: a fragment keeps the page's variables alive so it can
  rerun alone).

The load test (``load_test.py``) reports the peak RSS under concurrent load, which also counts the
script runs' working memory while they overlap.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests"), str(HERE.parent)]

#: Students' pictures from the load test's set, past its sample photos (one is the app's default sample,
#: which the caches hold already): each student's picture is new to the server.
FIRST_PICTURE = 100


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def _cache_bytes() -> collections.Counter:
    from streamlit.runtime.caching import cache_data_api

    held: collections.Counter = collections.Counter()
    for stat in cache_data_api._data_caches.get_stats().get(cache_data_api.CACHE_MEMORY_FAMILY, []):
        held[(stat.cache_name or stat.category_name).rsplit(".", 1)[-1]] += stat.byte_length
    return held


def run(model: str, students: int, page: str, keep_alive: bool) -> list[dict]:
    from app_helpers import open_app
    from streamlit.runtime.caching import cache_data_api
    from students import picture

    cache_data_api._data_caches.clear_all()
    gc.collect()
    alive, rows = [], []
    before = _cache_bytes()
    for student in range(students):
        at = open_app(model, upload=picture(FIRST_PICTURE + student), page=page)
        if keep_alive:
            alive.append(at)
        del at
        gc.collect()
        now = _cache_bytes()
        grown = {name: (now[name] - before[name]) / 2**20 for name in now if now[name] != before[name]}
        rows.append({"students": student + 1, "rss_mb": _rss_mb(), "caches_mb": sum(now.values()) / 2**20,
                     "cache_growth_mb": grown})
        before = now
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random", help='the sidebar\'s model choice ("random" is ViT-B/16)')
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--page", default="pages/attention.py")
    parser.add_argument("--only", choices=["alive", "dropped"], help=argparse.SUPPRESS)  # one mode, as JSON
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run(args.model, args.students, args.page, keep_alive=args.only == "alive")))
        return 0
    print(f"model {args.model}, page {args.page}, {args.students} students, one picture each; "
          "each way in a fresh process")
    results = {}
    for mode in ("alive", "dropped"):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--students", str(args.students),
                              "--page", args.page, "--only", mode], capture_output=True, text=True, check=True)
        rows = results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print("sessions kept alive:" if mode == "alive" else "sessions dropped after their visit:")
        for row in rows:
            biggest = sorted(row["cache_growth_mb"].items(), key=lambda kv: -kv[1])[:3]
            print(f"  {row['students']} students: RSS {row['rss_mb']:7.0f} MB, st.cache_data {row['caches_mb']:6.0f} MB"
                  f"  (grew by: {', '.join(f'{n} {v:.1f}' for n, v in biggest) or 'nothing'} MB)")
    n = args.students
    if n >= 2:
        per = {mode: (rows[-1]["rss_mb"] - rows[0]["rss_mb"]) / (n - 1) for mode, rows in results.items()}
        cache = (results["alive"][-1]["caches_mb"] - results["alive"][0]["caches_mb"]) / (n - 1)
        print(f"per extra student: RSS +{per['alive']:.0f} MB with the sessions alive, +{per['dropped']:.0f} MB with "
              f"them dropped; st.cache_data +{cache:.0f} MB; a live session itself holds about "
              f"{per['alive'] - per['dropped']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
