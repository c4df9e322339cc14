"""Environment overhead: what `CodeEnv.step` costs beyond the sandbox, and `make_vec` throughput.

    .venv/bin/python bench/bench_envs.py [--tasks 200] [--vec-steps 300]

Prints medians over MBPP test tasks:
- a non-terminal step (pseudocode mode, a step without code): the whole cost is env overhead;
- a terminal step (direct mode, the reference code): step time minus the time spent inside
  `sandbox.run`, measured by a timing proxy around the same sandbox in the same run;
- `gym.make_vec` steps/s (sync and async, 2 envs) with a scripted agent replaying references.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

import o1code  # noqa: F401
from o1code.data import load_mbpp
from o1code.envs import CodeEnv
from o1code.sandboxes import LocalSandbox


class TimedSandbox:
    """Forwards to a sandbox and records the seconds of each `run`."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds: list[float] = []

    def run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner.run(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - t0)

    def run_many(self, jobs):
        return self.inner.run_many(jobs)

    def close(self):
        pass


def ms(values):
    return f"median {1000 * statistics.median(values):.3f} ms, p90 {1000 * statistics.quantiles(values, n=10)[-1]:.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200, help="MBPP test tasks to step through")
    ap.add_argument("--vec-steps", type=int, default=300, help="vector steps per make_vec mode")
    args = ap.parse_args()
    problems = [p for p in load_mbpp("test") if not p.known_bad][: args.tasks]

    with LocalSandbox(workers=2) as sb:
        print(f"sandbox isolation: {sb.isolation}")
        # Non-terminal steps: no sandbox involved.
        env = CodeEnv(mode="pseudocode", problems=problems, sandbox=sb, max_steps=8)
        times = []
        for p in problems:
            env.reset(options={"task_id": p.task_id})
            for _ in range(3):
                t0 = time.perf_counter()
                env.step(" Outline the function and its inputs (Action 1)\n```pseudo\nf(x) -> y\n```")
                times.append(time.perf_counter() - t0)
        print(f"non-terminal step ({len(times)} steps): {ms(times)}")

        # Terminal steps: env time beyond the sandbox's own.
        timed = TimedSandbox(sb)
        env = CodeEnv(mode="direct", problems=problems, sandbox=timed)
        totals, inside = [], []
        for p in problems:
            env.reset(options={"task_id": p.task_id})
            n0 = len(timed.seconds)
            t0 = time.perf_counter()
            _, reward, *_ = env.step(p.reference)
            totals.append(time.perf_counter() - t0)
            inside.append(sum(timed.seconds[n0:]))
            assert reward == 1.0, p.task_id
        overhead = [t - s for t, s in zip(totals, inside)]
        print(f"terminal step ({len(totals)} steps): total {ms(totals)}; in sandbox.run {ms(inside)}")
        print(f"terminal step env overhead beyond the sandbox: {ms(overhead)}")

    by_text = {p.text: p.reference for p in problems}
    for mode in ("sync", "async"):
        envs = gym.make_vec("O1Code-MBPP-Direct-v0", num_envs=2, vectorization_mode=mode,
                            vector_kwargs={"shared_memory": False} if mode == "async" else {},
                            problems=problems)
        obs, _ = envs.reset(seed=0)
        t0 = time.perf_counter()
        rewards = 0.0
        for _ in range(args.vec_steps):
            actions = [next(ref for text, ref in by_text.items() if text in prob) for prob in obs["problem"]]
            obs, r, term, trunc, _ = envs.step(actions)
            rewards += float(r.sum())
            # gymnasium 1.x autoresets on the step after a terminal one; that step's action is ignored
            obs, *_ = envs.step(actions)
        dt = time.perf_counter() - t0
        envs.close()
        print(f"make_vec {mode}, 2 envs: {2 * args.vec_steps / dt:.1f} episodes/s "
              f"({4 * args.vec_steps / dt:.1f} env steps/s incl. autoreset steps), mean reward {rewards / (2 * args.vec_steps):.3f}")


if __name__ == "__main__":
    main()
