"""Best-of-N measurement of a trained PRM (``o1code prm eval``).

`best_of_n`: on held-out problems, N sampled solutions per problem (the policy in the env, seeded per
problem and sample), each judged on the visible (reward) tests and the hidden (judging) tests and scored
by the PRM; then Pass@1 on the hidden tests of the answer each selector picks: ``prm`` (best PRM score),
``visible+prm`` (best PRM score among the samples passing the visible tests, else among all), ``random``,
``visible+random``; and oracle pass@N (any sample passes) as the ceiling. Sampling does not depend on
the PRM: samples are committed per problem (``RUN/samples.jsonl``), and each PRM's scores per problem in
a file of its own (``RUN/scores/<PRM sha256>.jsonl``). So a rerun resumes either part, one set of samples
serves several PRMs (checkpoints, self-play iterations), and the sampling can run before the PRM is
trained (no ``--prm``: the two random selectors only).

A trajectory's PRM score is its last step's P(+) (``aggregate="last"``: the PRM's estimate that the
finished solution is correct given everything before it), or the ``min`` / ``mean`` over its steps.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any, Callable, Sequence

from o1code.agents import LLMAgent, play_lockstep
from o1code.agents.llm import problem_seed
from o1code.data import Problem
from o1code.data.prompts import PROMPT_STYLES
from o1code.envs import CodeEnv, EnvState, EvalInfo
from o1code.models import chat_template_of
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, load_step_generator, select_problems
from o1code.pipeline.prm import play_problems, sampling
from o1code.pipeline.prm_report import best_of_n_table, plot_best_of_n, ranking
from o1code.pipeline.stats import bootstrap_ci, paired_bootstrap_ci
from o1code.rewards.process import default_question
from o1code.runs import append_jsonl, digest, pin_config, read_jsonl, write_atomic

log = logging.getLogger(__name__)

SELECTORS = ("prm", "visible+prm", "random", "visible+random")
AGGREGATES = ("last", "min", "mean")


@dataclass
class BestOfNConfig:
    """Every setting of ``o1code prm eval``'s best-of-N: the policy, the held-out problems, sampling."""

    prm: str = field(default="", metadata={"help": "a trained PRM directory (RUN/final of `prm train`); empty: "
                                           "sample only (the random selectors)", "metavar": "DIR"})
    model: str = field(default="default", metadata={"help": "the policy that samples", "metavar": "SPEC"})
    dataset: str = "mbpp"
    split: str = "validation"
    limit: int | None = field(default=30, metadata={"metavar": "N"})
    n: int = field(default=8, metadata={"help": "samples per problem"})
    seed: int = 0
    run_dir: str = field(default="runs/prm-eval", metadata={"metavar": "DIR"})
    mode: str = "pseudocode"
    show_tests: str = "first"
    max_steps: int = 4
    max_step_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    prompt_style: str | None = field(default=None, metadata={"help": "fewshot (the default) or instruct"})
    aggregate: str = field(default="last", metadata={"help": "a trajectory's score: last step, min or mean"})
    rows: str = field(default="", metadata={"help": "held-out rows (`prm collect --split validation`) for step "
                                            "AUC and pair accuracy; empty: best-of-N only", "metavar": "FILE"})
    lockstep: bool = field(default=False, metadata={
        "help": "draw a problem's n samples together, one model call per round (agents.play_lockstep): the fast "
                "path on backends that batch (hf, vllm on a GPU); seeded per round, not per sample, so the "
                "samples differ from the one-at-a-time run's"})
    ray: str | None = field(default=None, metadata={"help": "sample the problems on Ray worker actors (as `o1code "
                                                    "eval --ray`): local, auto or a cluster ADDRESS; not pinned",
                                                    "metavar": "ADDRESS"})

    def validate(self) -> None:
        if self.split == "train":
            raise PipelineError("best-of-N measures the PRM on held-out problems: use validation or test")
        if self.aggregate not in AGGREGATES:
            raise PipelineError(f"aggregate must be one of {', '.join(AGGREGATES)}")
        if self.n < 1:
            raise PipelineError("n must be >= 1")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise PipelineError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")
        if self.rows and not Path(self.rows).is_file():
            raise PipelineError(f"no rows file {self.rows!r}")
        if self.rows and not self.prm:
            raise PipelineError("rows are for the PRM's step metrics: give --prm too")
        if self.prm and not (Path(self.prm) / "prm.json").is_file():
            raise PipelineError(f"no PRM in {self.prm} (prm.json missing)")

    @property
    def selectors(self) -> tuple[str, ...]:
        return SELECTORS if self.prm else tuple(s for s in SELECTORS if "prm" not in s)


