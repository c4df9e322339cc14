"""The report of an RL run (``o1code ppo``): its curves (`plot_curves`) and its markdown summary
(`summary_markdown`), from the per-update history and the held-out evaluations."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from o1code.pipeline.compare import paired_line
from o1code.pipeline.eval_report import percent_ci
from o1code.pipeline.stats import ci_yerr
from o1code.rewards import is_oracle

log = logging.getLogger(__name__)


def mean_of(rows: Sequence[dict], key: str) -> float:
    """The mean of the numbers under `key` in `rows` (NaN when none): missing keys and NaNs are skipped."""
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return sum(vals) / len(vals) if vals else float("nan")


def plot_curves(history: Sequence[dict], evals: Sequence[dict], path: Path) -> Path | None:
    """A 2x2 PNG: mean episode reward; the rollouts' reward-test vs hidden-test pass rate; KL to the
    reference; held-out Pass@1 (and its reward-test pass rate). None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        log.warning("no matplotlib: %s not drawn", path)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [h["update"] for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    (a, b), (c, d) = axes
    a.plot(x, [h["reward"] for h in history], marker=".")
    a.set_title("mean episode reward (reward tests)", fontsize=9)
    b.plot(x, [h["reward_test_pass"] for h in history], marker=".", label="reward tests (optimised)")
    b.plot(x, [h["hidden_test_pass"] for h in history], marker=".", label="hidden tests (judging)")
    b.set_title("rollouts: pass rate", fontsize=9)
    b.set_ylim(-0.02, 1.02)
    b.legend(fontsize=7)
    c.plot(x, [h["kl"] for h in history], marker=".")
    c.set_title("KL to the reference (per step)", fontsize=9)
    if evals:
        ex = [e["update"] for e in evals]
        p1 = [e["pass_at_1"] for e in evals]
        d.errorbar(ex, p1, yerr=ci_yerr(p1, [e.get("pass_at_1_ci") for e in evals]), marker="o", capsize=3,
                   label=f"Pass@1 (hidden tests, 95% CI, n={evals[-1]['problems']})")
        d.plot(ex, [e["reward_pass_rate"] for e in evals], marker="x", linestyle="--", label="visible tests pass")
        d.legend(fontsize=7)
    else:  # self-play evaluates in a stage of its own; an empty panel would read as a missing result
        d.text(0.5, 0.5, "no held-out evaluation in this run\n(eval_every or eval_limit is 0)", ha="center",
               va="center", fontsize=8, transform=d.transAxes)
    d.set_title("held-out greedy evaluation", fontsize=9)
    d.set_ylim(-0.02, 1.02)
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b, c, d):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_markdown(config: Any, history: Sequence[dict], evals: Sequence[dict], final_dir: Path,
                     seconds: float) -> str:
    """The markdown report of a run of `config` (a `PPORunConfig`): settings, the held-out evaluations, and the training figures averaged
    over the first and the last three updates."""
    oracle = " (the train problems' own tests; evaluation is held out)" if is_oracle(config.tests) else ""
    adapter = Path(final_dir).parent / "adapter"
    lines = [
        f"# {config.algo.upper()} run: {config.run_dir}", "",
        f"- policy: `{config.model}` ({'LoRA r=%d' % config.lora_r if config.lora else 'full fine-tuning'}), "
        f"mode {config.mode}, steps per episode <= {config.max_steps}, tokens per step <= {config.max_step_tokens}",
        f"- train: {config.dataset} train split, reward tests: {config.tests}{oracle}, reward {config.reward}",
        f"- {len(history)} updates x {config.episodes_per_update} episodes, lr {config.learning_rate}, "
        f"KL coef {config.kl_coef}, {seconds / 60:.1f} min in this call",
        f"- final policy: `{final_dir}` (`o1code eval --agent policy --model {final_dir}`)",
        *([f"- its LoRA adapter: `{adapter}` (`o1code eval --agent greedy --model BASE+lora:{adapter}`, BASE the "
           "model training started from; llama.cpp when it is a GGUF)"] if config.lora else []), "",
        f"## Held-out greedy Pass@1 ({config.dataset} {config.eval_split}, hidden tests)", "",
    ]
    if evals:
        lines += ["| update | problems | Pass@1 [95% CI] | visible-test pass |", "|---|---|---|---|"]
        lines += [f"| {e['update']} | {e['problems']} | {percent_ci(e['pass_at_1'], e.get('pass_at_1_ci'))} "
                  f"| {100 * e['reward_pass_rate']:.1f} |" for e in evals]
        if len(evals) > 1 and evals[0].get("run_dir") and evals[-1].get("run_dir"):  # before vs after, paired
            lines += ["", paired_line(evals[0]["run_dir"], evals[-1]["run_dir"], f"update {evals[0]['update']}",
                                      f"update {evals[-1]['update']}")]
    else:
        lines.append("(no evaluation: eval_every or eval_limit is 0)")
    lines += ["", "## Training (rollouts on train problems)", "",
              "| figure | first 3 updates | last 3 updates |", "|---|---|---|"]
    for key, label in (("reward", "mean reward"), ("reward_test_pass", "reward-test pass"),
                       ("hidden_test_pass", "hidden-test pass"), ("kl", "KL"), ("entropy", "entropy"),
                       ("steps_per_episode", "steps/episode"), ("seconds_per_update", "s/update")):
        lines.append(f"| {label} | {mean_of(history[:3], key):.3f} | {mean_of(history[-3:], key):.3f} |")
    lines += ["", "A widening gap between reward-test and hidden-test pass is reward hacking of the visible tests.",
              "Curves: `curves.png`; scalars: `tb/` (TensorBoard), `history.json`.", ""]
    return "\n".join(lines)
