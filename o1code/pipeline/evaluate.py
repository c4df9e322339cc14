"""Evaluation: Pass@1 and ASPR (the paper's Table 1) of an agent on a set of problems.

Reward tests are not judging tests. The search or selection of an agent is rewarded by the
*reward tests* (``tests``: by default ``"visible"``, the tests shown in the prompt: MBPP's first
assert, HumanEval's docstring examples); every answer is judged by *all* of the problem's tests.
``tests="dataset"`` rewards with the judging tests themselves: possible, never the default, and
labelled ORACLE in the config, summary, table and plot.

Definitions (the paper gives only one-line wordings; these are the operational readings):

- **Pass@1**: the share of problems whose single answer passes every judging test. The answer
  is the code of the one trajectory a greedy or sampling agent plays, or, for MCTS, the
  terminal with the best mean value on the reward tests (ties: visits). Known-bad MBPP tasks
  (341, 596, 642) are excluded from the denominator unless `include_known_bad` is set; they are
  still run and listed.
- **oracle_pass@k** (sampling and search agents): the share of problems where *any* of the k
  code samples drawn passes every judging test: the ceiling a perfect selector would reach, an
  oracle figure by construction. k is each problem's number of code samples (its mean is reported).
- **reward pass rate**: the share of answers that pass their reward tests; its gap to Pass@1 is
  how much passing the reward tests overstates correctness.
- **pass@k** (``samples=N``, temperature > 0): N more episodes per problem are sampled from the same
  model and mode (besides the agent's answer) and each is judged on every judging test; pass@k is the
  unbiased estimator of Chen et al. 2021 averaged over problems, for k = 1, 2, 5, 10, ... <= N.
- **95% CI**: every Pass@1 and pass@k comes with a percentile bootstrap interval over problems and the
  number of problems (`o1code.pipeline.stats`); two runs are compared paired (`o1code compare`).
- **ASPR** (average sampling pass rate, MCTS only): for each problem where the search found a
  path passing the reward tests, the share of code samples passing the reward tests among those
  drawn at the penultimate node of each such path (non-code samples do not count), averaged over
  those nodes; then averaged over problems. Problems with no such path do not count.

Runs are exact and resumable. A run directory holds ``config.json`` (pinned: resuming with any
setting that changes results refused, naming it), ``results.jsonl`` (one line per finished
problem: the commit point), ``trajectories.jsonl`` (MCTS: every root-to-leaf path; lines of a
problem without a result line are dropped on resume), ``summary.json``, ``summary.md`` and
``summary.png``. Every random choice of a problem is seeded from (seed, task_id), so an
interrupted-and-resumed run equals an uninterrupted one. Budgets are in rollouts;
`time_budget_s` exists but makes results depend on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from o1code.agents import LLMAgent, LLMConfig, MCTSAgent, MCTSConfig, problem_seed, trajectory_records
from o1code.data import DATASETS, MBPP_SPLITS, Problem, load_dataset
from o1code.data.prompts import PROMPT_STYLES
from o1code.envs import CodeEnv, EvalInfo
from o1code.errors import RunDirError
from o1code.models import Generator, chat_template_of, load_generator
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.eval_report import markdown_table, summarise, write_report  # noqa: F401 (re-exported)
from o1code.rewards import is_oracle
from o1code.runs import ResultLog, append_jsonl, pin_config, read_jsonl, write_atomic, write_jsonl
from o1code.sandboxes import LocalSandbox, Sandbox

log = logging.getLogger(__name__)

AGENTS = ("greedy", "sample", "mcts", "policy")
MODE_NAMES = ("direct", "vanilla", "pseudocode")


#: Where the reasoning sees tests: none, the visible tests (first), or every judging test too (all).
SHOW_TESTS = ("none", "first", "all")


def _help(text: str, **cli: Any) -> dict[str, Any]:
    """A field's metadata: the help of its command-line flag, plus argparse extras (``choices``,
    ``metavar``, ``flags``: the option strings) read by the CLI's dataclass-flag helper."""
    return {"help": text, **cli}


