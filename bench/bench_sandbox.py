"""Benchmark of o1code.sandboxes.LocalSandbox (prints figures; not a test).

Default mode: every MBPP reference (974) with its tests, from 2 concurrent callers, through
`LocalSandbox(workers=2)`; then the same work through a naive baseline measured in the same run
(one `python3 file.py` subprocess per sample with the asserts inside it, graded by exit status).
Prints runs/s, p50/p99 latency and the verdict counts of both.

Soak mode (`--soak N`): N runs from 2 concurrent callers, a seeded mix of passing, failing,
timing-out, crashing and memory-hungry samples. Prints the verdict counts and checks that there
is no sandbox_error and nothing leaked: processes (every process whose command line is a sandbox
worker below this process, before/after and after close), this process's open fds and threads, files
in the host temp dir, and the sandbox's own /tmp and /dev/shm (listed by a probe sample).

Ray mode (`--ray`, needs the distributed extra): the MBPP references through `RaySandbox` (a local
Ray of 2 CPUs, 2 actors of 1 CPU, each a `LocalSandbox` of 1 worker) and through `LocalSandbox(workers=2)`
in the same run, alternating, `--rounds` times; prints the median runs/s of each and their ratio
(batched `run_many`, and `run` from 2 callers), the per-call latency of a trivial sample (the
dispatch overhead), and the driver's CPU time per call (where one driver process saturates).

    python bench/bench_sandbox.py [--baseline-limit N]
    python bench/bench_sandbox.py --soak 10000
    python bench/bench_sandbox.py --ray [--rounds 3] [--ray-limit N]
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from o1code.data import load_mbpp
from o1code.sandboxes import Job, LocalSandbox, Verdict
from o1code.sandboxes.local import _descendants  # the same /proc walk the pool uses

CALLERS = 2
# The baseline's `python3`: the real interpreter (the pyenv shim on PATH adds ~300 ms of bash).
PYTHON3 = os.path.realpath(sys.executable)
WORKER_MARK = b"The sandbox worker"


def problems():
    return [p for split in ("prompt", "test", "validation", "train") for p in load_mbpp(split)]


def drive(items, fn, callers=CALLERS):
    """Run fn(item) from `callers` threads; return (results in order, latencies, wall seconds)."""
    q: queue.Queue = queue.Queue()
    for i, it in enumerate(items):
        q.put((i, it))
    results = [None] * len(items)
    lat = [0.0] * len(items)

    def loop():
        while True:
            try:
                i, it = q.get_nowait()
            except queue.Empty:
                return
            t = time.perf_counter()
            results[i] = fn(it)
            lat[i] = time.perf_counter() - t

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, lat, time.perf_counter() - t0


def cpu_split():
    """CPU seconds so far of this process, of the sandbox's zygotes, and of the sample processes they
    reaped (from /proc: a zygote's parent is bwrap or us; a sample's parent is its zygote)."""
    tick = os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    out = {"host": own.ru_utime + own.ru_stime, "zygotes": 0.0, "samples": 0.0}
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if WORKER_MARK not in cmd or os.path.basename(cmd.split(b"\0")[0]) == b"bwrap":
                continue  # not ours, or bwrap (the worker's source is in its arguments too)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{fields[1]}/cmdline", "rb") as f:
                if f.read() == cmd:
                    continue  # a sample process (or the spare): counted in its zygote's reaped children
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
        out["zygotes"] += utime + stime
        out["samples"] += cutime + cstime
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(name, lat, wall, counts):
    print(f"{name:<10} runs={len(lat):5d}  wall={wall:7.2f} s  runs/s={len(lat) / wall:7.1f}  "
          f"p50={statistics.median(lat) * 1000:7.2f} ms  p99={pct(lat, 0.99) * 1000:8.2f} ms  "
          f"verdicts={dict(counts)}")


def naive_run(p, timeout_s=20.0):
    """The naive adapter: the whole program with its asserts in one fresh interpreter."""
    src = "\n".join([p.reference, p.setup_code, *p.tests]) + "\n"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prog.py")
        with open(path, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([PYTHON3, path], cwd=d, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return "timeout"
    return "passed" if r.returncode == 0 else "failed"


def bench(args):
    ps = problems()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; callers={CALLERS}")
    with LocalSandbox(workers=CALLERS) as sb:
        print(f"isolation: {sb.isolation_summary} ({sb.bwrap or 'no bwrap'})")
        drive(ps[:100], lambda p: sb.run(p.reference, p.tests, p.setup_code, 20.0))  # warm-up
        rs, lat, wall = drive(ps, lambda p: sb.run(p.reference, p.tests, p.setup_code, 20.0))
        # mbpp/123 alone is ~2.5 s of pure CPU (amicable numbers below 10000): it holds one of the
        # two callers for most of the run above. The same set without it shows the per-sample cost.
        rest = [p for p in ps if p.task_id != "mbpp/123"]
        cpu0 = cpu_split()
        _, lat2, wall2 = drive(rest, lambda p: sb.run(p.reference, p.tests, p.setup_code, 20.0))
        cpu = {k: (v - cpu0[k]) * 1000 / len(rest) for k, v in cpu_split().items()}
    counts = collections.Counter(str(r.verdict) for r in rs)
    wrong = [p.task_id for p, r in zip(ps, rs) if (r.verdict is Verdict.PASSED) == p.known_bad]
    report("sandbox", lat, wall, counts)
    print(f"sandbox: references graded wrongly: {wrong or 'none'}; "
          f"failed (known bad): {sorted(p.task_id for p, r in zip(ps, rs) if r.verdict is Verdict.FAILED)}")
    slow = sorted(zip(lat, (p.task_id for p in ps)), reverse=True)[:3]
    print("sandbox: slowest: " + ", ".join(f"{t} {s * 1000:.0f} ms" for s, t in slow))
    report("w/o 123", lat2, wall2, {"runs": len(lat2)})
    total = sum(cpu.values())
    print(f"w/o 123: CPU per run {total:.2f} ms = host (callers, grading) {cpu['host']:.2f} + zygotes "
          f"{cpu['zygotes']:.2f} + sample processes (fork, setup, warm-up, run, exit) {cpu['samples']:.2f}; "
          f"{os.cpu_count()} cores fit at most {1000 * (os.cpu_count() or 1) / total:.0f} runs/s")

    base_ps = ps[: args.baseline_limit] if args.baseline_limit else ps
    brs, blat, bwall = drive(base_ps, naive_run)
    report("baseline", blat, bwall, collections.Counter(brs))
    sub = [lat[i] for i in range(len(base_ps))]
    print(f"speed-up: p50 latency x{statistics.median(blat) / statistics.median(sub):.1f} "
          f"(same {len(base_ps)} samples: sandbox p50 {statistics.median(sub) * 1000:.2f} ms vs "
          f"baseline {statistics.median(blat) * 1000:.2f} ms); throughput "
          f"x{(len(ps) / wall) / (len(base_ps) / bwall):.1f}")


# ---------------------------------------------------------------------------------------- soak

def worker_procs() -> int:
    """Processes below this one whose command line is a sandbox worker (or a fork of one). Other
    sessions may run sandboxes on this machine; with a PID namespace nothing leaves our tree."""
    n = 0
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                n += WORKER_MARK in f.read()
        except OSError:
            pass
    return n


def leftovers(sb) -> int:
    """Processes below this one beyond each worker's own four (bwrap, bwrap's init, the zygote,
    its one pre-forked child), plus worker-like processes outside every live worker's tree."""
    mine = _descendants(os.getpid())  # first: a child forked after this is inside the trees below
    allowed, extra = set(), 0
    for w in list(sb._live):
        tree = [w.proc.pid] + _descendants(w.proc.pid)
        allowed |= set(tree)
        extra += max(0, len(tree) - 4)
    stray = 0
    for pid in mine:
        if pid in allowed:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                stray += WORKER_MARK in f.read()
        except OSError:
            pass
    return extra + stray