def trajectory_score(step_scores: Sequence[float], aggregate: str = "last") -> float:
    """One number per trajectory from its per-step PRM scores (0 for a trajectory without steps)."""
    if not step_scores:
        return 0.0
    if aggregate == "last":
        return float(step_scores[-1])
    return float(min(step_scores)) if aggregate == "min" else float(sum(step_scores) / len(step_scores))


def _pool(samples: Sequence[dict], selector: str) -> tuple[list[dict], str]:
    """The samples `selector` picks among (``visible+``: those passing the visible tests, else all)
    and how it picks (``random`` or ``prm``)."""
    if selector.startswith("visible+"):
        return [s for s in samples if s["reward_passed"]] or list(samples), selector.split("+", 1)[1]
    return list(samples), selector


def select(samples: Sequence[dict], selector: str, rng: random.Random) -> dict:
    """The sample `selector` picks (see the module docstring); ties go to the earliest sample."""
    pool, selector = _pool(samples, selector)
    if selector == "random":
        return rng.choice(pool)
    return max(pool, key=lambda s: s["score"])  # max keeps the first of equal scores


def _sample_problem(env: CodeEnv, generator: Any, problem: Problem, config: BestOfNConfig) -> list[dict]:
    out = []
    for i in range(config.n):
        agent = LLMAgent(generator, sampling(config, config.seed * 1_000_003 + i))
        obs, info = env.reset(options={"task_id": problem.task_id})
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
        ev = EvalInfo.from_info(info)
        out.append({"steps": list(env.get_state().steps), "code": info.get("code"), "reward": reward,
                    "reward_passed": info.get("verdict") == "passed", "passed": bool(ev and ev.all_passed)})
    return out


def serve_samples(config: BestOfNConfig, generator: Any = None, progress: bool = False, sandbox: Any = None,
                  serve: Any = None) -> Any:
    """Build the env and generator once and hand ``solve(problem, _) -> samples row`` to `serve`: the
    local loop's and each Ray worker's way in (`run_eval`'s signature, as `evaluate_on_ray` calls it)."""
    generator = generator or load_step_generator(config.model)
    env = CodeEnv(mode=config.mode, problems=select_problems(EvalConfig(dataset=config.dataset, split=config.split,
                                                                        limit=config.limit)),
                  max_steps=config.max_steps, tests="visible", show_tests=config.show_tests, sandbox=sandbox,
                  prompt_style=config.prompt_style or "fewshot", chat_template=chat_template_of(generator))

    def solve(problem: Problem, _trajectories: Any = None) -> dict:
        t0 = time.perf_counter()
        if config.lockstep:
            played = play_lockstep(env, generator, [EnvState(problem.task_id, (), False)] * config.n, sampling(config),
                                   problem_seed(config.seed, f"{problem.task_id}/samples"))
            samples = [{k: e[k] for k in ("steps", "code", "reward", "reward_passed", "passed")} for e in played]
        else:
            samples = _sample_problem(env, generator, problem, config)
        return {"task_id": problem.task_id, "known_bad": problem.known_bad, "samples": samples,
                "seconds": time.perf_counter() - t0}

    return serve(solve)