@dataclass
class EvalConfig:
    """Every setting of an evaluation run (the keys of ``--config`` files and CLI flags).

    The single source of the defaults: the sampling and search settings default to `MCTSConfig`'s
    (greedy decoding ignores temperature, top_p and top_k); the CLI's flags and help come from here.
    """

    agent: str = field(default="greedy", metadata=_help(
        "greedy decoding, one sampled trajectory, MCTS, or policy: greedy decoding through a saved Policy "
        "(--model DIR: the RUN/final of `o1code ppo` or `o1code sft`)", choices=AGENTS))
    mode: str = field(default="pseudocode", metadata=_help("reasoning format", choices=MODE_NAMES))
    model: str = field(default="default", metadata=_help(
        "default | hf:ID_OR_PATH | gguf:PATH | llamacpp:PATH | vllm:ID | openai:URL#MODEL", metavar="SPEC"))
    dataset: str = field(default="mbpp", metadata=_help("benchmark", choices=DATASETS))
    split: str = field(default="test", metadata=_help(
        "split; HumanEval has only test", choices=(*MBPP_SPLITS, "all")))
    sanitized: bool = field(default=False, metadata=_help("the sanitized MBPP subset"))
    limit: int | None = field(default=None, metadata=_help("the first N problems of the split", metavar="N"))
    tasks: list[str] | None = field(default=None, metadata=_help(
        "comma-separated task ids, e.g. mbpp/11,mbpp/12", metavar="IDS"))
    seed: int = field(default=0, metadata=_help("seed of every random choice"))
    run_dir: str = field(default="runs/eval", metadata=_help("where results go", metavar="DIR"))
    max_steps: int = field(default=6, metadata=_help("steps per episode", metavar="N"))
    tests: str = field(default="visible", metadata=_help(
        "reward tests of search/selection: visible (the tests shown in the prompt), tcg[:MODEL] (generated; "
        "no reference off the train split), or dataset (the judging tests themselves: results are labelled "
        "ORACLE)", metavar="SOURCE"))
    show_tests: str = field(default="first", metadata=_help(
        "tests shown in the prompt: first = the visible tests, all = the judging tests too", choices=SHOW_TESTS))
    # None (fewshot) so that run directories pinned before this key existed still resume
    prompt_style: str | None = field(default=None, metadata=_help(
        "prompt: fewshot (raw continuation with worked examples; the default, best in the step modes) or "
        "instruct (the model's chat template around an EvalPlus-style instruction, steps inside the assistant "
        "turn; best in direct mode). README: Published numbers", choices=PROMPT_STYLES))
    include_known_bad: bool = field(default=False, metadata=_help(
        "count the known-bad MBPP tasks in Pass@1 (they always run)"))
    timeout_s: float = field(default=4.0, metadata=_help(
        "sandbox wall-clock limit of one run of a solution's tests, in seconds", metavar="S"))
    temperature: float = field(default=MCTSConfig.temperature, metadata=_help("sampling temperature (sample, mcts)"))
    top_p: float = field(default=MCTSConfig.top_p, metadata=_help("nucleus sampling mass (sample, mcts)"))
    top_k: int = field(default=MCTSConfig.top_k, metadata=_help("top-k cut of sampling (sample, mcts)"))
    max_step_tokens: int = field(default=MCTSConfig.max_step_tokens, metadata=_help(
        "token limit of one step", metavar="N"))
    rollouts: int = field(default=MCTSConfig.rollouts, metadata=_help("MCTS rollouts per problem", metavar="N"))
    children: int = field(default=MCTSConfig.children, metadata=_help("MCTS samples per expansion", metavar="N"))
    exploration: float = field(default=MCTSConfig.exploration, metadata=_help("MCTS UCT exploration constant c"))
    time_budget_s: float | None = field(default=MCTSConfig.time_budget_s, metadata=_help(
        "MCTS wall-time budget per problem in seconds (results then depend on the machine: report rollout "
        "budgets)", metavar="S", flags=("--time-budget",)))
    keep_best_terminal: bool = field(default=MCTSConfig.keep_best_terminal, metadata=_help(
        "MCTS: an expansion that samples terminal steps keeps only the best one"))
    # None-valued by default so that run directories pinned before these keys existed still resume
    prm: str | None = field(default=None, metadata=_help(
        "MCTS: a trained process reward model (`o1code prm train`'s RUN/final) scoring new nodes", metavar="DIR"))
    value_weight: float | None = field(default=None, metadata=_help(
        "MCTS: weight of the PRM's value in UCT selection (default 1 with --prm)", metavar="W"))
    prm_leaf: bool | None = field(default=None, metadata=_help(
        "MCTS with --prm: a rollout stops at the first new node and backs up the PRM's value there instead of "
        "playing on to a terminal (leaf evaluation: one model call per rollout)"))
    samples: int | None = field(default=None, metadata=_help(
        "also play N sampled episodes per problem (at --temperature > 0, each judged on all tests) and report the "
        "unbiased pass@k for k = 1, 2, 5, 10, ... <= N beside the agent's Pass@1", metavar="N"))
    # Where the problems run, not what they give: unpinned, a run may resume locally or on Ray
    ray: str | None = field(default=None, metadata=_help(
        "play the problems on Ray worker actors (the distributed extra): local (start Ray here), auto (join this "
        "machine's cluster, `ray start --head`) or a cluster ADDRESS; this process still writes the run directory",
        metavar="ADDRESS"))

    def validate(self) -> EvalConfig:
        if self.agent not in AGENTS:
            raise PipelineError(f"unknown agent {self.agent!r}; choose one of {', '.join(AGENTS)}")
        if self.mode not in MODE_NAMES:
            raise PipelineError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODE_NAMES)}")
        if self.limit is not None and self.limit < 1:
            raise PipelineError("limit must be a positive number of problems")
        if self.limit is not None and self.tasks:
            raise PipelineError("give either limit or tasks, not both")
        if self.max_steps < 1 or self.rollouts < 1 or self.children < 1:
            raise PipelineError("max_steps, rollouts and children must be >= 1")
        if self.dataset not in DATASETS:
            raise PipelineError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.tests not in ("visible", "dataset") and not (self.tests == "tcg" or self.tests.startswith("tcg:")):
            raise PipelineError(f"unknown tests {self.tests!r}; choose visible, tcg, tcg:MODEL or dataset (oracle)")
        if self.show_tests not in SHOW_TESTS:
            raise PipelineError(f"unknown show_tests {self.show_tests!r}; choose none, first or all")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise PipelineError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")
        if self.prm and self.agent != "mcts":
            raise PipelineError("--prm guides the MCTS search: use --agent mcts (best-of-N: `o1code prm eval`)")
        if self.samples is not None and (self.samples < 1 or self.temperature <= 0):
            raise PipelineError("samples draws N >= 1 episodes per problem at temperature > 0 "
                                f"(got samples={self.samples}, temperature={self.temperature})")
        if self.value_weight is not None and not self.prm:
            raise PipelineError("value_weight weighs a PRM's values: give --prm too")
        if self.prm_leaf and not self.prm:
            raise PipelineError("prm_leaf backs up a PRM's values: give --prm too")
        return self

    @property
    def oracle(self) -> bool:
        """True when the search/selection is rewarded by the judging tests (``tests="dataset"``)."""
        return is_oracle(self.tests)

    def pinned(self) -> dict[str, Any]:
        """The settings a run directory is pinned to: every field that changes a problem's result
        (all but where it is written, which problems, and how the summary counts them)."""
        return {k: v for k, v in asdict(self).items() if k not in UNPINNED}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Build a config from a dict (a TOML table), rejecting unknown keys by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PipelineError(f"unknown config keys: {', '.join(unknown)} (valid keys: {', '.join(sorted(names))})")
        return cls(**data)