def zygote_fds(sb) -> list[int]:
    """Open fds of each worker's zygote (bwrap, bwrap's init, then the zygote)."""
    out = []
    for w in sorted(sb._live, key=lambda w: w.proc.pid):
        tree = [w.proc.pid] + _descendants(w.proc.pid)
        z = tree[2] if len(tree) > 2 else tree[-1]
        try:
            out.append(len(os.listdir(f"/proc/{z}/fd")))
        except OSError:
            out.append(-1)
    return out


SOAK_KINDS = [
    # (weight, expected verdict, code, tests, timeout)
    (70, Verdict.PASSED, "def f(x):\n    return sorted(set(range(x)))[::-1][:3]", ["assert f(5) == [4, 3, 2]", "assert f(1) == [0]"], 2.0),
    (12, Verdict.FAILED, "def f(x):\n    return x + 1", ["assert f(1) == 3", "assert f(2) == 3"], 2.0),
    (3, Verdict.FAILED, "class A:\n    def __eq__(s, o): return True\ndef f(x): return A()", ["assert f(1) == 3"], 2.0),
    (3, Verdict.RUNTIME_ERROR, "def f(x):\n    return 1 / 0", ["assert f(1) == 3"], 2.0),
    (2, Verdict.RUNTIME_ERROR, "import ctypes\ndef f(x):\n    return ctypes.string_at(0)", ["assert f(1) == 3"], 2.0),
    (2, Verdict.RUNTIME_ERROR, "import os\ndef f(x):\n    os._exit(0)", ["assert f(1) == 3"], 2.0),
    (2, Verdict.RUNTIME_ERROR, "import os\ndef f(x):\n    return os.fork()", ["assert f(1) == 3"], 2.0),
    (2, Verdict.MEMORY, "def f(x):\n    return bytearray(2**40)", ["assert f(1) == 3"], 2.0),
    (2, Verdict.TIMEOUT, "def f(x):\n    while True: pass", ["assert f(1) == 3"], 0.2),
    (2, Verdict.TIMEOUT, "import time\ndef f(x):\n    time.sleep(10)", ["assert f(1) == 3"], 0.2),
]


