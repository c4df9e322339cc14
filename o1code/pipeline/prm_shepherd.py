"""Math-Shepherd step labels for the PRM: a step's label is how often the policy, continuing from it,
reaches an answer that passes the tests (Wang et al. 2024, "Math-Shepherd"; the paper's completer).

`shepherd` samples ``paths`` episodes per problem with the policy in the env; then, from every distinct
non-final step prefix of those paths, ``completions`` further episodes that start at the prefix. A
non-final step's label is the share of its completions that pass (``label = "soft"``, Math-Shepherd's
soft estimation) or whether any does (``"hard"``, its hard estimation); a final step's label is whether
its own answer passes. The tests are the problem's dataset tests by default: on the **train** split
these are training labels (ORACLE, as `o1code prm collect`'s search labels, and tagged so by the split),
on ``validation`` held-out rows for ``prm eval --rows``; ``test`` is refused. ``tests="tcg"`` labels by
the test-case generator's tests instead (``visible``: the shown test alone), the labels a run without
the dataset's tests would have; each path keeps its dataset verdict beside its label, and the summary
says how often the two agree.

Unlike MCTS values, every label here is an estimate from the same number of independent completions,
and the completions of one prefix are the siblings' ranking data: `shepherd_rows` writes point rows
(one per path, each distinct step labelled once) and pair rows (two distinct steps after the same prefix
whose labels differ by at least ``margin``), the rows `o1code prm train` reads.

Each problem's episodes are committed to ``RUN/labels.jsonl`` when the problem is finished, so a rerun
resumes after the last finished problem; ``RUN/rows.jsonl`` is rebuilt from it at the end. Every seed is a
function of ``seed``, the task, the path and the prefix: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from statistics import fmean
from typing import Any, Sequence

from o1code.agents import LLMAgent, play_lockstep
from o1code.agents.llm import problem_seed
from o1code.data import Problem
from o1code.data.prompts import PROMPT_STYLES
from o1code.envs import CodeEnv, EvalInfo
from o1code.envs.records import EnvState
from o1code.models import chat_template_of
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, load_step_generator, select_problems
from o1code.pipeline.prm import check_data_split, play_problems, sampling
from o1code.rewards.process import default_question
from o1code.runs import append_jsonl, pin_config, read_jsonl, write_atomic, write_jsonl

log = logging.getLogger(__name__)


@dataclass
class ShepherdConfig:
    """Every setting of ``o1code prm shepherd``."""

    model: str = field(default="default", metadata={"help": "the policy that samples and completes", "metavar": "SPEC"})
    dataset: str = "mbpp"
    split: str = field(default="train", metadata={"help": "train (training rows) or validation (held-out rows)"})
    limit: int | None = field(default=40, metadata={"help": "the first N problems of the split", "metavar": "N"})
    seed: int = 0
    run_dir: str = field(default="runs/prm-shepherd", metadata={"metavar": "DIR"})
    mode: str = "pseudocode"
    show_tests: str = "first"
    max_steps: int = 4
    max_step_tokens: int = 256
    paths: int = field(default=4, metadata={"help": "sampled episodes per problem, whose steps are labelled"})
    completions: int = field(default=4, metadata={"help": "episodes continued from each step prefix (the label's "
                                                  "sample size)"})
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    prompt_style: str | None = field(default=None, metadata={"help": "fewshot (the default) or instruct"})
    label: str = field(default="soft", metadata={"help": "soft (share of completions that pass) or hard (any)"})
    tests: str = field(default="dataset", metadata={
        "help": "the tests whose verdict labels a step: dataset (the problems' own tests: ORACLE labels, fine on "
                "train), tcg or tcg:SPEC (written by the test-case generator), or visible (the shown test only)"})
    margin: float = field(default=0.25, metadata={"help": "pair rows: least label gap between two sibling steps"})
    lockstep: bool = field(default=False, metadata={
        "help": "play a problem's paths together, then all its completions together, one model call per round "
                "(agents.play_lockstep): the fast path on backends that batch (hf, vllm on a GPU); the seeds are "
                "per round, not per episode, so the labels differ from the one-at-a-time run's"})
    ray: str | None = field(default=None, metadata={"help": "label the problems on Ray worker actors (as `o1code "
                                                    "eval --ray`): local, auto or a cluster ADDRESS; not pinned",
                                                    "metavar": "ADDRESS"})

    def validate(self) -> None:
        check_data_split(self.split)
        if self.label not in ("soft", "hard"):
            raise PipelineError(f"label must be soft or hard, got {self.label!r}")
        if self.tests not in ("dataset", "visible") and self.tests.partition(":")[0] != "tcg":
            raise PipelineError(f"tests must be dataset, visible, tcg or tcg:SPEC, got {self.tests!r}")
        if self.paths < 1 or self.completions < 1:
            raise PipelineError("paths and completions must be >= 1")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise PipelineError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")


def _play(env: CodeEnv, agent: LLMAgent, state: EnvState) -> dict:
    """Continue the episode at `state` to its end; its steps and whether its answer passes the tests."""
    env.set_state(state)
    obs, info = env.observation(), {"task_id": state.task_id, "step": len(state.steps)}
    while True:
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        if terminated or truncated:
            break
    # The label is the verdict of the env's reward tests (the run's `tests`); the judging tests' own
    # verdict is kept beside it, to see how far labels from other tests stray.
    ev = EvalInfo.from_info(info)
    return {"steps": list(env.get_state().steps), "passed": info.get("verdict") == "passed",
            "dataset_passed": bool(ev and ev.all_passed)}


def _agent(generator: Any, config: ShepherdConfig, seed: int) -> LLMAgent:
    return LLMAgent(generator, sampling(config, seed))


def _label_lockstep(env: CodeEnv, generator: Any, problem: Problem, config: ShepherdConfig) -> dict:
    """`label_problem` with `play_lockstep`: the paths in one batch, then every completion of every
    distinct prefix in another."""
    task = problem.task_id
    cfg = sampling(config)
    played = play_lockstep(env, generator, [EnvState(task, (), False)] * config.paths, cfg,
                           problem_seed(config.seed, f"{task}/paths"))
    paths = [{"steps": e["steps"], "passed": e["reward_passed"], "dataset_passed": e["passed"]} for e in played]
    prefixes = list(dict.fromkeys(tuple(p["steps"][:i]) for p in paths for i in range(1, len(p["steps"]))))
    starts = [EnvState(task, prefix, False) for prefix in prefixes for _ in range(config.completions)]
    done = play_lockstep(env, generator, starts, cfg, problem_seed(config.seed, f"{task}/completions"))
    k = config.completions
    return {"task_id": task, "known_bad": problem.known_bad, "paths": paths,
            "prefixes": [{"steps": list(p), "passed": [e["reward_passed"] for e in done[j * k:(j + 1) * k]]}
                         for j, p in enumerate(prefixes)],
            "tokens": sum(e["tokens"] for e in played + done)}


def label_problem(env: CodeEnv, generator: Any, problem: Problem, config: ShepherdConfig) -> dict:
    """The problem's record: ``paths`` (steps, passed) and ``prefixes`` (each distinct non-final step
    prefix of the paths, with the pass of each of its completions), and the tokens generated."""
    if config.lockstep:
        return _label_lockstep(env, generator, problem, config)
    env.reset(options={"task_id": problem.task_id})
    start = env.get_state()
    agents = []
    paths = []
    for j in range(config.paths):
        agents.append(_agent(generator, config, problem_seed(config.seed, f"{problem.task_id}/path/{j}")))
        paths.append(_play(env, agents[-1], start))
    prefixes: dict[tuple[str, ...], list[bool]] = {}
    for j, path in enumerate(paths):
        for i in range(1, len(path["steps"])):
            prefix = tuple(path["steps"][:i])
            if prefix in prefixes:
                continue  # a prefix two paths share is completed once
            state = EnvState(problem.task_id, prefix, False)
            outs = []
            for c in range(config.completions):
                # named by the first path that reached the prefix and its length: no two agents share a seed
                seed = problem_seed(config.seed, f"{problem.task_id}/prefix/{j}/{i}/{c}")
                agents.append(_agent(generator, config, seed))
                outs.append(_play(env, agents[-1], state)["passed"])
            prefixes[prefix] = outs
    return {"task_id": problem.task_id, "known_bad": problem.known_bad, "paths": paths,
            "prefixes": [{"steps": list(p), "passed": v} for p, v in prefixes.items()],
            "tokens": sum(a.tokens for a in agents)}


def step_labels(record: dict, label: str = "soft") -> dict[tuple[str, ...], float]:
    """Each labelled node of a problem's record, keyed by its steps from the first: a non-final prefix's
    share of passing completions (``hard``: 1.0 when any passes), a path's full answer its own pass."""
    agg = fmean if label == "soft" else (lambda v: float(any(v)))
    labels = {tuple(p["steps"]): float(agg(p["passed"])) for p in record["prefixes"]}
    for path in record["paths"]:
        labels[tuple(path["steps"])] = float(path["passed"])
    return labels


