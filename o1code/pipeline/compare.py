"""Paired comparison of two evaluation runs (`o1code compare`): is B's Pass@1 different from A's?

On the problems both runs judged (known-bad tasks out unless both runs count them), `compare_runs`
gives each run's Pass@1 with its 95% bootstrap CI, the difference B - A with a paired-bootstrap 95% CI,
the exact McNemar p-value of the two runs' verdicts, and the task ids that flipped each way. When both
runs drew ``samples``, the difference of their per-problem sampled pass@1 (c / n) is given too.

Runs judged on different tests cannot be paired: `compare_runs` raises `ComparisonError` naming the
field when a judging setting pinned in the runs' ``config.json`` differs (`JUDGING_FIELDS`), or when a
shared problem's judging tests differ (the ``tests_digest`` of its result rows).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from o1code.errors import RunDirError
from o1code.pipeline.errors import ComparisonError
from o1code.pipeline.eval_report import CI_SEED, counted_rows, percent_ci
from o1code.pipeline.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_ci
from o1code.runs import load_config, read_jsonl

#: Settings of an evaluation's ``config.json`` that change how an answer is judged (not how it is found):
#: the benchmark and its variant, which tasks count, and the sandbox's time limit per test run.
JUDGING_FIELDS = ("dataset", "sanitized", "include_known_bad", "timeout_s")


@dataclass
class RunResults:
    """One evaluation run directory as read back: its pinned settings and its result rows by task id."""

    run_dir: str
    config: dict[str, Any]
    rows: dict[str, dict[str, Any]]


def load_run(run_dir: str | os.PathLike) -> RunResults:
    """Read an `o1code eval` run directory (``config.json`` and ``results.jsonl``); `ComparisonError`
    when it is not one or holds no result yet."""
    path = Path(run_dir)
    try:
        config = load_config(path)
        rows = read_jsonl(path / "results.jsonl")
    except RunDirError as exc:
        raise ComparisonError(str(exc)) from None
    if config is None or not (path / "results.jsonl").is_file():
        raise ComparisonError(f"{path} is not an evaluation run directory (no config.json and results.jsonl: "
                              "the RUN_DIR of `o1code eval`, or RUN/evals/update-N of `o1code ppo`)")
    if not rows:
        raise ComparisonError(f"{path} has no finished problem yet")
    return RunResults(str(path), config, {r["task_id"]: r for r in rows})


@dataclass
class Comparison:
    """What `compare_runs` found (shares in [0, 1]; `diff` and its CI are B - A)."""

    run_a: str
    run_b: str
    problems: int  #: problems both runs judged (and count)
    pass_a: float
    ci_a: tuple[float, float]
    pass_b: float
    ci_b: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    p_value: float  #: exact McNemar (two-sided sign test on the discordant problems)
    a_only: list[str] = field(default_factory=list)  #: passed by A, failed by B
    b_only: list[str] = field(default_factory=list)  #: passed by B, failed by A
    only_in_a: int = 0  #: problems judged by one run only (left out)
    only_in_b: int = 0
    sampled_diff: float | None = None  #: B - A of the per-problem sampled pass@1, when both drew samples
    sampled_diff_ci: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        """True when the paired 95% CI of the difference excludes 0."""
        return self.diff_ci[0] > 0 or self.diff_ci[1] < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}

    def markdown(self, label_a: str = "A", label_b: str = "B") -> str:
        """A short markdown report: the two Pass@1, the paired difference, McNemar, the flips."""
        lines = [
            f"| run | Pass@1 [95% CI] (n={self.problems}) |", "|---|---|",
            f"| {label_a}: `{self.run_a}` | {percent_ci(self.pass_a, self.ci_a)} |",
            f"| {label_b}: `{self.run_b}` | {percent_ci(self.pass_b, self.ci_b)} |", "",
            f"- {label_b} - {label_a}: {diff_text(self)} ({'' if self.significant else 'not '}"
            f"significant at 95%); exact McNemar p = {self.p_value:.3g} "
            f"(flips: {len(self.b_only)} to pass, {len(self.a_only)} to fail)",
        ]
        if self.sampled_diff is not None and self.sampled_diff_ci is not None:
            lo, hi = self.sampled_diff_ci
            lines.append(f"- sampled pass@1, {label_b} - {label_a}: {100 * self.sampled_diff:+.1f} points "
                         f"[{100 * lo:+.1f}, {100 * hi:+.1f}]")
        lines.append(f"- passed by {label_b} only: {', '.join(self.b_only) or '-'}")
        lines.append(f"- passed by {label_a} only: {', '.join(self.a_only) or '-'}")
        if self.only_in_a or self.only_in_b:
            lines.append(f"- left out: {self.only_in_a} problems judged by {label_a} only, "
                         f"{self.only_in_b} by {label_b} only")
        return "\n".join(lines) + "\n"


def diff_text(c: Comparison) -> str:
    """``"+8.9 points [+1.1, +16.7]"``: the paired difference and its CI, in points."""
    return f"{100 * c.diff:+.1f} points [{100 * c.diff_ci[0]:+.1f}, {100 * c.diff_ci[1]:+.1f}]"


def _check_same_judging(a: RunResults, b: RunResults, shared: list[str]) -> None:
    for key in JUDGING_FIELDS:
        if a.config.get(key) != b.config.get(key):
            raise ComparisonError(f"the runs were judged differently: {key} is {a.config.get(key)!r} in {a.run_dir} "
                                  f"and {b.config.get(key)!r} in {b.run_dir}; a paired comparison needs the same "
                                  "judging tests")
    for task in shared:
        da, db = a.rows[task].get("tests_digest"), b.rows[task].get("tests_digest")
        if da and db and da != db:
            raise ComparisonError(f"the runs were judged on different tests: tests_digest of {task} is {da} in "
                                  f"{a.run_dir} and {db} in {b.run_dir} (another data version or test conversion)")


def _sampled(row: dict) -> float | None:
    s = row.get("sample_passed")
    return sum(map(bool, s)) / len(s) if s else None


def compare(a: RunResults, b: RunResults, seed: int = CI_SEED) -> Comparison:
    """The paired comparison of two loaded runs (see the module docstring)."""
    _check_same_judging(a, b, sorted(set(a.rows) & set(b.rows)))
    include = bool(a.config.get("include_known_bad"))
    counted_a = {r["task_id"] for r in counted_rows(list(a.rows.values()), include)}
    counted_b = {r["task_id"] for r in counted_rows(list(b.rows.values()), include)}
    shared = sorted(counted_a & counted_b)
    if not shared:
        raise ComparisonError(f"{a.run_dir} and {b.run_dir} judged no problem in common (check their split, "
                              "limit or tasks)")
    va = [float(bool(a.rows[t]["passed"])) for t in shared]
    vb = [float(bool(b.rows[t]["passed"])) for t in shared]
    a_only = [t for t, x, y in zip(shared, va, vb) if x > y]
    b_only = [t for t, x, y in zip(shared, va, vb) if y > x]
    sa, sb = [_sampled(a.rows[t]) for t in shared], [_sampled(b.rows[t]) for t in shared]
    both_sampled = all(x is not None for x in sa + sb)
    return Comparison(
        run_a=a.run_dir, run_b=b.run_dir, problems=len(shared),
        pass_a=sum(va) / len(va), ci_a=bootstrap_ci(va, seed=seed),
        pass_b=sum(vb) / len(vb), ci_b=bootstrap_ci(vb, seed=seed),
        diff=(sum(vb) - sum(va)) / len(va), diff_ci=paired_bootstrap_ci(va, vb, seed=seed),
        p_value=mcnemar_exact(len(a_only), len(b_only)), a_only=a_only, b_only=b_only,
        only_in_a=len(counted_a - counted_b), only_in_b=len(counted_b - counted_a),
        sampled_diff=(sum(sb) - sum(sa)) / len(sa) if both_sampled else None,  # type: ignore[arg-type]
        sampled_diff_ci=paired_bootstrap_ci(sa, sb, seed=seed) if both_sampled else None,  # type: ignore[arg-type]
    )


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, seed: int = CI_SEED) -> Comparison:
    """Compare two `o1code eval` run directories, B against A (see the module docstring). Raises
    `ComparisonError` for a directory that is not a run, runs judged differently, or no shared problem."""
    return compare(load_run(run_a), load_run(run_b), seed=seed)


def run_pass_at_1(run_dir: str | os.PathLike, seed: int = CI_SEED) -> tuple[float, tuple[float, float], int] | None:
    """Pass@1, its 95% bootstrap CI and the number of problems counted, read back from an eval run directory's
    results (None when it holds none yet): for reports whose runs predate the CI in ``summary.json``."""
    try:
        run = load_run(run_dir)
    except ComparisonError:
        return None
    counted = counted_rows(list(run.rows.values()), bool(run.config.get("include_known_bad")))
    if not counted:
        return None
    verdicts = [float(bool(r["passed"])) for r in counted]
    return sum(verdicts) / len(verdicts), bootstrap_ci(verdicts, seed=seed), len(verdicts)


def paired_line(run_a: str | os.PathLike, run_b: str | os.PathLike, label_a: str, label_b: str) -> str:
    """One markdown line for a report: B vs A paired (difference, CI, McNemar p, flips), or why the two runs
    cannot be paired."""
    try:
        c = compare_runs(run_a, run_b)
    except ComparisonError as exc:
        return f"- {label_b} vs {label_a}: not compared ({exc})"
    return (f"- {label_b} vs {label_a} (paired, n={c.problems}): {diff_text(c)}"
            f"{'' if c.significant else ', CI includes 0'}; exact McNemar p = {c.p_value:.3g}; "
            f"flips: {len(c.b_only)} to pass, {len(c.a_only)} to fail")


__all__ = ["JUDGING_FIELDS", "Comparison", "RunResults", "compare", "compare_runs", "diff_text", "load_run",
           "paired_line", "run_pass_at_1"]
