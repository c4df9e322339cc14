"""GRPO options, measured: updates (and episodes rolled out) to reach a fixed reward on a learnable toy env.

The env is the PPO learning tests' one (tests/test_ppo.py) with a binary reward, as code rewards are:
one-step episodes on the tiny in-code model, reward 1 when more than half of the step's characters are
in a-m (random tokens: about 0.1), so groups of 4 are often all 0 and dynamic sampling has work to do.
Each option is today's GRPO (per-step ratio, clip 0.2, KL 0.05, no dynamic sampling) with one change,
then all the changes together; each runs for ``--seeds`` seeds. An option "reaches" the target at
the first update whose mean reward over the last 3 updates is >= ``--target``; never: the cap, shown
as ">N" (each run goes to the cap; the first update reaching the target is read from its history). Printed: the median over seeds of updates and episodes to the target, and the wall time.

    python bench/bench_grpo_options.py --seeds 3 --max-updates 30 --target 0.6
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym

TARGET = set("abcdefghijklm")

OPTIONS = {
    "baseline (step ratio, clip .2, KL .05)": {},
    "ratio=token (DAPO/Dr.GRPO norm)": {"ratio": "token"},
    "clip_high=0.28 (clip-higher)": {"clip_high": 0.28},
    "dynamic_sampling": {"dynamic_sampling": True},
    "kl_coef=0": {"kl_coef": 0.0},
    "all four": {"ratio": "token", "clip_high": 0.28, "dynamic_sampling": True, "kl_coef": 0.0},
}


class BinaryLetterEnv(gym.Env):
    def reset(self, seed=None, options=None):
        return {"prompt": "Write some letters:"}, {"task_id": "toy/1"}

    def step(self, action):
        share = sum(c in TARGET for c in action) / max(1, len(action))
        reward = float(share > 0.5)
        return {"prompt": ""}, reward, True, False, {"verdict": "passed" if reward else "failed"}


def run(model: str, options: dict, seed: int, max_updates: int, target: float) -> tuple[int | None, int, float]:
    from o1code.agents.ppo import PPOConfig, train
    from o1code.models.policy import Policy, PolicyConfig

    policy = Policy(PolicyConfig(model=model, device="cpu"))
    cfg = PPOConfig(**{"algo": "grpo", "updates": max_updates, "episodes_per_update": 8, "group_size": 4,
                       "max_step_tokens": 8, "learning_rate": 1e-2, "update_epochs": 2, "minibatch_size": 8,
                       "micro_batch": 8, "seed": seed, "save_every": 10_000, "engine": "transformers", **options})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        history = train(policy, BinaryLetterEnv, cfg, Path(d), progress=False).history
    episodes = 0
    for u in range(1, len(history) + 1):
        episodes += int(history[u - 1]["episodes"])
        recent = [h["reward"] for h in history[max(0, u - 3):u]]
        if len(recent) == 3 and statistics.mean(recent) >= target:
            return u, episodes, time.perf_counter() - t0
    return None, episodes, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-updates", type=int, default=30)
    ap.add_argument("--target", type=float, default=0.6)
    ap.add_argument("--only", help="run only the options whose name contains this")
    args = ap.parse_args()
    from o1code.models.tiny import build_tiny_model

    model = str(build_tiny_model(tempfile.mkdtemp(prefix="tiny-")))
    print(f"# GRPO options on BinaryLetterEnv (tiny model), target mean reward {args.target} over 3 updates, "
          f"{args.seeds} seeds, cap {args.max_updates} updates; load average {os.getloadavg()[0]:.1f}")
    print(f"{'option':40s} {'updates (per seed)':>22s} {'median':>7s} {'episodes':>9s} {'s/run':>6s}")
    for name, options in OPTIONS.items():
        if args.only and args.only not in name:
            continue
        results = [run(model, options, s, args.max_updates, args.target) for s in range(args.seeds)]
        ups = [u if u is not None else args.max_updates + 1 for u, _, _ in results]
        shown = ",".join(str(u) if u is not None else f">{args.max_updates}" for u, _, _ in results)
        med = statistics.median(ups)
        print(f"{name:40s} {shown:>22s} {med if med <= args.max_updates else '>' + str(args.max_updates):>7} "
              f"{statistics.median(e for _, e, _ in results):>9.0f} {statistics.mean(t for _, _, t in results):>6.0f}",
              flush=True)


if __name__ == "__main__":
    main()