#: EvalConfig fields a resumed run may change: they pick or count problems, not their results.
UNPINNED = frozenset({"run_dir", "limit", "tasks", "include_known_bad", "ray"})


def load_prm(path: str) -> Any:
    """The trained PRM in directory `path` (`o1code.models.prm.ProcessRewardModel.load`)."""
    from o1code.models.prm import ProcessRewardModel

    return ProcessRewardModel.load(path)


def load_step_generator(spec: str) -> Generator:
    """Load a model for step-by-step prompts: raw completion, no chat template, because the env's
    prompt is the exact text to continue (OpenAI-compatible servers' /v1/completions are raw)."""
    from o1code.models import parse_spec

    if parse_spec(spec).kind == "openai":
        return load_generator(spec)
    return load_generator(spec, chat_template=False)


def is_saved_policy(spec: str) -> bool:
    """True when `spec` (a path, optionally ``hf:``-prefixed) is a directory holding a saved `Policy`
    without merged model weights (``o1code ppo``'s RUN/final): it loads only through `Policy.load`.
    (``o1code sft``'s RUN/final holds both and loads either way.)"""
    path = Path(spec[3:] if spec.startswith("hf:") else spec)
    return (path / "policy.json").is_file() and not (path / "config.json").is_file()


def load_policy_generator(directory: str) -> Generator:
    """The generator of agent ``policy``: the `Policy` saved in `directory` (``o1code ppo``'s or ``o1code
    sft``'s RUN/final; an ``hf:`` prefix is dropped), its LoRA merged, with its own prompt convention
    (`Policy.to_generator`). Raises `ModelFileError` when `directory` holds no saved Policy."""
    from o1code.models.errors import ModelFileError
    from o1code.models.policy import Policy

    path = Path(directory[3:] if directory.startswith("hf:") else directory)
    if not (path / "policy.json").is_file():
        raise ModelFileError(f"--agent policy loads a saved Policy (the RUN/final of `o1code ppo` or `o1code sft`); "
                             f"{directory!r} is not one: for a base model use --agent greedy (--model "
                             "hf:ID_OR_DIR or gguf:PATH decode on transformers, as a Policy does)")
    return Policy.load(path).to_generator()


