"""The report of ``o1code prm eval``'s best-of-N (`o1code.pipeline.prm_best_of_n`): the PRM's ranking
within a problem, and the summary as a markdown table and as a bar chart (every figure from the summary dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def ranking(scored_rows: Sequence[Sequence[dict]]) -> dict[str, Any]:
    """How the PRM ranks within a problem (each sample a dict with ``score``, ``passed`` on the hidden
    tests and ``reward_passed`` on the visible ones): over every pair of one problem's samples of which
    one passes the hidden tests and the other fails them, the share the PRM scores higher (a tie counts
    half): ``pair_accuracy`` over ``pairs`` from ``pair_problems`` problems, with a 95% bootstrap CI over
    problems (``pair_accuracy_ci``); the same over the pairs (passes, passes only the visible tests), the
    distinction a selector needs beyond the visible test: ``visible_only_accuracy`` over
    ``visible_only_pairs`` (``visible_only_problems``, ``visible_only_ci``). None where there is no pair.
    0.5 is chance."""
    from o1code.pipeline.stats import ratio_ci

    per: dict[str, list[tuple[float, int]]] = {"all": [], "visible": []}
    for samples in scored_rows:
        won = {"all": 0.0, "visible": 0.0}
        count = {"all": 0, "visible": 0}
        good = [s["score"] for s in samples if s["passed"]]
        for bad in samples:
            if bad["passed"]:
                continue
            kinds = ("all", "visible") if bad["reward_passed"] else ("all",)
            for g in good:
                for k in kinds:
                    won[k] += 1.0 if g > bad["score"] else 0.5 if g == bad["score"] else 0.0
                    count[k] += 1
        for k in per:
            if count[k]:
                per[k].append((won[k], count[k]))
    out: dict[str, Any] = {}
    for k, name, n_name, p_name, ci_name in (("all", "pair_accuracy", "pairs", "pair_problems", "pair_accuracy_ci"),
                                             ("visible", "visible_only_accuracy", "visible_only_pairs",
                                              "visible_only_problems", "visible_only_ci")):
        wins, counts = [w for w, _ in per[k]], [c for _, c in per[k]]
        out[name] = sum(wins) / sum(counts) if counts else None
        out[n_name], out[p_name] = sum(counts), len(counts)
        out[ci_name] = list(ratio_ci(wins, counts)) if counts else None
    return out


def best_of_n_table(summary: dict) -> str:
    """Markdown: one row per selector, and the oracle ceiling."""
    lines = [f"best-of-{summary['n']} on {summary['problems']} {summary['split']} problems "
             f"(PRM score: {summary['aggregate']} step)", "", "| selector | Pass@1 |", "|---|---|"]
    lines += [f"| {sel} | {100 * v:.1f} |" for sel, v in summary["pass_at_1"].items()]
    lines += [f"| oracle pass@{summary['n']} (ceiling) | {100 * summary['oracle_pass_at_n']:.1f} |"]
    for sel, h in summary.get("headroom", {}).items():
        pool = "all samples" if sel == "random" else "the samples passing the visible tests (else all)"
        lo, hi = h["expected_ci"] or (float("nan"), float("nan"))
        lines += ["", f"from {pool}: a random pick passes {100 * h['expected']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
                      f"(expectation), a perfect one {100 * h['perfect']:.1f}; the pick matters on "
                      f"{h['mixed_problems']} of {summary['problems']} problems"]
    for name, g in summary.get("gain", {}).items():
        lines += ["", f"{name}: {100 * g['diff']:+.1f} points [{100 * g['ci'][0]:+.1f}, {100 * g['ci'][1]:+.1f}] "
                      "(paired 95% CI over problems; random at its expectation)"]
    rk = summary.get("ranking")
    if rk:
        def share(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"
        def ci(v: list[float] | None) -> str:
            return "" if not v else f" [{share(v[0])}, {share(v[1])}]"
        lines += ["", f"within a problem: the PRM ranks a correct sample above a failing one in "
                      f"{share(rk['pair_accuracy'])}{ci(rk.get('pair_accuracy_ci'))} of {rk['pairs']} pairs "
                      f"({rk.get('pair_problems', '?')} problems), above one passing only the visible tests in "
                      f"{share(rk['visible_only_accuracy'])}{ci(rk.get('visible_only_ci'))} of "
                      f"{rk['visible_only_pairs']} ({rk.get('visible_only_problems', '?')} problems); chance: 50%, "
                      "95% CIs over problems"]
    held = summary.get("heldout")
    if held:
        auc = "-" if held.get("auc") is None else f"{held['auc']:.3f}"
        pair = "-" if held.get("pair_accuracy") is None else f"{100 * held['pair_accuracy']:.1f}%"
        lines += ["", f"held-out steps: AUC {auc}, accuracy {100 * held.get('accuracy', 0):.1f}% "
                      f"({held.get('steps', 0)} steps); pair accuracy {pair} ({held.get('pairs', 0)} pairs)"]
    return "\n".join(lines) + "\n"


def plot_best_of_n(summary: dict, path: Path) -> None:
    """A bar chart of Pass@1 per selector, with the oracle ceiling as a line; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sels = list(summary["pass_at_1"])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(sels, [100 * summary["pass_at_1"][s] for s in sels])
    ax.axhline(100 * summary["oracle_pass_at_n"], color="gray", linestyle="--", label=f"oracle pass@{summary['n']}")
    ax.set_ylabel("Pass@1 (hidden tests), %")
    ax.set_ylim(0, 100)
    ax.set_title(f"best-of-{summary['n']}, {summary['problems']} {summary['split']} problems", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["best_of_n_table", "plot_best_of_n", "ranking"]
