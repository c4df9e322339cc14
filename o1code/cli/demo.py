"""`o1code demo`: MCTS on a few MBPP problems with the offline model (`make demo`)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from o1code.cli.config import add_config_flags, config_from_args
from o1code.pipeline.demo import DemoConfig


def cmd_demo(args: argparse.Namespace) -> int:
    from o1code.pipeline.demo import run_demo

    return run_demo(**asdict(config_from_args(DemoConfig, args)))


def add_demo_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the subparsers `commands`; its flags are `DemoConfig`'s fields."""
    demo = commands.add_parser("demo", help="MCTS on a few MBPP problems with the offline model (make demo)")
    demo.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; flags override it")
    add_config_flags(demo, DemoConfig)
    demo.set_defaults(func=cmd_demo)
    return demo