def select_problems(config: EvalConfig) -> list[Problem]:
    problems = load_dataset(config.dataset, config.split, sanitized=config.sanitized)
    if config.tasks:
        by_id = {p.task_id: p for p in problems}
        ids = [t if "/" in t else f"{config.dataset}/{t}" for t in config.tasks]
        missing = [t for t in ids if t not in by_id]
        if missing:
            raise PipelineError(f"tasks not in split {config.split!r}: {', '.join(missing)}")
        return [by_id[t] for t in ids]
    return problems[: config.limit] if config.limit else problems


def _reconcile_trajectories(path: Path, done: set[str]) -> None:
    """Keep only the trajectory lines of problems that have a result line (the commit point):
    a run killed between the two writes would otherwise duplicate a problem's trajectories."""
    records = read_jsonl(path, repair=True)  # a torn last line: dropped
    keep = [r for r in records if isinstance(r, dict) and r.get("task_id") in done]
    if len(keep) < len(records):
        log.warning("dropping %d trajectory lines of unfinished problems from %s", len(records) - len(keep), path)
        write_jsonl(path, keep)


def _play(env: CodeEnv, agent: LLMAgent, problem: Problem) -> dict[str, Any]:
    obs, info = env.reset(options={"task_id": problem.task_id})
    tokens0 = agent.tokens
    t0 = time.perf_counter()
    gen = 0.0
    while True:
        g0 = time.perf_counter()
        action = agent.act(obs, info)
        gen += time.perf_counter() - g0
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    ev = EvalInfo.from_info(info)
    passed = bool(ev and ev.all_passed)
    return {
        "passed": passed,
        "verdict": ev.verdict if ev else "no_code",
        "reward": reward,
        "reward_passed": info.get("verdict") == "passed",
        "samples": int(info.get("code") is not None),  # one trajectory: k = 1 code sample (or 0)
        "oracle_pass": passed,
        "steps": int(obs["step"]),
        "tokens": agent.tokens - tokens0,
        "seconds": time.perf_counter() - t0,
        "generate_seconds": gen,
        "aspr": None,
        "code": info.get("code"),
        "trace": list(env.get_state().steps),
    }


