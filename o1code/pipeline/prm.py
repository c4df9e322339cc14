"""The PRM's data stages: collect step-labelled trees and build training rows (best-of-N measurement:
`o1code.pipeline.prm_best_of_n`; Math-Shepherd labels: `o1code.pipeline.prm_shepherd`).

- `collect`: MCTS (`run_eval`, agent ``mcts``) on problems of a split, rewarded by the dataset tests:
  on the **train** split this is training data, labelled by the tests (the run's config says
  ``tests: dataset``, ORACLE, as it must); on ``validation`` it is held-out data for measuring the PRM
  and is tagged so. ``test`` is refused. Every node's soft (Q/N) and hard label and its siblings come
  from the trajectory records (`o1code.data.trajectories`); `prm_rows` turns them into point and pair
  rows (`o1code.training.prm`), written to ``RUN/rows.jsonl``.
- `play_problems`: the loop over problems of the PRM stages that play episodes (here or on Ray).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from o1code.agents import LLMConfig
from o1code.data import Problem, load_dataset
from o1code.data.trajectories import (answer_pairs, in_problem_order, pairwise_examples, pointwise_examples,
                                      read_trajectories)
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, run_eval, select_problems
from o1code.rewards.process import default_question
from o1code.runs import pin_config, write_atomic, write_jsonl
from o1code.training.sft import collection_settings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- collection
def check_data_split(split: str) -> None:
    """PRM rows come from train problems (training data) or validation ones (held-out rows); never test."""
    if split not in ("train", "validation"):
        raise PipelineError(f"PRM data comes from the train split (or validation, to measure the PRM); "
                            f"never from {split!r}")


@dataclass
class PRMCollectConfig:
    """Every setting of ``o1code prm collect`` (MCTS settings as in ``o1code eval``)."""

    model: str = field(default="default", metadata={"help": "the policy that searches", "metavar": "SPEC"})
    dataset: str = "mbpp"
    split: str = field(default="train", metadata={"help": "train (training rows) or validation (held-out rows)"})
    limit: int | None = field(default=40, metadata={"help": "the first N problems of the split", "metavar": "N"})
    seed: int = 0
    run_dir: str = field(default="runs/prm-collect", metadata={"metavar": "DIR"})
    mode: str = "pseudocode"
    show_tests: str = "first"
    max_steps: int = 4
    max_step_tokens: int = 256
    rollouts: int = 8
    children: int = 3
    margin: float = field(default=0.1, metadata={"help": "pair rows: least value gap between two siblings"})
    label: str = field(default="soft", metadata={"help": "point rows' labels: soft (Q/N) or hard"})
    # None-valued by default so that collections pinned before these keys existed still resume
    prm: str | None = field(default=None, metadata={"help": "a trained PRM guiding the search (new data of a "
                                                    "self-play iteration)", "metavar": "DIR"})
    value_weight: float | None = field(default=None, metadata={"help": "weight of the PRM's value in UCT "
                                                               "selection (default 1 with --prm)", "metavar": "W"})
    prompt_style: str | None = field(default=None, metadata={"help": "fewshot (the default) or instruct (see "
                                                             "`o1code eval --prompt-style`)"})
    tests: str | None = field(default=None, metadata={
        "help": "the reward tests whose verdicts label the nodes: dataset (the default: the problems' own tests, "
                "ORACLE labels, fine on train), tcg or tcg:SPEC (the test-case generator's), or visible"})
    ray: str | None = field(default=None, metadata={"help": "search the problems on Ray worker actors (as `o1code "
                                                    "eval --ray`): local, auto or a cluster ADDRESS; not pinned",
                                                    "metavar": "ADDRESS"})
    answers: list[str] | None = field(default=None, metadata={
        "help": "results.jsonl files of `o1code eval` runs on train problems with the visible reward tests (an "
                "RFT harvest): each (passes every test, passes only the visible test) pair of answers to one "
                "problem adds a pair row; the runs' mode and shown tests must be this collection's",
        "metavar": "FILE[,FILE]"})

    def eval_config(self) -> EvalConfig:
        check_data_split(self.split)
        if self.label not in ("soft", "hard"):
            raise PipelineError(f"label must be soft or hard, got {self.label!r}")
        return EvalConfig(agent="mcts", mode=self.mode, model=self.model, dataset=self.dataset, split=self.split,
                          limit=self.limit, seed=self.seed, run_dir=str(Path(self.run_dir) / "search"),
                          max_steps=self.max_steps, tests=self.tests or "dataset", show_tests=self.show_tests,
                          max_step_tokens=self.max_step_tokens, rollouts=self.rollouts, children=self.children,
                          prm=self.prm, value_weight=self.value_weight, prompt_style=self.prompt_style,
                          ray=self.ray)


def prm_rows(trajectories: Path, problems: Sequence[Problem], mode: str, show_tests: str, split: str,
             margin: float = 0.1, label: str = "soft") -> list[dict]:
    """Point rows and pair rows (sibling steps whose values differ by >= `margin`) from a search's
    trajectory file, each tagged with ``task_id`` and ``split``. Every distinct visited node is
    labelled once, in the first path that reaches it; a point row is such a path with the labels of
    its new nodes (None on the steps labelled in an earlier row), so one forward pass of the PRM
    trains on several steps (about 2x fewer tokens than one row per node). Records of a problem not
    in `problems` are an error."""
    by_id = {p.task_id: p for p in problems}
    records = in_problem_order(read_trajectories(trajectories), list(by_id))
    unknown = sorted({r.task_id for r in records} - set(by_id))
    if unknown:
        raise PipelineError(f"{trajectories} holds problems outside the {split!r} split: {', '.join(unknown[:5])}")
    rows: list[dict] = []
    last: dict | None = None
    for ex in pointwise_examples(records):  # in record order: a path's new nodes come one after another
        value = ex.value if label == "soft" else float(ex.hard if ex.hard is not None else ex.value >= 0.5)
        if last is not None and last["task_id"] == ex.task_id and last["steps"] == list(ex.prefix):
            last["steps"].append(ex.step)
            last["labels"].append(value)
            continue
        last = {"kind": "point", "task_id": ex.task_id, "split": split,
                "question": default_question(by_id[ex.task_id], show_tests=show_tests),
                "steps": [*ex.prefix, ex.step], "labels": [None] * len(ex.prefix) + [value]}
        rows.append(last)
    for ex in pairwise_examples(records, margin):
        rows.append({"kind": "pair", "task_id": ex.task_id, "split": split,
                     "question": default_question(by_id[ex.task_id], show_tests=show_tests),
                     "prefix": list(ex.prefix), "win": ex.chosen, "lose": ex.rejected})
    return rows


def answer_pair_rows(config: PRMCollectConfig) -> list[dict]:
    """The pair rows of ``config.answers`` (`answer_pairs`, over all the files together): eval runs on the
    train split, rewarded by the visible tests, whose mode and shown tests are the collection's."""
    if not config.answers:
        return []
    if config.split != "train":
        raise PipelineError("--answers adds training rows: collect on the train split")
    by_id = {p.task_id: p for p in load_dataset(config.dataset, "train")}
    wanted = {"dataset": config.dataset, "split": "train", "tests": "visible", "mode": config.mode,
              "show_tests": config.show_tests}
    records = []
    for path in config.answers:
        run = collection_settings(path)
        wrong = {k: getattr(run, k) for k, v in wanted.items() if getattr(run, k) != v}
        if not Path(path).is_file() or wrong:
            raise PipelineError(f"--answers {path}: not the results.jsonl of an eval run with {wanted} "
                                f"(it has {wrong or 'no such file'})")
        records += read_trajectories(path)
    return [{"kind": "pair", "task_id": ex.task_id, "split": "train", "source": "answers",
             "question": default_question(by_id[ex.task_id], show_tests=config.show_tests),
             "prefix": list(ex.prefix), "win": ex.chosen, "lose": ex.rejected}
            for ex in answer_pairs(in_problem_order(records, list(by_id)))]


