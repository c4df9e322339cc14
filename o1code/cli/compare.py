"""`o1code compare RUN_A RUN_B`: a paired comparison of two evaluation runs (`o1code.pipeline.compare`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from o1code.pipeline.compare import JUDGING_FIELDS, compare_runs


def cmd_compare(args: argparse.Namespace) -> int:
    result = compare_runs(args.run_a, args.run_b, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.markdown(), end="")
    return 0


def add_compare_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``compare`` on the subparsers `commands`."""
    cmp = commands.add_parser(
        "compare",
        help="paired comparison of two eval runs: Pass@1 difference with a 95%% CI, McNemar p, flipped problems",
        description="Compare two evaluation runs on the problems both judged (known-bad tasks out unless both "
        "runs count them): each run's Pass@1 with its 95% bootstrap CI; the difference B - A with a "
        "paired-bootstrap 95% CI (problems resampled as pairs); the exact McNemar p-value (two-sided sign test "
        "on the problems whose verdicts differ); and the task ids that flipped each way. Runs that both drew "
        "--samples also get the difference of their sampled pass@1. A difference is significant when its CI "
        "excludes 0; overlapping per-run CIs do not mean 'no difference'. Runs judged on different tests "
        f"are refused, naming the field ({', '.join(JUDGING_FIELDS)} in config.json, or a problem's "
        "tests_digest in results.jsonl).",
        epilog="RUN_A and RUN_B: run directories of `o1code eval` (or RUN/evals/update-NNNN of `o1code ppo`, "
        "RUN/<stage>/eval/<agent> of `o1code selfplay`). Example: o1code compare runs/base runs/sft --json",
    )
    cmp.add_argument("run_a", metavar="RUN_A", help="the baseline run directory")
    cmp.add_argument("run_b", metavar="RUN_B", help="the run compared against it (the difference is B - A)")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    cmp.set_defaults(func=cmd_compare)
    return cmp