def _search(env: CodeEnv, agent: MCTSAgent, problem: Problem, config: EvalConfig, traj_path: Path,
            on_rollout: Callable | None) -> dict[str, Any]:
    env.reset(options={"task_id": problem.task_id})
    result = agent.search(env, on_rollout=on_rollout)
    append_jsonl(traj_path, [r.to_dict() for r in trajectory_records(result, problem.task_id, config.mode,
                                                                     config.model, config.seed)])
    answer = result.answer
    ev = answer.eval if answer else None
    return {
        "passed": bool(ev and ev.all_passed),
        "verdict": ev.verdict if ev else "no_code",
        "reward": answer.reward if answer else 0.0,
        "reward_passed": bool(answer and answer.passed),
        "samples": result.code_samples,
        "oracle_pass": result.oracle_pass,
        "steps": len(answer.state.steps) if answer else 0,
        "tokens": result.tokens,
        "seconds": result.seconds,
        "generate_seconds": result.generate_seconds,
        "aspr": result.aspr,
        "rollouts": result.rollouts,
        "calls": result.calls,
        "code": answer.info.get("code") if answer else None,
        "trace": list(answer.state.steps) if answer else [],
    }


def _solve(env: CodeEnv, agent: Any, config: EvalConfig, isolation: str, problem: Problem, trajectories: Path,
           on_rollout: Callable | None = None) -> dict[str, Any]:
    """The result row of one problem (MCTS appends its trajectories to `trajectories` first): what
    the local loop and each Ray worker of `o1code.distributed.eval` run per problem."""
    if config.agent == "mcts":
        row = _search(env, agent, problem, config, trajectories, on_rollout)
    else:
        row = _play(env, agent, problem)
    if config.samples:
        row.update(_sample(env, agent.generator, config, problem))
    return {"task_id": problem.task_id, "known_bad": problem.known_bad, **row, "sandbox": isolation,
            "tests_digest": tests_digest(problem)}


def tests_digest(problem: Problem) -> str:
    """A short hash of what judges `problem` (its setup code and judging tests): `o1code compare` refuses
    to pair runs whose verdicts on a problem came from different tests (another data version or conversion)."""
    text = "\0".join((problem.setup_code, *problem.tests))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sample(env: CodeEnv, generator: Generator, config: EvalConfig, problem: Problem) -> dict[str, Any]:
    """``--samples N``: N episodes sampled at the run's temperature, each judged on every judging test.
    Sample i's seed comes from (seed, i) and, per step, from the task id (`LLMAgent`), so a resumed run
    draws the same samples. Each sample's path (``sample_episodes``: trace, code, reward-test and
    judging verdicts) is kept, so a rejection-sampling harvest is one ``--samples N`` run that
    `read_trajectories` (and so ``o1code sft``) reads as N paths per problem."""
    passed, verdicts, episodes, tokens, seconds = [], [], [], 0, 0.0
    for i in range(config.samples or 0):
        agent = LLMAgent(generator, LLMConfig(
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
            max_step_tokens=config.max_step_tokens, seed=problem_seed(config.seed, f"sample-{i}")))
        row = _play(env, agent, problem)
        passed.append(row["passed"])
        verdicts.append(row["verdict"])
        episodes.append({k: row[k] for k in ("passed", "verdict", "reward", "reward_passed", "code", "trace")})
        tokens += row["tokens"]
        seconds += row["seconds"]
    return {"sample_passed": passed, "sample_verdicts": verdicts, "sample_episodes": episodes,
            "sample_tokens": tokens, "sample_seconds": seconds}


