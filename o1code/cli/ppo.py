"""`o1code ppo`: the RL stage: PPO/GRPO of a policy in CodeEnv on train problems, held-out Pass@1 curve."""

from __future__ import annotations

import argparse
from typing import Any

from o1code.cli.config import add_config_flags, config_from_args
from o1code.pipeline.ppo import PPORunConfig
from o1code.runs import lock_run_dir


def cmd_ppo(args: argparse.Namespace) -> int:
    from o1code.pipeline.ppo import run_ppo

    config = config_from_args(PPORunConfig, args)
    with lock_run_dir(config.run_dir):
        res = run_ppo(config, progress=not args.no_progress)
    print(res.summary)
    print(f"policy in {res.final_dir}; report, curves and TensorBoard logs in {res.final_dir.parent}")
    return 0


def add_ppo_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``ppo`` on the subparsers `commands`; its flags are `PPORunConfig`'s fields."""
    p = commands.add_parser(
        "ppo", help="RL of the policy (PPO or GRPO) in CodeEnv on train problems, with held-out Pass@1",
        description="Algorithm 1, step 5: step-level PPO (or GRPO) of a policy (a model spec, or the RUN/final of "
        "`o1code sft`; LoRA by default) in CodeEnv on the train split, rewarded by the reward tests (visible, "
        "tcg or the train problems' dataset tests); greedy Pass@1 on the hidden tests of held-out problems before "
        "training and every --eval-every updates. Writes R/final (`o1code eval --agent policy --model R/final`), "
        "R/curves.png, R/summary.md and TensorBoard logs in R/tb; a rerun resumes from the last checkpoint. "
        "See experiments/ppo-cpu.toml and ppo-gpu.toml.")
    p.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; flags override it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p, PPORunConfig)
    p.set_defaults(func=cmd_ppo)
    return p


__all__ = ["add_ppo_command"]