def soak(args):
    rng = random.Random(0)
    weights = [k[0] for k in SOAK_KINDS]
    picks = rng.choices(range(len(SOAK_KINDS)), weights=weights, k=args.soak)
    tmp = tempfile.gettempdir()
    before = {
        "procs": worker_procs(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tmp": set(os.listdir(tmp)),
    }
    print(f"soak: {args.soak} runs, {CALLERS} callers; load average {os.getloadavg()[0]:.2f}")
    with LocalSandbox(workers=CALLERS) as sb:
        print(f"isolation: {sb.isolation_summary} ({sb.bwrap or 'no bwrap'})")
        time.sleep(0.3)  # let each zygote finish pre-forking its first child
        idle_procs = worker_procs()
        zfds_before = zygote_fds(sb)
        fds_open = len(os.listdir("/proc/self/fd"))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def one(k):
            _, _, code, tests, timeout = SOAK_KINDS[k]
            return sb.run(code, tests, timeout_s=timeout)

        rs, lat, wall = drive(picks, one)
        probe = sb.run_many([Job("import os\ndef f():\n    return sorted(os.listdir('/tmp')) + sorted(os.listdir('/dev/shm'))",
                                 ["assert f() == ['.stderr', '.stdout', 's']"])] * 4)
        time.sleep(0.3)  # the zygotes clean up and pre-fork just after replying
        leaked = leftovers(sb)
        zfds_after = zygote_fds(sb)
        procs_during = worker_procs()
        fds_during = len(os.listdir("/proc/self/fd"))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    time.sleep(0.2)
    after = {
        "procs": worker_procs(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tmp": set(os.listdir(tmp)),
    }
    counts = collections.Counter(str(r.verdict) for r in rs)
    unexpected = collections.Counter(
        f"{SOAK_KINDS[k][1]}->{r.verdict}" for k, r in zip(picks, rs) if r.verdict is not SOAK_KINDS[k][1])
    report("soak", lat, wall, counts)
    print(f"sandbox_error: {counts.get('sandbox_error', 0)}; retried runs (attempts>1): "
          f"{sum(r.attempts > 1 for r in rs)}; verdicts other than expected: {dict(unexpected) or 'none'}")
    print(f"processes: leaked by samples after soak={leaked} (worker trees checked: at most bwrap, its init, "
          f"zygote, pre-forked child each); sandbox-worker processes in our tree: idle={idle_procs} "
          f"after soak={procs_during} after close={after['procs']} (before start={before['procs']})")
    print(f"fds of this process: with sandbox open {fds_open} -> after soak {fds_during} "
          f"(leaked {fds_during - fds_open}); before {before['fds']} -> after close {after['fds']}")
    print(f"open fds of each worker's zygote: {zfds_before} -> {zfds_after} after soak (replaced workers: "
          f"{'yes' if len(zfds_before) != len(zfds_after) else 'no'})")
    print(f"threads: before {before['threads']} after close {after['threads']}")
    ours = sorted(n for n in after["tmp"] - before["tmp"] if n.startswith("o1code-sandbox"))
    others = len(after["tmp"] - before["tmp"]) - len(ours)
    print(f"host temp dir {tmp}: new sandbox entries after close: {ours or 'none'} "
          f"(+{others} new entries by other processes on this shared machine, not ours)")
    print(f"sandbox /tmp and /dev/shm after soak (probe x4, expect only .stderr .stdout s): "
          f"{'clean' if all(r.verdict is Verdict.PASSED for r in probe) else [r.message for r in probe]}")
    print(f"harness max RSS: {rss0 / 1024:.0f} MiB at start -> {rss1 / 1024:.0f} MiB after soak")
    ok = (counts.get("sandbox_error", 0) == 0 and leaked == 0 and after["procs"] == before["procs"]
          and fds_during == fds_open and not ours and zfds_before == zfds_after)
    print("SOAK " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------- ray

def ray_bench(args):
    import ray

    from o1code.distributed import RaySandbox

    ps = [p for p in problems() if p.task_id != "mbpp/123"]  # 123: ~2.5 s of CPU alone (see bench())
    ps = ps[: args.ray_limit] if args.ray_limit else ps
    jobs = [Job(p.reference, p.tests, p.setup_code, 20.0) for p in ps]
    trivial = ("def f():\n    return 1", ["assert f() == 1"])
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; {len(jobs)} MBPP references "
          f"(w/o mbpp/123), {args.rounds} rounds, medians")
    ray.init(num_cpus=CALLERS, include_dashboard=False, log_to_driver=False)
    figures = collections.defaultdict(list)
    try:
        with LocalSandbox(workers=CALLERS) as local, RaySandbox(actors=CALLERS, num_cpus=1) as remote:
            print(f"isolation: local {local.isolation_summary}; ray {remote.isolation_summary} "
                  f"({len(remote.nodes)} actors on {sorted({n['host'] for n in remote.nodes})})")
            for sb in (local, remote):  # warm-up
                sb.run_many(jobs[:50])
            for rnd in range(args.rounds):
                for name, sb in (("local", local), ("ray", remote)):
                    c0, t0 = time.process_time(), time.perf_counter()
                    rs = sb.run_many(jobs)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    bad = sum(r.verdict is Verdict.SANDBOX_ERROR for r in rs)
                    figures[f"{name} run_many"].append(len(jobs) / wall)
                    figures[f"{name} run_many cpu"].append(1000 * cpu / len(jobs))
                    c0 = time.process_time()
                    _, lat, wall = drive(jobs, lambda j: sb.run(j.code, j.tests, j.setup_code, j.timeout_s))
                    figures[f"{name} run"].append(len(jobs) / wall)
                    figures[f"{name} run p50"].append(1000 * statistics.median(lat))
                    figures[f"{name} run cpu"].append(1000 * (time.process_time() - c0) / len(jobs))
                    c0 = time.process_time()
                    lat = []
                    for _ in range(args.trivial):
                        t = time.perf_counter()
                        sb.run(*trivial)
                        lat.append(time.perf_counter() - t)
                    figures[f"{name} trivial p50"].append(1000 * statistics.median(lat))
                    figures[f"{name} trivial cpu"].append(1000 * (time.process_time() - c0) / args.trivial)
                    print(f"round {rnd + 1} {name:<5}: run_many {figures[f'{name} run_many'][-1]:6.1f} runs/s "
                          f"(sandbox_error {bad}), run x{CALLERS} {figures[f'{name} run'][-1]:6.1f} runs/s, "
                          f"trivial p50 {figures[f'{name} trivial p50'][-1]:.2f} ms; load {os.getloadavg()[0]:.2f}")
    finally:
        ray.shutdown()
    m = {k: statistics.median(v) for k, v in figures.items()}
    for mode in ("run_many", "run"):
        print(f"{mode + ':':<10} local {m[f'local {mode}']:7.1f} runs/s   ray {m[f'ray {mode}']:7.1f} runs/s   "
              f"ratio ray/local x{m[f'ray {mode}'] / m[f'local {mode}']:.2f}")
    print(f"run p50 latency (MBPP, {CALLERS} callers): local {m['local run p50']:.2f} ms, ray {m['ray run p50']:.2f} ms")
    over = m["ray trivial p50"] - m["local trivial p50"]
    print(f"per-call overhead (trivial sample, serial, p50): local {m['local trivial p50']:.2f} ms, "
          f"ray {m['ray trivial p50']:.2f} ms -> +{over:.2f} ms per call")
    print(f"driver CPU per call: ray run {m['ray run cpu']:.2f} ms (trivial {m['ray trivial cpu']:.2f} ms), ray run_many "
          f"{m['ray run_many cpu']:.2f} ms; local run {m['local run cpu']:.2f} ms, local run_many "
          f"{m['local run_many cpu']:.2f} ms")
    print(f"one driver core saturates at ~{1000 / m['ray run cpu']:.0f} calls/s with run, "
          f"~{1000 / m['ray run_many cpu']:.0f} runs/s with batched run_many")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soak", type=int, default=0, help="run the soak test with this many runs")
    ap.add_argument("--baseline-limit", type=int, default=0, help="baseline on the first N problems only")
    ap.add_argument("--ray", action="store_true", help="RaySandbox vs LocalSandbox (needs the distributed extra)")
    ap.add_argument("--rounds", type=int, default=3, help="--ray: rounds (medians over them)")
    ap.add_argument("--ray-limit", type=int, default=0, help="--ray: the first N references only")
    ap.add_argument("--trivial", type=int, default=200, help="--ray: trivial samples per round (per-call overhead)")
    args = ap.parse_args(argv)
    if args.ray:
        return ray_bench(args)
    if args.soak:
        return soak(args)
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
