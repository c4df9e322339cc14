"""`o1code eval`: Pass@1 and ASPR of an agent (the paper's Table 1), one run or a config file's runs."""

from __future__ import annotations

import argparse
import contextlib
import itertools
from pathlib import Path
from typing import Any

from o1code.cli.config import add_config_flags, check_keys, given_flags, read_toml
from o1code.errors import ConfigError
from o1code.pipeline import EvalConfig, markdown_table, run_eval
from o1code.pipeline.evaluate import write_report
from o1code.runs import lock_run_dir


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


def _settings(args: argparse.Namespace) -> tuple[dict, dict, list]:
    """(base, grid, runs) of an `o1code eval` call: the config file's top-level keys overridden by
    the flags given, its ``[grid]`` table and its ``[[runs]]`` tables, every key checked."""
    base: dict = {}
    grid: dict = {}
    listed: list = []
    if args.config:
        data = read_toml(args.config)
        grid = data.pop("grid", {})
        listed = data.pop("runs", [])
        if grid and listed:
            raise ConfigError(f"{args.config}: use [grid] or [[runs]], not both")
        check_keys(EvalConfig, data, args.config)
        check_keys(EvalConfig, grid, f"{args.config} [grid]")
        for i, point in enumerate(listed, 1):
            check_keys(EvalConfig, point, f"{args.config} [[runs]] #{i}")
        base.update(data)
    base.update(given_flags(args, EvalConfig))
    return base, grid, listed


def eval_grid(args: argparse.Namespace) -> list[EvalConfig]:
    """The runs an `o1code eval` call stands for: one, or a config file's runs, each in its own
    sub-directory of the run directory: a ``[grid]`` table (the cartesian product of its lists)
    or a list of ``[[runs]]`` tables (each one run's settings on top of the file's)."""
    base, grid, listed = _settings(args)
    if listed:
        runs = []
        for point in listed:
            cfg = EvalConfig.from_dict({**base, **point})
            cfg.run_dir = str(Path(cfg.run_dir) / _slug("-".join(str(v) for v in point.values())))
            runs.append(cfg.validate())
        return runs
    if not grid:
        return [EvalConfig.from_dict(base).validate()]
    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
        point = dict(zip(keys, values))
        cfg = EvalConfig.from_dict({**base, **point})
        cfg.run_dir = str(Path(cfg.run_dir) / _slug("-".join(str(v) for v in values)))
        runs.append(cfg.validate())
    return runs


def cmd_eval(args: argparse.Namespace) -> int:
    runs = eval_grid(args)
    if args.dry_run:
        for cfg in runs:
            reward = f"{cfg.tests} (ORACLE)" if cfg.oracle else cfg.tests
            samples = f" samples={cfg.samples}@T{cfg.temperature}" if cfg.samples else ""
            print(f"{cfg.agent:<7} {cfg.mode:<11} {cfg.model:<45} {cfg.dataset}/{cfg.split} reward={reward}{samples} "
                  f"-> {cfg.run_dir}")
        print(f"-- {len(runs)} runs")
        return 0
    root = Path(EvalConfig.from_dict(_settings(args)[0]).run_dir) if len(runs) > 1 and args.config else None
    summaries = []
    with lock_run_dir(root) if root else contextlib.nullcontext():  # a grid's root: its combined report
        for cfg in runs:
            with lock_run_dir(cfg.run_dir):
                summaries.append(run_eval(cfg, progress=not args.no_progress))
        print(markdown_table(summaries))
        if root:  # the runs' parent directory
            write_report(root, summaries)
            print(f"combined table, JSON and plot in {root}")
    return 0


def add_eval_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``eval`` on the subparsers `commands`; its flags are `EvalConfig`'s fields."""
    ev = commands.add_parser(
        "eval",
        help="evaluate an agent: Pass@1 and ASPR (the paper's Table 1)",
        description="Evaluate an agent on MBPP or HumanEval problems. The search or selection is rewarded "
        "by the reward tests (--tests, default: the visible tests shown in the prompt); every answer is "
        "judged by all of the problem's tests. Pass@1: share of problems whose one answer passes every "
        "judging test (known-bad tasks excluded), with its 95% bootstrap CI over problems and the number of "
        "problems; --samples N also judges N sampled episodes per problem (--temperature > 0) and reports the "
        "unbiased pass@k for k = 1, 2, 5, 10, ... <= N; oracle pass@k: any sample passes them. Two runs: "
        "`o1code compare RUN_A RUN_B` (paired). Writes "
        "results.jsonl (appended per problem; re-running the same --run-dir resumes, refusing changed "
        "settings), trajectories.jsonl (mcts), summary.json, summary.md and summary.png. ASPR: see the README.",
    )
    ev.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; a [grid] table "
                    "of lists runs every combination (see experiments/table1.toml), a list of [[runs]] tables "
                    "runs each (see experiments/table1-cpu.toml); flags override the file")
    ev.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(ev, EvalConfig, exclusive=[("limit", "tasks")])
    ev.set_defaults(func=cmd_eval)
    return ev