def shepherd_rows(records: Sequence[dict], problems: Sequence[Problem], split: str, show_tests: str,
                  label: str = "soft", margin: float = 0.25) -> list[dict]:
    """Point rows (one per path; a step labelled in an earlier row of its problem is None) and pair rows
    (distinct sibling steps whose labels differ by >= `margin`, the higher one the winner), tagged with
    ``task_id``, ``split`` and ``"source": "shepherd"``."""
    by_id = {p.task_id: p for p in problems}
    rows: list[dict] = []
    for rec in records:
        question = default_question(by_id[rec["task_id"]], show_tests=show_tests)
        labels = step_labels(rec, label)
        seen: set[tuple[str, ...]] = set()
        for path in rec["paths"]:
            steps = path["steps"]
            nodes = [tuple(steps[:i + 1]) for i in range(len(steps))]
            row_labels = [None if n in seen else labels[n] for n in nodes]
            seen.update(nodes)
            if any(v is not None for v in row_labels):
                rows.append({"kind": "point", "task_id": rec["task_id"], "split": split, "source": "shepherd",
                             "question": question, "steps": list(steps), "labels": row_labels})
        children: dict[tuple[str, ...], dict[str, float]] = {}
        for node, value in labels.items():
            children.setdefault(node[:-1], {})[node[-1]] = value
        for prefix, kids in children.items():
            for (a, va), (b, vb) in combinations(kids.items(), 2):
                if abs(va - vb) >= margin:
                    win, lose = (a, b) if va > vb else (b, a)
                    rows.append({"kind": "pair", "task_id": rec["task_id"], "split": split, "source": "shepherd",
                                 "question": question, "prefix": list(prefix), "win": win, "lose": lose})
    return rows


