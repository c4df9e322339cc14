"""Run the test suite (or part of it) several times in a row while busy processes load the CPUs, and
report every failure: the check that the sandbox's timing-sensitive tests stay reliable on a busy machine
with `make test`'s two pytest workers.

    python bench/suite_under_load.py                       # make test's pytest, 5 times, 1 busy process
    python bench/suite_under_load.py --runs 3 --hogs 2 -- tests/test_sandbox_core.py tests/test_envs.py

Each busy process spins in pure Python (like ``stress --cpu 1``), started before the first run and
stopped after the last. Printed per run: seconds, passed, failed, errors and the failing tests' ids; then
the failures summed over the runs and the load average. The exit status is 1 when any run failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spin() -> None:
    while True:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="suite runs in a row (default 5)")
    ap.add_argument("--hogs", type=int, default=1, help="busy processes beside the suite (default 1)")
    ap.add_argument("--workers", default=os.environ.get("PYTEST_WORKERS", "2"),
                    help="pytest-xdist workers, as make test's PYTEST_WORKERS (default 2; 0: one process)")
    ap.add_argument("paths", nargs="*", help="test files or ids after -- (default: the whole suite)")
    args = ap.parse_args()
    if args.runs < 1 or args.hogs < 0:
        ap.error("--runs must be >= 1 and --hogs >= 0")
    cmd = [sys.executable, "-m", "pytest", "-n", str(args.workers), "--dist", "loadfile", "-q", "-rfE", "-p",
           "no:cacheprovider", *args.paths]
    hogs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    print(f"# {args.runs} runs of: {' '.join(cmd[1:])}; {args.hogs} busy process(es) beside; "
          f"{os.cpu_count()} CPUs", flush=True)
    total_failed, worst = 0, 0
    try:
        for run in range(1, args.runs + 1):
            t = time.perf_counter()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            text = out.stdout + out.stderr
            counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", text.splitlines()[-1]
                                                        if text.strip() else "")}
            failing = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)))
            bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
            if out.returncode not in (0, 1) or (out.returncode == 1 and not bad):  # 5: no tests; others: crashes
                print(text[-3000:], flush=True)
                bad = max(bad, 1)
            total_failed += bad
            worst = max(worst, bad)
            print(f"run {run}: {seconds:6.0f} s, passed {counts.get('passed', 0)}, failed {counts.get('failed', 0)}, "
                  f"errors {counts.get('error', 0) + counts.get('errors', 0)}, skipped {counts.get('skipped', 0)}, "
                  f"rc {out.returncode}, load average {os.getloadavg()[0]:.1f}"
                  + (f"; failing: {', '.join(failing)}" if failing else ""), flush=True)
    finally:
        for h in hogs:
            h.terminate()
    print(f"failures over {args.runs} runs: {total_failed} (most in one run: {worst})", flush=True)
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