def run_eval(
    config: EvalConfig,
    generator: Generator | None = None,
    progress: bool = True,
    on_rollout: Callable | None = None,
    on_problem: Callable[[dict], None] | None = None,
    sandbox: Sandbox | None = None,
    serve: Callable[[Callable], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one agent/mode/model; resumes a run directory that has finished problems.

    `sandbox` runs the code (default: a `LocalSandbox` of one worker, started before the model
    loads, so a machine that cannot confine code refuses at once). Returns the summary dict
    (also written to the run directory with the table and plot). With ``config.ray`` the problems
    are played by Ray worker actors (`o1code.distributed.evaluate_on_ray`); this process appends
    their results as they arrive. `serve` is for those workers: once the env and agent are built,
    run_eval returns ``serve(solve)`` instead of playing, where ``solve(problem, trajectories_path)``
    gives one problem's result row (`sandbox` must then be given: it stays open).
    """
    config.validate()
    run_dir = Path(config.run_dir)
    try:  # config.json: every field, and the derived `oracle` label; pinned on all but UNPINNED
        pin_config(run_dir, {**asdict(config), "oracle": config.oracle}, ignore=UNPINNED | {"oracle"})
    except RunDirError as exc:
        raise PipelineError(str(exc)) from None
    if config.oracle:
        log.warning("ORACLE run: the reward tests are the judging tests (tests=%r); its Pass@1 is not honest",
                    config.tests)

    problems = select_problems(config)
    results_path = run_dir / "results.jsonl"
    rows = read_jsonl(results_path, repair=True)  # the commit points; a torn last line is cut
    done = {r["task_id"] for r in rows}
    _reconcile_trajectories(run_dir / "trajectories.jsonl", done)
    todo = [p for p in problems if p.task_id not in done]
    if done:
        log.info("resuming %s: %d of %d problems already done", run_dir, len(done & {p.task_id for p in problems}), len(problems))

    if todo and config.ray:  # each Ray worker builds the env and agent below once (`serve`); this process writes
        from o1code.distributed.eval import evaluate_on_ray

        rows += evaluate_on_ray(config, todo, run_eval, run_dir, total=len(problems), generator=generator,
                                sandbox=sandbox, progress=progress, on_problem=on_problem)
    elif todo:
        # The sandbox first: a machine that cannot confine code refuses before a model loads.
        with contextlib.nullcontext(sandbox) if sandbox is not None else LocalSandbox(workers=1) as sandbox:
            isolation = getattr(sandbox, "isolation_summary", type(sandbox).__name__)
            generator = generator or (load_policy_generator(config.model)
                                      if config.agent == "policy" or is_saved_policy(config.model)
                                      else load_step_generator(config.model))
            env = CodeEnv(mode=config.mode, problems=problems, max_steps=1 if config.mode == "direct" else config.max_steps,
                          tests=config.tests, show_tests=config.show_tests, sandbox=sandbox, timeout_s=config.timeout_s,
                          prompt_style=config.prompt_style or "fewshot", chat_template=chat_template_of(generator))
            if config.agent == "mcts":
                agent: Any = MCTSAgent(generator, MCTSConfig(
                    rollouts=config.rollouts, time_budget_s=config.time_budget_s, children=config.children,
                    exploration=config.exploration, temperature=config.temperature, top_p=config.top_p,
                    top_k=config.top_k, max_step_tokens=config.max_step_tokens,
                    keep_best_terminal=config.keep_best_terminal, seed=config.seed,
                    value_weight=(1.0 if config.value_weight is None else config.value_weight) if config.prm else 0.0,
                    prm_leaf=bool(config.prm_leaf)),
                    value_fn=load_prm(config.prm) if config.prm else None)
            else:
                greedy = config.agent in ("greedy", "policy")
                agent = LLMAgent(generator, LLMConfig(
                    temperature=0.0 if greedy else config.temperature, top_p=1.0 if greedy else config.top_p,
                    top_k=None if greedy else config.top_k, max_step_tokens=config.max_step_tokens, seed=config.seed))
            if serve is not None:  # a Ray worker: it plays the problems it is sent with this env and agent
                return serve(functools.partial(_solve, env, agent, config, isolation))
            try:
                with ResultLog(run_dir, rows, total=len(problems), todo=len(todo), desc=f"{config.agent}/{config.mode}",
                               progress=progress, on_problem=on_problem) as results:
                    for p in todo:  # MCTS appends the problem's trajectories itself, before its result line
                        results.commit(_solve(env, agent, config, isolation, p, run_dir / "trajectories.jsonl", on_rollout))
            finally:
                env.close()

    wanted = {p.task_id for p in problems}
    summary = summarise([r for r in rows if r["task_id"] in wanted], config)
    write_report(run_dir, [summary])
    return summary