def serve_problems(config: ShepherdConfig, generator: Any = None, progress: bool = False, sandbox: Any = None,
                   serve: Any = None) -> Any:
    """Build the env and generator once (loading ``config.model`` when `generator` is None) and hand
    ``solve(problem, _) -> record`` to `serve`: the local loop's and each Ray worker's one way in
    (the signature of `run_eval`'s, which `o1code.distributed.evaluate_on_ray` calls)."""
    generator = generator or load_step_generator(config.model)
    problems = select_problems(EvalConfig(dataset=config.dataset, split=config.split, limit=config.limit))
    env = CodeEnv(mode=config.mode, problems=problems, max_steps=config.max_steps, tests=config.tests,
                  show_tests=config.show_tests, sandbox=sandbox, prompt_style=config.prompt_style or "fewshot",
                  chat_template=chat_template_of(generator))

    def solve(problem: Problem, _trajectories: Any = None) -> dict:
        t0 = time.perf_counter()
        return {**label_problem(env, generator, problem, config), "seconds": time.perf_counter() - t0}

    return serve(solve)


def shepherd(config: ShepherdConfig, generator: Any = None, sandbox: Any = None) -> dict[str, Any]:
    """Label every problem (resuming ``RUN/labels.jsonl``; on Ray workers with ``config.ray``), write
    ``RUN/rows.jsonl`` and ``RUN/summary.json``; returns the summary: problems, point and pair rows,
    episodes, tokens, the share of passing paths and of passing completions. The rows do not depend on
    where or in which order the problems were labelled (seeds are per problem; rows in problem order)."""
    config.validate()
    run = Path(config.run_dir)
    pin_config(run, asdict(config), ignore=("run_dir", "limit", "margin", "ray"))
    problems = select_problems(EvalConfig(dataset=config.dataset, split=config.split, limit=config.limit))
    path = run / "labels.jsonl"
    done = {r["task_id"]: r for r in read_jsonl(path, repair=True)}
    todo = [p for p in problems if p.task_id not in done]

    def commit(rec: dict) -> None:
        append_jsonl(path, [rec])  # the commit point of the problem
        done[rec["task_id"]] = rec
        log.info("shepherd %d/%d %s: %d of %d paths pass, %d prefixes labelled (%.0f s)", len(done), len(problems),
                 rec["task_id"], sum(p["passed"] for p in rec["paths"]), len(rec["paths"]), len(rec["prefixes"]),
                 rec["seconds"])

    if todo:
        log.info("Math-Shepherd labels on %s/%s: %d problems, %d paths each, %d completions per prefix "
                 "(labels from the %s tests, %s data)", config.dataset, config.split, len(todo), config.paths,
                 config.completions, config.tests, "training" if config.split == "train" else "held-out")
        play_problems(config, todo, serve_problems, commit, generator, sandbox)
    records = [done[p.task_id] for p in problems]
    rows = shepherd_rows(records, problems, config.split, config.show_tests, config.label, config.margin)
    write_jsonl(run / "rows.jsonl", rows)
    completions = [v for r in records for p in r["prefixes"] for v in p["passed"]]
    summary = {"problems": len(records), "split": config.split, "rows": str(run / "rows.jsonl"),
               "point_rows": sum(r["kind"] == "point" for r in rows),
               "pair_rows": sum(r["kind"] == "pair" for r in rows),
               "episodes": sum(len(r["paths"]) for r in records) + len(completions),
               "tokens": sum(r["tokens"] for r in records),
               "path_pass_rate": fmean([p["passed"] for r in records for p in r["paths"]]) if records else None,
               "completion_pass_rate": fmean(completions) if completions else None,
               "tests": config.tests,
               # how often a path's label (its verdict on `tests`) is its verdict on the dataset tests
               "path_label_agreement": fmean([p["passed"] == p.get("dataset_passed", p["passed"]) for r in records
                                              for p in r["paths"]]) if records else None,
               "seconds": sum(r["seconds"] for r in records)}
    write_atomic(run / "summary.json", json.dumps(summary, indent=2))
    return summary


__all__ = ["ShepherdConfig", "label_problem", "serve_problems", "shepherd", "shepherd_rows", "step_labels"]
