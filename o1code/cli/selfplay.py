"""`o1code selfplay`: Algorithm 1 end to end (TCG, MCTS data, SFT, then PRM -> RL -> new data per
iteration) in one resumable run directory; `o1code selfplay status RUN` prints where a run stands."""

from __future__ import annotations

import argparse
from typing import Any

from o1code.cli.config import add_config_flags, check_keys, given_flags, read_toml
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.selfplay import TABLES, SelfPlayConfig
from o1code.runs import lock_run_dir


def selfplay_config(args: argparse.Namespace) -> SelfPlayConfig:
    """The dataclass defaults < the ``--config`` file (top-level keys and stage tables) < the flags given."""
    data: dict[str, Any] = {}
    if args.config:
        data = read_toml(args.config)
        check_keys(SelfPlayConfig, data, args.config)
    data.update(given_flags(args, SelfPlayConfig))
    return SelfPlayConfig(**data)


def cmd_selfplay(args: argparse.Namespace) -> int:
    from o1code.pipeline.selfplay import run_selfplay, status

    if args.action == "status":
        if not args.target and not args.run_dir:
            raise PipelineError("selfplay status: give the run directory (o1code selfplay status RUN_DIR)")
        print(status(args.target or args.run_dir), end="")
        return 0
    if args.target:
        raise PipelineError(f"selfplay: unexpected argument {args.target!r} (the run directory is --run-dir)")
    config = selfplay_config(args)
    with lock_run_dir(config.run_dir):
        res = run_selfplay(config, progress=not args.no_progress, from_stage=args.from_stage)
    print(res.report.read_text(), end="")
    print(f"report: {res.report} (and report.png, tb/ beside it)")
    return 0


def add_selfplay_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``selfplay`` on the subparsers `commands`; its flags are `SelfPlayConfig`'s shared settings."""
    p = commands.add_parser(
        "selfplay", help="Algorithm 1 end to end: TCG, MCTS data, SFT, then PRM -> RL -> new data per iteration",
        description="Run (or resume) the o1-Coder self-play loop in one run directory: [TCG], baseline evaluation, "
        "MCTS data on train problems, policy SFT, held-out evaluation, then per iteration: PRM training on all "
        "data so far, RL (PPO/GRPO) with the reward tests and the PRM, held-out evaluation, new MCTS data. Each "
        "stage writes RUN/iter-I/STAGE/ with a manifest and a done-marker; rerunning the same command skips "
        "finished stages and resumes the interrupted one. Each stage's own settings go in tables of the --config "
        "file ([collect], [sft], [prm], [rl], [eval], [tcg_train], [tcg_eval]: the fields of that stage's "
        "command). See experiments/selfplay-cpu.toml. `o1code selfplay status RUN_DIR` prints the stage table.",
        epilog="Stages are named I/NAME: 0/tcg 0/baseline 0/collect 0/sft 0/eval, then I/prm I/rl I/eval "
        "I/collect for I = 1 .. iterations.")
    p.add_argument("action", nargs="?", choices=("run", "status"), default="run",
                   help="run (the default) or status (print the stages and figures of RUN_DIR)")
    p.add_argument("target", nargs="?", metavar="RUN_DIR", help="status: the run directory")
    p.add_argument("--config", metavar="TOML", help="read settings from a TOML file (top-level keys and stage "
                   "tables); flags override it")
    p.add_argument("--from", dest="from_stage", metavar="STAGE",
                   help="redo this stage (I/NAME, e.g. 1/rl, or NAME: its first occurrence) and every stage after it")
    p.add_argument("--no-progress", action="store_true", help="no progress bars inside stages")
    add_config_flags(p, SelfPlayConfig, exclude=TABLES)
    p.set_defaults(func=cmd_selfplay)
    return p


__all__ = ["add_selfplay_command", "selfplay_config"]