def collect(config: PRMCollectConfig, generator: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run the search (resumable) and write ``RUN/rows.jsonl``; returns counts of problems and rows."""
    ev = config.eval_config()
    answer_rows = answer_pair_rows(config)  # bad --answers fail before the search starts
    pin_config(config.run_dir, asdict(config), ignore=("run_dir", "limit", "ray", "answers"))
    log.info("PRM collect on %s/%s: MCTS rewarded by the %s tests (labels of %s data)", config.dataset,
             config.split, ev.tests, "training" if config.split == "train" else "held-out")
    summary = run_eval(ev, generator=generator, progress=progress)
    problems = select_problems(ev)
    rows = prm_rows(Path(ev.run_dir) / "trajectories.jsonl", problems, config.mode, config.show_tests,
                    config.split, config.margin, config.label) + answer_rows
    out = Path(config.run_dir) / "rows.jsonl"
    write_jsonl(out, rows)
    counts = {"problems": summary["problems"], "rows": str(out),
              "point_rows": sum(r["kind"] == "point" for r in rows),
              "pair_rows": sum(r["kind"] == "pair" for r in rows), "answer_pair_rows": len(answer_rows),
              "split": config.split}
    write_atomic(Path(config.run_dir) / "summary.json", json.dumps(counts, indent=2))
    return counts


def sampling(config: Any, seed: int = 0) -> LLMConfig:
    """The `LLMConfig` of a stage that samples episodes (shepherd, best-of-N): its temperature, top-p,
    top-k and step length, and `seed`."""
    return LLMConfig(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                     max_step_tokens=config.max_step_tokens, seed=seed)


def play_problems(config: Any, todo: Sequence[Problem], serve: Callable, commit: Callable[[dict], None],
                  generator: Any = None, sandbox: Any = None) -> None:
    """Play `todo` with the stage's `serve` (``serve(config, generator, sandbox=, serve=)`` builds its
    ``solve(problem) -> row``) and `commit` each row as it comes: here, one problem after the other, or
    on Ray workers when ``config.ray`` is set (`o1code.distributed.evaluate_on_ray`; rows in arrival order)."""
    from o1code.sandboxes import LocalSandbox

    if todo and config.ray:
        from o1code.distributed import evaluate_on_ray

        evaluate_on_ray(config, todo, serve, Path(config.run_dir), generator=generator, sandbox=sandbox, commit=commit)
    elif todo:
        own_sandbox = sandbox is None
        sandbox = sandbox or LocalSandbox(workers=1)
        try:
            solve = serve(config, generator, sandbox=sandbox, serve=lambda f: f)
            for problem in todo:
                commit(solve(problem))
        finally:
            if own_sandbox:
                sandbox.close()


__all__ = ["PRMCollectConfig", "answer_pair_rows", "check_data_split", "collect", "play_problems", "prm_rows",
           "sampling"]
