"""`o1code sft`: fine-tune the policy on the correct reasoning paths of train-split MCTS trajectories."""

from __future__ import annotations

import argparse
from typing import Any

from o1code.cli.config import add_config_flags, config_from_args
from o1code.runs import lock_run_dir
from o1code.training.sft import PolicySFTConfig


def cmd_sft(args: argparse.Namespace) -> int:
    from o1code.training.sft import train_sft

    config = config_from_args(PolicySFTConfig, args)
    with lock_run_dir(config.run_dir):
        res = train_sft(config)
    loss = f"; loss {res.loss[0]:.3f} -> {res.loss[1]:.3f}" if res.loss else " (already trained)"
    print(f"policy SFT on {res.examples} paths of {res.problems} problems{loss}")
    print(f"model in {res.final_dir}: `o1code eval --agent policy --model {res.final_dir}`, "
          f"a generator spec hf:{res.final_dir}, or the start of `o1code ppo --model {res.final_dir}`")
    return 0


def add_sft_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``sft`` on the subparsers `commands`; its flags are `PolicySFTConfig`'s fields."""
    p = commands.add_parser(
        "sft", help="policy SFT on the correct paths of train-split MCTS trajectories",
        description="Algorithm 1, step 3: causal-LM fine-tuning (prompt masked, LoRA by default) of the policy on "
        "the distinct paths whose code passed every test, at most --max-paths-per-problem per problem, from "
        "trajectory files of a train-split collection (`o1code prm collect`, or `o1code eval --agent mcts --split "
        "train`); other splits are refused. The prompt is the env's, with the collection's mode, shown tests "
        "and prompt style (read from the config.json beside each file). Writes RUN/final (hf:RUN/final, or a Policy); a rerun "
        "resumes from the last checkpoint.")
    p.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; flags override it")
    add_config_flags(p, PolicySFTConfig)
    p.set_defaults(func=cmd_sft)
    return p


__all__ = ["add_sft_command"]
