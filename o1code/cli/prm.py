"""`o1code prm collect|shepherd|train|eval`: the process reward model's data, training and measurement."""

from __future__ import annotations

import argparse
import json
from typing import Any

from o1code.cli.config import add_config_flags, config_from_args
from o1code.pipeline.prm import PRMCollectConfig
from o1code.pipeline.prm_best_of_n import BestOfNConfig
from o1code.pipeline.prm_shepherd import ShepherdConfig
from o1code.runs import lock_run_dir
from o1code.training.prm import PRMTrainConfig


def cmd_collect(args: argparse.Namespace) -> int:
    from o1code.pipeline.prm import collect

    config = config_from_args(PRMCollectConfig, args)
    with lock_run_dir(config.run_dir):
        counts = collect(config, progress=not args.no_progress)
    print(json.dumps(counts, indent=2))
    return 0


def cmd_shepherd(args: argparse.Namespace) -> int:
    from o1code.pipeline.prm_shepherd import shepherd

    config = config_from_args(ShepherdConfig, args)
    with lock_run_dir(config.run_dir):
        summary = shepherd(config)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from o1code.training.prm import train_prm

    config = config_from_args(PRMTrainConfig, args)
    with lock_run_dir(config.run_dir):
        res = train_prm(config)
    print(f"PRM saved to {res.final_dir} ({res.train_rows} train rows, {res.heldout_rows} held out)")
    def line(m: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())

    for m in res.epochs:
        print(f"  held-out after epoch {m['epoch']:g}: " + line({k: v for k, v in m.items() if k != "epoch"}))
    if res.chosen:
        print(f"  kept: the PRM of epoch {res.chosen['epoch']:g} (best held-out {config.select})")
    for when, m in res.metrics.items():
        print(f"  held-out {when}: " + line(m))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from o1code.pipeline.prm_best_of_n import best_of_n, best_of_n_table

    config = config_from_args(BestOfNConfig, args)
    with lock_run_dir(config.run_dir):
        print(best_of_n_table(best_of_n(config)))
    print(f"summary.json, summary.md and summary.png in {config.run_dir}")
    return 0


def add_prm_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``prm`` and its sub-commands on the subparsers `commands`; flags come from the stages'
    config dataclasses (`PRMCollectConfig`, `ShepherdConfig`, `PRMTrainConfig`, `BestOfNConfig`)."""
    prm = commands.add_parser(
        "prm", help="process reward model: collect step-labelled trees or paths, train, evaluate",
        description="Algorithm 1's PRM: `collect` runs MCTS on the train split rewarded by the dataset tests "
        "and writes step-labelled rows (point and pair); `shepherd` labels sampled paths' steps by completions "
        "from them (Math-Shepherd); `train` fits the PRM (LoRA on any causal LM); "
        "`eval` measures it on held-out problems: best-of-N Pass@1 of four selectors, step AUC.")
    sub = prm.add_subparsers(dest="prm_command", metavar="STEP", required=True)
    for name, cls, func, text in (
            ("collect", PRMCollectConfig, cmd_collect, "MCTS on train (or validation) problems -> RUN/rows.jsonl"),
            ("shepherd", ShepherdConfig, cmd_shepherd, "Math-Shepherd step labels: sampled paths, each step "
             "labelled by how many of the completions from it pass -> RUN/rows.jsonl (resumes)"),
            ("train", PRMTrainConfig, cmd_train, "train the PRM on rows -> RUN/final (resumes)"),
            ("eval", BestOfNConfig, cmd_eval, "best-of-N with the PRM on held-out problems (resumes)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; flags override it")
        add_config_flags(p, cls)
        if name == "collect":
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
    return prm


__all__ = ["add_prm_command"]
