"""The figures of an evaluation run: `summarise` (result rows -> summary dict), `markdown_table`, the
bar chart, and `write_report` (``summary.json``, ``summary.md``, ``summary.png``).

Definitions of the figures: `o1code.pipeline.evaluate`'s docstring. Every Pass@1 comes with its 95%
bootstrap interval over problems and the number of problems counted; runs with ``samples`` add the
unbiased pass@k (Chen et al. 2021) for k = 1, 2, 5, 10, ... up to the samples per problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from o1code.pipeline.stats import LEVEL, bootstrap_ci, ci_yerr, ks_up_to, pass_at_k
from o1code.runs import write_atomic

#: The seed of the summaries' bootstrap (fixed: a summary is a function of its rows alone).
CI_SEED = 0


def counted_rows(rows: Sequence[dict], include_known_bad: bool) -> list[dict]:
    """The rows that count in Pass@1 (known-bad tasks out unless included), ordered by task id so that
    the bootstrap does not depend on the order problems finished in (Ray, resumes)."""
    return sorted((r for r in rows if include_known_bad or not r.get("known_bad")), key=lambda r: r["task_id"])


def sample_figures(counted: Sequence[dict]) -> dict[str, Any]:
    """pass@k (with CIs) of rows holding ``sample_passed`` (the judged verdicts of their N samples)."""
    sampled = [r["sample_passed"] for r in counted if r.get("sample_passed")]
    if not sampled or len(sampled) < len(counted):
        return {}
    n = min(len(s) for s in sampled)
    at_k, cis = {}, {}
    for k in ks_up_to(n):
        per_problem = [pass_at_k(len(s), sum(map(bool, s)), k) for s in sampled]
        at_k[str(k)] = sum(per_problem) / len(per_problem)
        cis[str(k)] = list(bootstrap_ci(per_problem, seed=CI_SEED))
    return {"samples_per_problem": n, "pass_at_k": at_k, "pass_at_k_ci": cis}


def summarise(rows: Sequence[dict], config: Any) -> dict[str, Any]:
    """Aggregate per-problem rows into the figures of the table (`config`: the run's `EvalConfig`)."""
    counted = counted_rows(rows, config.include_known_bad)
    asprs = [r["aspr"] for r in rows if r.get("aspr") is not None]
    n = len(rows) or 1
    seconds = sum(r["seconds"] for r in rows)

    def share(key: str) -> float:
        return (sum(bool(r.get(key)) for r in counted) / len(counted)) if counted else 0.0

    ci = bootstrap_ci([float(bool(r["passed"])) for r in counted], seed=CI_SEED)
    return {
        "agent": config.agent,
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "tests": config.tests,
        "show_tests": config.show_tests,
        "prompt_style": getattr(config, "prompt_style", None) or "fewshot",
        "oracle": config.oracle,
        "problems": len(rows),
        "counted": len(counted),
        "pass_at_1": share("passed"),
        "pass_at_1_ci": list(ci) if counted else None,
        "ci_level": LEVEL,
        "reward_pass_rate": share("reward_passed"),
        "oracle_pass_at_k": share("oracle_pass") if config.agent not in ("greedy", "policy") else None,
        "k_mean": (sum(r.get("samples", 0) for r in counted) / len(counted)) if counted else 0.0,
        **({"sample_temperature": config.temperature, **sample_figures(counted)} if config.samples else {}),
        "aspr": (sum(asprs) / len(asprs)) if asprs else None,
        "aspr_problems": len(asprs),
        "avg_tokens": sum(r["tokens"] for r in rows) / n,
        "avg_steps": sum(r["steps"] for r in rows) / n,
        "avg_seconds": seconds / n,
        "outside_generation_share": (1 - sum(r["generate_seconds"] for r in rows) / seconds) if seconds else 0.0,
        "known_bad_excluded": [r["task_id"] for r in rows if r.get("known_bad") and not config.include_known_bad],
        "sandbox": ", ".join(sorted({r.get("sandbox", "unrecorded") for r in rows})),
    }


def percent_ci(value: float, ci: Sequence[float] | None) -> str:
    """``"42.0 [33.3, 51.1]"``: a share and its interval in percent (the value alone without an interval)."""
    if ci is None or any(c != c for c in ci):  # missing, or nan (no problems)
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _reward_label(s: dict) -> str:
    return f"{s.get('tests', '?')} (ORACLE)" if s.get("oracle") else s.get("tests", "?")


def _pass_at_k_cell(s: dict) -> str:
    at_k = s.get("pass_at_k")
    if not at_k:
        return "-"
    cells = [f"@{k} {percent_ci(v, s.get('pass_at_k_ci', {}).get(k))}" for k, v in at_k.items()]
    return f"{'; '.join(cells)} (n={s['samples_per_problem']}, T={s.get('sample_temperature')})"


def markdown_table(summaries: Sequence[dict]) -> str:
    """A markdown table with one row per run summary."""
    head = ("| agent | mode | model | reward tests | problems | Pass@1 [95% CI] | sampled pass@k [95% CI] "
            "| oracle pass@k (k) | reward pass | ASPR | tokens/problem | s/problem | outside gen. |")
    lines = [head, "|" + "---|" * 13]
    for s in summaries:
        aspr = f"{100 * s['aspr']:.1f}" if s["aspr"] is not None else "-"
        opk = s.get("oracle_pass_at_k")
        opk = f"{100 * opk:.1f} ({s.get('k_mean', 0):.1f})" if opk is not None else "-"
        lines.append(
            f"| {s['agent']} | {s['mode']} | {s['model']} | {_reward_label(s)} | {s['counted']} "
            f"| {percent_ci(s['pass_at_1'], s.get('pass_at_1_ci'))} | {_pass_at_k_cell(s)} | {opk} "
            f"| {100 * s.get('reward_pass_rate', 0):.1f} | {aspr} "
            f"| {s['avg_tokens']:.0f} | {s['avg_seconds']:.1f} | {100 * s['outside_generation_share']:.2f}% |"
        )
    lines.append("\nCIs: percentile bootstrap over problems; compare two runs with `o1code compare RUN_A RUN_B` "
                 "(a paired CI and McNemar's test), not by overlapping intervals.")
    if any(s.get("oracle") for s in summaries):
        lines.append("\n**ORACLE:** runs marked (ORACLE) were rewarded by the judging tests themselves: their "
                     "Pass@1 is not an honest Pass@1.")
    unsafe = [f"{s['agent']}/{s['mode']}" for s in summaries
              if any(x.startswith("none") for x in s.get("sandbox", "").split(", "))]
    if unsafe:
        lines.append(f"\n**UNSAFE:** {', '.join(unsafe)} ran model-written code without sandbox confinement.")
    return "\n".join(lines) + "\n"


def plot_summaries(summaries: Sequence[dict], path: Path) -> None:
    """A bar chart of Pass@1 (with its 95% CI and n), oracle pass@k and ASPR per run, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s['agent']}/{s['mode']} (n={s['counted']})\n{s['model'][-24:]}\nreward: {_reward_label(s)}"
              for s in summaries]
    x = range(len(summaries))
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(summaries)), 3.8))
    err = ci_yerr([s["pass_at_1"] for s in summaries], [s.get("pass_at_1_ci") for s in summaries])
    ax.bar([i - 0.27 for i in x], [100 * s["pass_at_1"] for s in summaries], width=0.27, label="Pass@1 (95% CI)",
           yerr=[[100 * e for e in side] for side in err], capsize=3)
    ax.bar([i for i in x], [100 * (s.get("oracle_pass_at_k") or 0) for s in summaries], width=0.27,
           label="oracle pass@k")
    ax.bar([i + 0.27 for i in x], [100 * (s["aspr"] or 0) for s in summaries], width=0.27, label="ASPR")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    if any(s.get("oracle") for s in summaries):
        ax.set_title("ORACLE: some runs were rewarded by the judging tests", fontsize=9, color="red")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run_dir: Path, summaries: Sequence[dict]) -> None:
    """``summary.json``, ``summary.md`` and ``summary.png`` of `summaries` in `run_dir` (atomic writes)."""
    write_atomic(run_dir / "summary.json", json.dumps(list(summaries), indent=2))
    write_atomic(run_dir / "summary.md", markdown_table(summaries))
    plot_summaries(summaries, run_dir / "summary.png")


__all__ = ["CI_SEED", "counted_rows", "markdown_table", "percent_ci", "plot_summaries", "sample_figures",
           "summarise", "write_report"]
