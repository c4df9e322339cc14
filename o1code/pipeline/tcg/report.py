"""The figures of a TCG evaluation: `summarise_tcg` (results rows -> summary), `tcg_markdown` (the
table) and `plot_tcg` (the bar chart).

(a) the paper's figure: the model's own expected outputs that match the reference's, headlined
    without the model's copy of the example test shown in its prompt (a copy matches trivially;
    the figure with it is a second line);
(b) input validity; (c) problems with at least k kept tests;
(d) discrimination, reported apart for the two categories of wrong solutions (`WRONG_KINDS`), each
    failing the hidden tests by selection (so the judging tests reject all of them and that is no
    figure). Per category: the share the generated tests reject, the share the visible test alone
    rejects, and the key figure, the share the generated tests catch while the visible test passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

#: The categories of wrong solutions, reported apart: solutions a model wrote ("sample": sampled,
#: or read from --wrong-samples) and AST mutants of the reference ("mutant").
WRONG_KINDS = ("sample", "mutant")


def empty_tally() -> dict[str, int]:
    return {"n": 0, "rejected_generated": 0, "rejected_visible": 0, "caught_beyond_visible": 0}


def summarise_tcg(rows: Sequence[dict], k: int, model: str = "", split: str = "") -> dict[str, Any]:
    """The four figures (and their parts) over results rows.

    Returns a dict with
    (a) ``output_match``: the model's expected outputs that equal the reference's, over the inputs the
    reference ran on, leaving out a copy of the example shown in the prompt (it matches trivially);
    ``output_match_with_example``: the same counting that copy (the raw paper figure);
    ``example_copied``: problems whose checked cases include the shown example, of problems whose
    prompt showed a parseable one; ``all_correct``: problems whose every checked output (example
    left out) matched, of problems with one;
    (b) ``input_validity`` (inputs the reference ran on / distinct well-formed inputs), ``malformed_rate``;
    (c) ``at_least_k`` (problems with >= k kept tests), ``mean_kept``;
    (d) per category ``samples`` / ``mutants`` (`WRONG_KINDS`): ``wrong_samples`` (the count),
    ``samples_rejected_generated``, ``samples_rejected_visible``, ``samples_caught_beyond_visible``
    (rejected by the generated tests and passing the visible test), each a share of ``wrong_samples``,
    and ``samples_caught_of_visible_passing`` (caught_beyond_visible over those passing the visible
    test); likewise ``wrong_mutants``, ``mutants_*``. Every wrong solution fails the judging tests
    by selection, so no "rejected by the dataset tests" share is reported.
    Also ``wrong_solutions`` (all categories), ``samples_given`` / ``samples_correct``,
    ``reference_false_rejections`` (count), ``unverified_problems`` and the raw ``totals``. A ratio
    with a zero denominator is None.
    """
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    tot: dict[str, int] = {}
    for r in rows:
        for key, v in r["counts"].items():
            tot[key] = tot.get(key, 0) + v
    checked = tot.get("checked", 0)
    matches = tot.get("model_output_matches_reference", 0)
    distinct = checked + tot.get("invalid_input", 0)
    ex = [r.get("example") or {} for r in rows]
    ex_copied = sum(e.get("copied", 0) for e in ex)
    ex_matched = sum(e.get("copied_matched", 0) for e in ex)

    def own(r: dict, e: dict) -> tuple[int, int]:  # (checked, matches) without the copied example
        c = r["counts"]
        return c["checked"] - e.get("copied", 0), c["model_output_matches_reference"] - e.get("copied_matched", 0)

    owned = [own(r, e) for r, e in zip(rows, ex)]
    with_checked = [(c, m) for c, m in owned if c]
    out: dict[str, Any] = {
        "model": model, "split": split, "problems": len(rows), "k": k,
        "output_match": ratio(matches - ex_matched, checked - ex_copied),
        "output_match_with_example": ratio(matches, checked),
        "example_copied": ratio(sum(e.get("copied", 0) for e in ex if e.get("shown")),
                                sum(bool(e.get("shown")) for e in ex)),
        "all_correct": ratio(sum(m == c for c, m in with_checked), len(with_checked)),
        "input_validity": ratio(checked, distinct),
        "malformed_rate": ratio(tot.get("malformed", 0), tot.get("generated", 0)),
        "at_least_k": ratio(sum(r["counts"]["kept"] >= k for r in rows), len(rows)),
        "mean_kept": ratio(tot.get("kept", 0), len(rows)),
        "wrong_solutions": sum(r.get("n_wrong", 0) for r in rows),
    }
    for kind in WRONG_KINDS:
        t = {key: sum((r.get("wrong") or {}).get(kind, {}).get(key, 0) for r in rows) for key in empty_tally()}
        n = t["n"]
        out[f"wrong_{kind}s"] = n
        out[f"{kind}s_rejected_generated"] = ratio(t["rejected_generated"], n)
        out[f"{kind}s_rejected_visible"] = ratio(t["rejected_visible"], n)
        out[f"{kind}s_caught_beyond_visible"] = ratio(t["caught_beyond_visible"], n)
        out[f"{kind}s_caught_of_visible_passing"] = ratio(t["caught_beyond_visible"], n - t["rejected_visible"])
    out.update({
        "samples_given": sum(r.get("samples_given", 0) for r in rows),
        "samples_correct": sum(r.get("samples_correct", 0) for r in rows),
        "reference_false_rejections": sum(r["reference_rejected"] for r in rows),
        "unverified_problems": sum(not r["verified"] for r in rows),
        "totals": tot,
    })
    return out


def _wrong_figures(kind: str, title: str, short: str) -> list[tuple[str, str, str, str | None]]:
    return [
        (f"wrong_{kind}s", f"(d) {title}: wrong solutions", "count", None),
        (f"{kind}s_rejected_generated", f"(d) {title}: rejected by the generated tests", "pct", f"(d) {short}: gen"),
        (f"{kind}s_rejected_visible", f"(d) {title}: rejected by the visible test alone", "pct", f"{short}: visible"),
        (f"{kind}s_caught_beyond_visible", f"(d) {title}: caught by the generated tests, missed by the visible test",
         "pct", f"{short}: gen, not vis"),
        (f"{kind}s_caught_of_visible_passing", f"(d) {title}: ... of those passing the visible test", "pct", None),
    ]


#: (summary key, table label, "pct" or "count", plot label or None when not plotted)
_FIGURES: list[tuple[str, str, str, str | None]] = [
    ("output_match", "(a) model outputs matching the reference (copied shown example left out)", "pct", "(a) match"),
    ("output_match_with_example", "(a) ... counting a copied shown example", "pct", "(a) incl. example"),
    ("example_copied", "problems whose cases copy the shown example", "pct", None),
    ("all_correct", "problems with every output correct (shown example left out)", "pct", "all correct"),
    ("input_validity", "(b) input validity", "pct", "(b) valid in"),
    ("malformed_rate", "malformed cases", "pct", "malformed"),
    ("at_least_k", "(c) problems with >= k kept tests", "pct", "(c) >=k kept"),
    *_wrong_figures("sample", "sampled solutions", "samples"),
    *_wrong_figures("mutant", "mutants of the reference", "mutants"),
]

_TABLE_NOTE = ("Every wrong solution fails the judging tests (all dataset tests): that is how it was selected, "
               "so the dataset tests reject 100% of them by construction and that share is not reported. "
               "(a) leaves out the model's copy of the example test shown in its prompt, which matches trivially.")


def tcg_markdown(summaries: Sequence[dict]) -> str:
    """A markdown table: one row per figure, one column per summary (model), and a note below."""
    def fmt(v: Any, kind: str) -> str:
        if v is None:
            return "n/a"
        return f"{100 * v:.1f}%" if kind == "pct" else str(v)

    head = "| figure | " + " | ".join(f"{s['model']} ({s['split']}, {s['problems']} problems)" for s in summaries) + " |"
    lines = [head, "|---|" + "---|" * len(summaries)]
    for key, label, kind, _ in _FIGURES:
        lines.append(f"| {label} | " + " | ".join(fmt(s.get(key), kind) for s in summaries) + " |")
    lines.append("| false rejections of the reference | "
                 + " | ".join(str(s["reference_false_rejections"]) for s in summaries) + " |")
    return "\n".join(lines) + "\n\n" + _TABLE_NOTE + "\n"


def plot_tcg(summaries: Sequence[dict], path: Path) -> None:
    """A grouped bar chart of the share figures (percent), one colour per summary, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [(k, short) for k, _, kind, short in _FIGURES if kind == "pct" and short]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        vals = [100 * (s.get(k) or 0.0) for k, _ in plotted]
        ax.bar([j + i * width for j in range(len(plotted))], vals, width, label=f"{s['model']} ({s['problems']})")
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(plotted))])
    ax.set_xticklabels([short for _, short in plotted], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Test Case Generator ((d): wrong solutions, all failing the judging tests by selection)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["WRONG_KINDS", "empty_tally", "plot_tcg", "summarise_tcg", "tcg_markdown"]
