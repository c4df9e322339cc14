"""Self-play's report and status, rewritten from the finished stages' manifests: ``report.md``,
``report.png``, ``tb/`` and the stage table of `status`."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping

from o1code.pipeline.compare import paired_line, run_pass_at_1
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.eval_report import percent_ci
from o1code.pipeline.selfplay.config import SelfPlayConfig, Stage, plan
from o1code.pipeline.selfplay.manifest import StageClock, _clock, read_manifest
from o1code.pipeline.stats import ci_yerr
from o1code.runs import write_atomic

log = logging.getLogger(__name__)


def _figure_line(figures: Mapping[str, Any]) -> str:
    shown = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(shown[:6]) or "-"


# ---------------------------------------------------------------- the report
def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def iteration_rows(config: SelfPlayConfig, manifests: Mapping[str, dict],
                   run: Path | None = None) -> list[dict[str, Any]]:
    """One row per measured policy: ``label``, ``iteration``, each eval agent's Pass@1 (and MCTS's
    oracle pass@k), the PRM's held-out AUC and RL's train reward / rollouts' hidden-test pass rate; with the
    run directory `run` (default: the config's), ``dirs`` (each agent's eval run directory) and ``ci`` (each
    agent's 95% bootstrap CI, read back from its results)."""
    run = Path(config.run_dir) if run is None else run
    stages = {s.key: s for s in plan(config)}
    rows = []
    points = [("0/baseline", "start", -1), ("0/eval", "after SFT", 0)]
    points += [(f"{i}/eval", f"iteration {i} (PRM + RL)", i) for i in range(1, config.iterations + 1)]
    for key, label, it in points:
        m = manifests.get(key)
        if m is None:
            continue
        f = m["figures"]
        row: dict[str, Any] = {"label": label, "iteration": it, "policy": f.get("policy"), "problems": f.get("problems")}
        row["dirs"], row["ci"] = {}, {}
        for agent in config.eval_agents:
            row[agent] = f.get(f"{agent}_pass_at_1")
            row["dirs"][agent] = str(stages[key].dir(run) / agent) if key in stages else None
            measured = run_pass_at_1(row["dirs"][agent]) if row["dirs"][agent] else None
            row["ci"][agent] = measured[1] if measured else None
        row["mcts_oracle"] = f.get("mcts_oracle_pass_at_k")
        prm, rl = manifests.get(f"{it}/prm"), manifests.get(f"{it}/rl")
        row["prm_auc"] = prm["figures"].get("auc") if prm else None
        row["train_reward"] = rl["figures"].get("train_reward") if rl else None
        row["rollout_reward_pass"] = rl["figures"].get("reward_test_pass") if rl else None
        row["rollout_hidden_pass"] = rl["figures"].get("hidden_test_pass") if rl else None
        rows.append(row)
    return rows


def paired_lines(config: SelfPlayConfig, rows: list[dict[str, Any]]) -> list[str]:
    """Each measured policy against the start and against the policy before it, paired on the held-out problems
    (`o1code compare`: the difference with its 95% CI, McNemar's p, the flips), per eval agent."""
    lines: list[str] = []
    for agent in config.eval_agents:
        for before, after in [*((rows[0], r) for r in rows[1:]), *zip(rows[1:], rows[2:])]:
            a, b = before["dirs"].get(agent), after["dirs"].get(agent)
            if a and b:
                lines.append(paired_line(a, b, f"{agent} {before['label']}", f"{agent} {after['label']}"))
    return lines


def report_markdown(config: SelfPlayConfig, manifests: Mapping[str, dict], run: Path | None = None) -> str:
    """``report.md``: Pass@1 (95% CI) per iteration, the paired comparisons between policies, the stage table
    (seconds, figures), the TCG figures."""
    c = config
    rows = iteration_rows(config, manifests, run)
    lines = [f"# Self-play run: {c.run_dir}", "",
             f"- starting policy `{c.model}`, {c.mode} mode, <= {c.max_steps} steps of <= {c.max_step_tokens} tokens; "
             f"{c.iterations} iteration(s) after SFT; seed {c.seed}",
             f"- data: MCTS ({c.rollouts} rollouts, {c.children} children) on the first {c.train_limit} {c.dataset} "
             f"train problems, labelled by their tests; RL reward tests: {c.tests}"
             f"{' + PRM per step' if c.prm_reward else ''}",
             f"- held out: the first {c.eval_limit} {c.dataset} {c.eval_split} problems; Pass@1 on all their tests, "
             f"which no search or selection sees (MCTS is rewarded by the visible test)", "",
             "## Held-out Pass@1 per iteration", ""]
    agents = list(c.eval_agents)
    head = ["policy", *[f"{a} Pass@1 [95% CI]" for a in agents], "MCTS oracle pass@k", "PRM AUC", "RL train reward",
            "RL rollouts: reward-test / hidden-test pass"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], *[percent_ci(r[a], r["ci"][a]) if r[a] is not None else "-" for a in agents],
                 _pct(r["mcts_oracle"]), _num(r["prm_auc"]),
                 _num(r["train_reward"]), f"{_pct(r['rollout_reward_pass'])} / {_pct(r['rollout_hidden_pass'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("(no evaluation finished yet)")
    n = next((r["problems"] for r in rows if r["problems"]), None)
    if n:
        lines += ["", f"Each Pass@1 is over {n} held-out problems: one problem is {100 / n:.1f} points. Paired "
                  "(the same problems; a change is real when its CI excludes 0):", "", *paired_lines(c, rows)]
    lines += ["", "## Stages", "", "| stage | seconds | figures |", "|---|---|---|"]
    for s in plan(config):
        m = manifests.get(s.key)
        lines.append(f"| {s.key} | {m['seconds']:.0f} | {_figure_line(m['figures'])} |" if m else f"| {s.key} | - | pending |")
    tcg = manifests.get("0/tcg")
    if tcg:
        f = tcg["figures"]
        lines += ["", f"## TCG ({f.get('spec')}, {c.eval_split})", "",
                  f"output match {_pct(f.get('output_match'))}, input validity {_pct(f.get('input_validity'))}, "
                  f">= k tests {_pct(f.get('at_least_k'))}, samples caught beyond the visible test "
                  f"{_pct(f.get('samples_caught_beyond_visible'))}"]
    lines += ["", "Curves: `report.png`; per-iteration scalars: `tb/` (TensorBoard); each stage's outputs and "
              "`manifest.json` under `iter-I/STAGE/`.", ""]
    return "\n".join(lines)


def _plot(config: SelfPlayConfig, manifests: Mapping[str, dict], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        log.warning("no matplotlib: %s not drawn", path)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = iteration_rows(config, manifests, path.parent)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = list(range(len(rows)))
    for agent in config.eval_agents:
        values = [r[agent] if r[agent] is not None else float("nan") for r in rows]
        err = ci_yerr(values, [r["ci"][agent] for r in rows])
        a.errorbar(x, [100 * v for v in values], yerr=[[100 * e for e in side] for side in err], marker="o",
                   capsize=3, label=f"{agent} (95% CI)")
    a.set_xticks(x, [r["label"] for r in rows], fontsize=7, rotation=15)
    a.set_ylabel("Pass@1 (%)")
    a.set_title(f"held-out Pass@1 ({config.dataset} {config.eval_split}, first {config.eval_limit})", fontsize=9)
    a.legend(fontsize=7)
    done = [(s.key, manifests[s.key]["seconds"] / 60) for s in plan(config) if s.key in manifests]
    b.barh([k for k, _ in done][::-1], [v for _, v in done][::-1])
    b.set_xlabel("minutes")
    b.set_title("wall time per stage", fontsize=9)
    b.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tensorboard(config: SelfPlayConfig, manifests: Mapping[str, dict], directory: Path) -> None:
    """Rewrite ``tb/`` from the manifests (so a resumed run never logs a point twice)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    shutil.rmtree(directory, ignore_errors=True)
    writer = SummaryWriter(str(directory))
    try:
        for r in iteration_rows(config, manifests, directory.parent):
            step = r["iteration"] + 1  # 0: the starting policy, 1: after SFT, 1 + I: after iteration I
            for key in (*config.eval_agents, "mcts_oracle", "prm_auc", "train_reward", "rollout_reward_pass",
                        "rollout_hidden_pass"):
                if isinstance(r.get(key), (int, float)):
                    writer.add_scalar(f"selfplay/{key}", r[key], step)
        for key, m in manifests.items():
            writer.add_scalar(f"seconds/{key.replace('/', '_')}", m["seconds"], m["iteration"])
    finally:
        writer.close()


def write_report(run: Path, config: SelfPlayConfig, manifests: Mapping[str, dict]) -> Path:
    """Write ``report.md``, ``report.png`` and ``tb/`` from the finished stages' manifests."""
    path = run / "report.md"
    write_atomic(path, report_markdown(config, manifests, run))
    _plot(config, manifests, run / "report.png")
    _tensorboard(config, manifests, run / "tb")
    return path


def _on_disk(config: SelfPlayConfig, stage: Stage, run: Path) -> str:
    """What a started stage has committed so far: problems per results file, the newest checkpoint."""
    d = stage.dir(run)
    total = config.train_limit if stage.name == "collect" else config.eval_limit
    parts = [f"{r.parent.name}: {sum(1 for _ in r.open())} of {total} problems"
             for r in sorted(d.glob("*/results.jsonl"))]
    steps = [int(p.name[11:]) for p in d.glob("**/checkpoint-*") if p.name[11:].isdigit()]
    if steps:
        parts.append(f"checkpoint at step {max(steps)}")
    history = d / "checkpoint" / "history.json"  # PPO/GRPO's checkpoint
    if history.is_file():
        parts.append(f"{len(json.loads(history.read_text()))} updates checkpointed")
    if (d / StageClock.FILE).is_file():
        parts.append(f"{_clock(json.loads((d / StageClock.FILE).read_text())['seconds'])} spent")
    return ", ".join(parts) or "-"


def status(run_dir: str | Path) -> str:
    """The stage table of the run in `run_dir` (read from its config and manifests; nothing runs)."""
    run = Path(run_dir)
    path = run / "config.json"
    if not path.is_file():
        raise PipelineError(f"{run} holds no selfplay run (no config.json)")
    config = SelfPlayConfig(**json.loads(path.read_text()))
    manifests: dict[str, dict] = {}
    lines = ["| stage | state | seconds | figures |", "|---|---|---|---|"]
    for s in plan(config):
        try:
            m = read_manifest(run, s)
        except PipelineError as exc:
            lines.append(f"| {s.key} | CHANGED | - | {exc} |")
            continue
        if m is not None:
            manifests[s.key] = m
            lines.append(f"| {s.key} | done | {m['seconds']:.0f} | {_figure_line(m['figures'])} |")
        else:
            started = s.dir(run).exists()
            lines.append(f"| {s.key} | {'started' if started else 'pending'} | - | "
                         f"{_on_disk(config, s, run) if started else '-'} |")
    return report_markdown(config, manifests, run).split("## Stages")[0] + "## Stages\n\n" + "\n".join(lines) + "\n"
