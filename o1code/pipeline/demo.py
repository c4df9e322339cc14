"""`o1code demo`: MCTS over pseudocode steps on a few MBPP test problems, with a live view."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

from o1code.pipeline.evaluate import EvalConfig, markdown_table, run_eval
from o1code.sandboxes import LocalSandbox

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The settings of `o1code demo` (its flags and ``--config`` keys); `run_demo`'s defaults."""

    limit: int = field(default=3, metadata={"help": "number of MBPP test problems", "metavar": "N"})
    model: str = field(default="default", metadata={"help": "model spec ('default': the offline model)",
                                                    "metavar": "SPEC"})
    rollouts: int = field(default=4, metadata={"help": "MCTS rollouts per problem", "metavar": "N"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    run_dir: str = field(default="runs/demo", metadata={"help": "where results go", "metavar": "DIR"})


def run_demo(limit: int = DemoConfig.limit, model: str = DemoConfig.model, rollouts: int = DemoConfig.rollouts,
             seed: int = DemoConfig.seed, run_dir: str = DemoConfig.run_dir) -> int:
    """Search the first `limit` MBPP test problems; prints each rollout and a final table.

    The search is rewarded by each problem's visible test and judged by all its tests. The budget
    (`rollouts` rollouts, 2 samples per expansion, at most 4 steps of 256 tokens) keeps the
    default model on 2 CPU cores within a few minutes for 3 problems.
    """
    from o1code.pipeline.evaluate import load_step_generator

    out = sys.stdout
    print(f"o1code demo: MCTS over pseudocode reasoning steps, model {model!r}, {limit} MBPP test problems", file=out)
    # The sandbox first: on a machine that cannot confine model-written code, stop before anything runs.
    with LocalSandbox(workers=1) as sandbox:
        print(f"sandbox: {sandbox.isolation_summary}", file=out, flush=True)
        print("loading the model (the first run assembles and verifies the offline model) ...", file=out, flush=True)
        t0 = time.perf_counter()
        generator = load_step_generator(model)
        print(f"model ready in {time.perf_counter() - t0:.0f} s\n", file=out, flush=True)

        def on_rollout(i, leaf):
            verdict = leaf.info.get("verdict", "no code")
            passed = leaf.info.get("passed", 0)
            total = leaf.info.get("total", 0)
            title = leaf.state.steps[0].strip().split("\n", 1)[0][:60] if leaf.state.steps else ""
            print(f"  {leaf.state.task_id} rollout {i}: {len(leaf.state.steps)} steps, {verdict} ({passed}/{total})"
                  f"  | step 1: {title}", file=out, flush=True)

        def on_problem(row):
            mark = "PASS" if row["passed"] else "fail"
            print(f"{row['task_id']}: {mark}  ({row['seconds']:.0f} s, {row['tokens']} tokens)\n", file=out, flush=True)

        # Honest defaults: rewarded by the visible test only, judged by all; a budget in rollouts.
        cfg = EvalConfig(agent="mcts", mode="pseudocode", model=model, limit=limit, seed=seed, run_dir=run_dir,
                         rollouts=rollouts, children=2, max_steps=4, max_step_tokens=256)
        summary = run_eval(cfg, generator=generator, progress=False, on_rollout=on_rollout, on_problem=on_problem,
                           sandbox=sandbox)
    print(markdown_table([summary]), file=out)
    print(f"results, trajectories, table and plot: {run_dir}/ (re-running resumes; delete it to start over)", file=out)
    return 0