def best_of_n(config: BestOfNConfig, generator: Any = None, prm: Any = None, sandbox: Any = None,
              on_problem: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Sample every problem (resuming ``RUN/samples.jsonl``), score the samples with the PRM when one is
    given (resuming its scores file), select; write and return the summary: ``pass_at_1`` per selector,
    ``oracle_pass_at_n``, ``visible_any`` (share of problems with a sample passing the visible tests),
    counts. Known-bad MBPP tasks are excluded."""
    config.validate()
    run = Path(config.run_dir)
    # The PRM, its held-out rows and the aggregate only change the selection, not the samples.
    pin_config(run, asdict(config), ignore=("run_dir", "limit", "prm", "rows", "aggregate", "ray"))
    problems = select_problems(EvalConfig(dataset=config.dataset, split=config.split, limit=config.limit))
    path = run / "samples.jsonl"
    rows = {r["task_id"]: r for r in read_jsonl(path, repair=True)}
    todo = [p for p in problems if p.task_id not in rows]

    def commit(row: dict) -> None:
        append_jsonl(path, [row])  # the commit point of the problem's samples
        rows[row["task_id"]] = row
        log.info("best-of-%d %d/%d %s: %d of %d samples pass the hidden tests (%.0f s)", config.n, len(rows),
                 len(problems), row["task_id"], sum(s["passed"] for s in row["samples"]), config.n, row["seconds"])
        if on_problem:
            on_problem(row)

    play_problems(config, todo, serve_samples, commit, generator, sandbox)
    chosen = [rows[p.task_id] for p in problems]
    scores: dict[str, list[list[float]]] = {}
    if config.prm:
        key = digest(config.prm)
        scores, prm = _score_samples(config, problems, chosen, run / "scores" / f"{key[:16]}.jsonl", prm)
    summary = summarise_best_of_n(chosen, config, scores)
    if config.rows:
        summary["heldout"] = _row_metrics(config, prm, run / f"heldout-{key[:16]}.json")
    write_atomic(run / "summary.json", json.dumps(summary, indent=2))
    write_atomic(run / "summary.md", best_of_n_table(summary))
    plot_best_of_n(summary, run / "summary.png")
    return summary


def _score_samples(config: BestOfNConfig, problems: Sequence[Problem], rows: Sequence[dict], path: Path,
                   prm: Any) -> tuple[dict[str, list[list[float]]], Any]:
    """Per task, the PRM's step scores of each sample, committed per problem to `path` (one file per
    PRM, named by its sha256) and resumed; loads the PRM only when something is left to score."""
    from o1code.models.prm import ProcessRewardModel

    scores = {r["task_id"]: r["scores"] for r in read_jsonl(path, repair=True)}
    todo = [r for r in rows if r["task_id"] not in scores]
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        prm = prm or ProcessRewardModel.load(config.prm)
        by_id = {p.task_id: p for p in problems}
        for k, r in enumerate(todo, 1):
            q = default_question(by_id[r["task_id"]], show_tests=config.show_tests)
            t0 = time.perf_counter()
            scores[r["task_id"]] = prm.score_batch([(q, s["steps"]) for s in r["samples"]])
            append_jsonl(path, [{"task_id": r["task_id"], "scores": scores[r["task_id"]]}])
            log.info("PRM scores %d/%d %s (%.0f s)", k, len(todo), r["task_id"], time.perf_counter() - t0)
    return scores, prm


def _row_metrics(config: BestOfNConfig, prm: Any, cache: Path) -> dict[str, Any]:
    """Step AUC / accuracy / log-loss and pair accuracy of the PRM on held-out rows (cached per PRM and
    rows file in `cache`)."""
    from o1code.models.prm import ProcessRewardModel
    from o1code.training.prm import evaluate_rows

    rows_key = digest(config.rows)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("rows_sha256") == rows_key:
            return cached
    rows = read_jsonl(config.rows)
    train = [r["task_id"] for r in rows if r.get("split") == "train"]
    if train:
        raise PipelineError(f"{config.rows} holds train-split rows ({train[0]} ...): held-out metrics need "
                            "rows from `o1code prm collect --split validation`")
    metrics = {**evaluate_rows(prm or ProcessRewardModel.load(config.prm), rows), "rows_sha256": rows_key}
    write_atomic(cache, json.dumps(metrics, indent=2))
    return metrics


def summarise_best_of_n(rows: Sequence[dict], config: BestOfNConfig,
                        scores: dict[str, list[list[float]]] | None = None) -> dict[str, Any]:
    """Pass@1 per selector over the counted problems (known-bad excluded), with seeded random picks;
    `scores`: each task's per-sample step scores from the PRM (the PRM selectors need them). With
    scores, also the PRM's within-problem `ranking` and, in ``gain``, each PRM selector's paired
    difference from its random counterpart with a 95% bootstrap CI over problems: the random pick
    counted at its expectation (the share of its pool that passes), so that its luck adds no noise."""
    counted = [r for r in rows if not r.get("known_bad")]
    selectors = config.selectors
    picks: dict[str, list[float]] = {s: [] for s in selectors}
    expected: dict[str, list[float]] = {"random": [], "visible+random": []}
    ceiling: dict[str, list[float]] = {"random": [], "visible+random": []}  # a perfect pick from the pool
    scored_rows = []
    for r in counted:
        steps = (scores or {}).get(r["task_id"]) or [[] for _ in r["samples"]]
        scored = [{**s, "score": trajectory_score(sc, config.aggregate)} for s, sc in zip(r["samples"], steps)]
        scored_rows.append(scored)
        for sel in selectors:
            rng = random.Random(problem_seed(config.seed, f"{r['task_id']}:{sel}"))
            picks[sel].append(float(bool(select(scored, sel, rng)["passed"])))
        for sel in expected:
            pool = _pool(scored, sel)[0]
            expected[sel].append(fmean([s["passed"] for s in pool]) if pool else 0.0)
            ceiling[sel].append(float(any(s["passed"] for s in pool)))
    n = len(counted) or 1
    extra: dict[str, Any] = {}
    if scores:
        extra["ranking"] = ranking(scored_rows)
        extra["gain"] = {}
        for sel, base in (("prm", "random"), ("visible+prm", "visible+random")):
            if sel in picks and counted:
                lo, hi = paired_bootstrap_ci(expected[base], picks[sel], seed=config.seed)
                diff = fmean(picks[sel]) - fmean(expected[base])
                extra["gain"][f"{sel} - {base}"] = {"diff": diff, "ci": [lo, hi]}
    return {"problems": len(counted), "n": config.n, "aggregate": config.aggregate, "prm": config.prm,
            "model": config.model, "split": config.split, **extra,
            "pass_at_1": {sel: sum(picks[sel]) / n for sel in selectors},
            # What any selector can do with these samples: random's expectation, a perfect pick from the
            # same pool, and the problems where the pick matters (a pool holding right and wrong answers).
            "headroom": {sel: {"expected": fmean(expected[sel]) if counted else 0.0,
                               "expected_ci": list(bootstrap_ci(expected[sel], seed=config.seed)) if counted else None,
                               "perfect": fmean(ceiling[sel]) if counted else 0.0,
                               "mixed_problems": sum(0 < e < 1 for e in expected[sel])} for sel in expected},
            "oracle_pass_at_n": sum(any(s["passed"] for s in r["samples"]) for r in counted) / n,
            "visible_any": sum(any(s["reward_passed"] for s in r["samples"]) for r in counted) / n,
            "sample_pass_rate": sum(s["passed"] for r in counted for s in r["samples"])
            / max(1, sum(len(r["samples"]) for r in counted))}


__all__ = ["AGGREGATES", "BestOfNConfig", "SELECTORS", "best_of_n", "best_of_n_table", "plot_best_of_n", "ranking",
           "select", "serve_samples", "summarise_best_of_n", "trajectory_score"]
