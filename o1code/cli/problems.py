"""`o1code problems list|show`: browse the coding problems (MBPP splits or a JSONL file)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from o1code.data import MBPP_SPLITS, DataError, Problem, get_problem, load_mbpp, load_problems


def _load(args: argparse.Namespace) -> list[Problem]:
    if args.file:
        return load_problems(args.file)
    return load_mbpp(args.split, sanitized=args.sanitized)


def cmd_problems_list(args: argparse.Namespace) -> int:
    problems = _load(args)
    shown = problems[: args.limit] if args.limit else problems
    for p in shown:
        flag = "  [known-bad]" if p.known_bad else ""
        summary = textwrap.shorten(p.text, width=80, placeholder="...")
        print(f"{p.task_id:<12} {p.entry_point:<28} {summary}{flag}")
    print(f"-- {len(shown)} of {len(problems)} problems")
    return 0


def format_problem(p: Problem) -> str:
    """Return a human-readable view of one problem (statement, tests, reference)."""
    lines = [
        f"{p.task_id}  ({p.source}, split {p.split or '-'}, entry point {p.entry_point})",
        "",
        textwrap.fill(p.text, width=100),
        "",
        "tests:",
        *(f"  {t}" for t in p.tests),
    ]
    if p.challenge_tests:
        lines += ["challenge tests:", *(f"  {t}" for t in p.challenge_tests)]
    if p.setup_code:
        lines += ["setup code:", textwrap.indent(p.setup_code, "  ")]
    if p.reference is not None:
        lines += ["reference:", textwrap.indent(p.reference.rstrip(), "  ")]
    if p.known_bad:
        lines += ["", "note: known-bad task: its reference fails its own tests on CPython 3.11"]
    return "\n".join(lines)


def cmd_problems_show(args: argparse.Namespace) -> int:
    if args.file:
        matches = [p for p in load_problems(args.file) if p.task_id == args.task_id]
        if not matches:
            raise DataError(f"no problem {args.task_id!r} in {args.file}")
        problem = matches[0]
    else:
        problem = get_problem(args.task_id, sanitized=args.sanitized)
    print(format_problem(problem))
    return 0


def add_problems_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``problems list`` and ``problems show`` on the subparsers `commands`."""
    problems = commands.add_parser("problems", help="list and show coding problems")
    pcommands = problems.add_subparsers(dest="problems_command", metavar="SUBCOMMAND", required=True)

    def add_source(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sanitized", action="store_true", help="use the sanitized MBPP subset (427 tasks)")
        p.add_argument("--file", metavar="JSONL", help="read problems from a JSONL file instead of MBPP")

    plist = pcommands.add_parser("list", help="list problems of a split, one per line")
    plist.add_argument(
        "--split",
        default="test",
        choices=[*MBPP_SPLITS, "all"],
        help="MBPP split (default: test; ids 11-510)",
    )
    plist.add_argument("--limit", type=int, default=0, metavar="N", help="show at most N problems")
    add_source(plist)
    plist.set_defaults(func=cmd_problems_list)

    pshow = pcommands.add_parser("show", help="show one problem: statement, tests, reference")
    pshow.add_argument("task_id", help="task id, e.g. mbpp/11 (or 11)")
    add_source(pshow)
    pshow.set_defaults(func=cmd_problems_show)
    return problems
