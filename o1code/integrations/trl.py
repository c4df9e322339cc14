"""O1Code tasks for TRL's `GRPOTrainer`: a `datasets.Dataset` of problems and sandboxed reward functions.

    from trl import GRPOConfig, GRPOTrainer
    from o1code.integrations.trl import O1CodeTask

    with O1CodeTask(split="train", mode="direct") as task:        # and any other CodeEnv setting
        args = GRPOConfig(output_dir="out", reward_weights=task.reward_weights)
        GRPOTrainer(model, reward_funcs=task.reward_funcs, args=args, train_dataset=task.dataset()).train()

A task is a `CodeEnv` and what a completion is worth is the env's decision: the ``prompt`` column is the env's
first observation (built by `o1code.data.formats.build_prompt`); a completion is read as the episode the env
would have played (steps cut where `CodeEnv.step` cuts an action, the first step with code terminal, its code
found by `extract_code`) and graded with the env's reward tests, outcome reward, truncation reward, process
reward and `phi`. One difference is TRL's: a completion is one generation, so a multi-step trace that stops
before any code ends the episode there (the truncation reward), where the env would ask for the next step.

The reward functions, called by TRL with ``completions`` and the dataset's columns as keyword arguments:

- ``o1code_<tests>_tests`` (weight 1): the env's reward on the *reward tests* (``visible`` by default, ``tcg``;
  with ``tests="dataset"`` the judging tests themselves: named ``ORACLE_o1code_dataset_tests``, with a warning);
- ``o1code_judging_tests`` (weight 0): the pass fraction on the problem's own tests (the *judging tests*).
  TRL logs it as ``rewards/o1code_judging_tests/mean`` beside the reward and never trains on it: the gap
  between the two curves is the reward-hacking gap;
- ``o1code_prm`` (weight 1, only with a ``process_reward``): the sum of the process rewards of the steps
  before the code, so that the weighted total is the env's episode return (gamma 1).

The reward function also logs, through TRL's ``log_metric``: ``o1code/reward_tests_all_passed`` and
``o1code/judging_tests_all_passed`` (the share of completions that pass every test) and ``o1code/hacking_gap``
(mean reward-test pass fraction minus mean judging-test pass fraction).

One sandbox per task: a `LocalSandbox` of ``workers`` processes made on first use and closed by `close` (or the
``with`` block), or the one given (a `RaySandbox`, say), left open. A batch is graded in one `run_many` call,
reward and judging tests together and each distinct job once, and remembered, so the judging function that TRL
calls next on the same completions runs nothing.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from o1code.data import Problem
from o1code.data.formats import STEP_END, clean_step, extract_code
from o1code.envs import CodeEnv
from o1code.integrations.errors import IntegrationError
from o1code.rewards import is_oracle, prefix_values
from o1code.sandboxes import ExecutionResult, Job, LocalSandbox, Sandbox, Verdict

log = logging.getLogger(__name__)

#: The name TRL logs the judging-test pass fraction under (``rewards/<name>/mean``).
JUDGING_NAME = "o1code_judging_tests"
#: The name of the process-reward function.
PRM_NAME = "o1code_prm"
_HEADER = re.compile(r"#{2,4} ?Step \d+\s*:")
_REMEMBERED = 4096  # graded completions kept: a few GRPO batches, so every reward function finds its batch


def trace_steps(completion: str) -> list[str]:
    """The steps of a completion that continues an env prompt: each cut where `CodeEnv.step` cuts an action
    (`clean_step`: at ``<Step_End>`` or at the next ``### Step k:`` header), delimiters and headers dropped."""
    steps: list[str] = []
    rest = completion
    while rest.strip():
        step, _ = clean_step(rest)
        steps.append(step)
        left = len(rest)
        rest = rest[len(step):].lstrip()
        if rest.startswith(STEP_END):
            rest = rest[len(STEP_END):].lstrip()
        header = _HEADER.match(rest)
        if header:
            rest = rest[header.end():]
        if len(rest) >= left:  # cannot happen (each cut is at a delimiter); never loop on a surprise
            break
    return steps


@dataclass(frozen=True)
class Episode:
    """A completion read as an env episode: its steps up to the terminal one, and the code (None: none)."""

    steps: tuple[str, ...]
    code: str | None

    def scored_steps(self, max_steps: int) -> int:
        """How many leading steps the env would have given a process reward: all but a terminal one (the
        step with code, or the last allowed step, whose reward is the outcome or the truncation reward)."""
        ended = self.code is not None or len(self.steps) >= max_steps
        return len(self.steps) - 1 if ended else len(self.steps)


def read_episode(completion: str, problem: Problem, mode: str, max_steps: int) -> Episode:
    """`completion` as `CodeEnv.step` would have taken it step by step: at most `max_steps` steps, the first
    one holding code ends it; in ``direct`` mode an answer without a fence is the code (an empty one too)."""
    taken: list[str] = []
    for step in (trace_steps(completion) or ([""] if mode == "direct" else []))[:max_steps]:
        taken.append(step)
        code = extract_code(step, problem.entry_point)
        if code is None and mode == "direct":
            code = step.strip("\n")
        if code is not None:
            return Episode(tuple(taken), code)
    return Episode(tuple(taken), None)


@dataclass(frozen=True)
class Grade:
    """What one completion earned: ``reward`` (the env's reward of its terminal step: the outcome, or `phi`),
    ``reward_pass`` / ``judging_pass`` (pass fractions on the reward and the judging tests; 0 without code),
    ``reward_all_passed`` / ``judging_all_passed``, ``prm`` (the sum of its process rewards) and ``code``."""

    reward: float
    reward_pass: float
    judging_pass: float
    reward_all_passed: bool
    judging_all_passed: bool
    prm: float
    code: str | None


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a list of chat messages (the last one's ``content``)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
    raise IntegrationError(f"a completion must be a string or a list of chat messages, got {completion!r:.120}")


class _RewardFunc:
    """One of a task's reward functions in TRL's signature; ``__name__`` is what TRL logs it under."""

    def __init__(self, task: O1CodeTask, name: str, field: str) -> None:
        self.task, self.__name__, self.field = task, name, field

    def __call__(self, completions: Sequence[Any], task_id: Sequence[str] | None = None,
                 reward_tests: Sequence[Sequence[str]] | None = None, trainer_state: Any = None,
                 log_metric: Any = None, **_: Any) -> list[float]:
        if task_id is None:
            raise IntegrationError(f"{self.__name__} needs the dataset's task_id column (see O1CodeTask.dataset)")
        step = getattr(trainer_state, "global_step", None)
        grades = self.task.grade(completions, task_id, reward_tests, phi_t=step)
        if self.field == "reward" and log_metric is not None and grades:
            n = len(grades)
            log_metric("o1code/reward_tests_all_passed", sum(g.reward_all_passed for g in grades) / n)
            log_metric("o1code/judging_tests_all_passed", sum(g.judging_all_passed for g in grades) / n)
            log_metric("o1code/hacking_gap", sum(g.reward_pass - g.judging_pass for g in grades) / n)
        return [float(getattr(g, self.field)) for g in grades]


class O1CodeTask:
    """O1Code problems and rewards for TRL (see the module docstring).

    Args:
        split: The problems' split (``train`` by default: evaluate on another).
        mode: ``direct`` by default: TRL's GRPO samples one completion per prompt, and a direct episode is
            one step; ``pseudocode`` / ``vanilla`` completions hold the whole trace.
        chat: Give the prompt as one user turn (TRL applies the tokenizer's chat template, as `Policy` with
            ``chat_template=True`` does); False (default): the raw prompt, as ``o1code eval``/``ppo`` use it.
        sandbox: A sandbox to grade in (left open); None: a `LocalSandbox` of `workers` processes (None: one
            per CPU) made on first use and closed by `close`.
        env_kwargs: Any other `CodeEnv` argument: ``dataset``, ``task_ids``, ``problems``, ``max_steps``,
            ``tests`` (``visible``, ``tcg``, ``tcg:SPEC``, ``dataset`` = ORACLE, a `TestSource`),
            ``show_tests``, ``examples``, ``reward``, ``alpha``, ``truncation_reward``, ``process_reward``,
            ``phi``, ``timeout_s`` ...
    """

    def __init__(self, *, split: str = "train", mode: str = "direct", chat: bool = False,
                 sandbox: Sandbox | None = None, workers: int | None = None, **env_kwargs: Any) -> None:
        # A given sandbox serves the env too (the test-case generator runs references in it); else the env
        # makes its own only if the generator needs one.
        self.env = CodeEnv(split=split, mode=mode, sandbox=sandbox, **env_kwargs)
        if chat and self.env.prompt_style == "instruct":
            raise IntegrationError("prompt_style='instruct' prompts hold the chat template already: leave chat False")
        self.chat = chat
        self.problems: dict[str, Problem] = {p.task_id: p for p in self.env.problems}
        self.workers = workers or os.cpu_count() or 1
        self._sandbox, self._owns_sandbox = sandbox, sandbox is None
        self._graded: OrderedDict[tuple, Grade] = OrderedDict()
        name = f"o1code_{self.env.tests_name}_tests"
        if is_oracle(self.env.tests_name):
            name = f"ORACLE_{name}"
            log.warning("ORACLE reward: the reward tests are the judging tests (tests=%r): the judging curve "
                        "repeats the reward and cannot show reward hacking; judge on held-out problems",
                        self.env.tests_name)
        self.reward = _RewardFunc(self, name, "reward")
        self.judging = _RewardFunc(self, JUDGING_NAME, "judging_pass")
        self.prm = _RewardFunc(self, PRM_NAME, "prm") if self.env.process_reward is not None else None

    @property
    def reward_funcs(self) -> list[_RewardFunc]:
        """For ``GRPOTrainer(reward_funcs=...)``: the reward, the judging pass fraction, and the PRM if any."""
        return [self.reward, self.judging] + ([self.prm] if self.prm else [])

    @property
    def reward_weights(self) -> list[float]:
        """For ``GRPOConfig(reward_weights=...)``, in the order of `reward_funcs`: the judging tests weigh 0."""
        return [1.0, 0.0] + ([1.0] if self.prm else [])

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox that grades (made on first use when none was given)."""
        if self._sandbox is None:
            self._sandbox = LocalSandbox(workers=self.workers)
        return self._sandbox

    def dataset(self) -> Any:
        """A `datasets.Dataset`, one row per problem: ``prompt`` (the env's first prompt; a one-message chat
        with `chat`), ``task_id`` and ``reward_tests`` (the reward tests as assert statements)."""
        from datasets import Dataset

        rows: dict[str, list] = {"prompt": [], "task_id": [], "reward_tests": []}
        for problem in self.env.problems:
            obs, _ = self.env.reset(options={"task_id": problem.task_id})
            rows["prompt"].append([{"role": "user", "content": obs["prompt"]}] if self.chat else obs["prompt"])
            rows["task_id"].append(problem.task_id)
            rows["reward_tests"].append(_asserts(self.env.test_source.tests_for(problem)))
        return Dataset.from_dict(rows)

    def grade(self, completions: Sequence[Any], task_ids: Sequence[str],
              reward_tests: Sequence[Sequence[str]] | None = None, phi_t: int | None = None) -> list[Grade]:
        """Grade completions of the prompts of `task_ids` (``reward_tests``: the dataset's column; None: the
        env's test source). New ones run in one `run_many` batch; graded ones are remembered."""
        texts = [completion_text(c) for c in completions]
        if len(task_ids) != len(texts) or (reward_tests is not None and len(reward_tests) != len(texts)):
            raise IntegrationError(f"{len(texts)} completions but {len(task_ids)} task ids"
                                   + ("" if reward_tests is None else f" and {len(reward_tests)} reward test lists"))
        keys, todo = [], {}
        for i, (text, tid) in enumerate(zip(texts, task_ids)):
            problem = self.problems.get(tid)
            if problem is None:
                raise IntegrationError(f"unknown task id {tid!r}: not one of this task's problems")
            tests = tuple(reward_tests[i]) if reward_tests is not None else _asserts(self.env.test_source.tests_for(problem))
            key = (tid, text, tests)
            keys.append(key)
            if key not in self._graded and key not in todo:
                todo[key] = (problem, text, tests)
        if todo:
            for key, grade in zip(todo, self._grade_batch(list(todo.values()), phi_t)):
                self._graded[key] = grade
            while len(self._graded) > max(_REMEMBERED, len(keys)):
                self._graded.popitem(last=False)
        return [self._graded[k] for k in keys]

    def _grade_batch(self, items: list[tuple[Problem, str, tuple[str, ...]]], phi_t: int | None) -> list[Grade]:
        env = self.env
        episodes = [read_episode(text, p, env.mode, env.max_steps) for p, text, _ in items]
        jobs: dict[tuple, Job] = {}
        for (p, _, tests), ep in zip(items, episodes):
            if ep.code is not None:
                for t in (tests, tuple(p.tests)):
                    jobs.setdefault((ep.code, t, p.setup_code), Job(ep.code, list(t), p.setup_code, env.timeout_s))
        results = dict(zip(jobs, self.sandbox.run_many(list(jobs.values())))) if jobs else {}
        for key, r in results.items():
            if r.verdict is Verdict.SANDBOX_ERROR:  # an infrastructure failure is never a reward of 0
                raise IntegrationError(f"the sandbox failed twice on infrastructure: {r.message}")
        prm = self._process_rewards(items, episodes)
        grades = []
        for (p, _, tests), ep, process in zip(items, episodes, prm):
            if ep.code is None:
                grades.append(Grade(env.truncation_reward, 0.0, 0.0, False, False, sum(process), None))
                continue
            got: ExecutionResult = results[(ep.code, tests, p.setup_code)]
            truth: ExecutionResult = results[(ep.code, tuple(p.tests), p.setup_code)]
            reward = env.outcome(got)
            if env.phi is not None:
                reward = env.phi(reward, process, t=env.phi_t if phi_t is None else phi_t)
            grades.append(Grade(reward, got.pass_fraction, truth.pass_fraction, got.verdict is Verdict.PASSED,
                                truth.verdict is Verdict.PASSED, sum(process), ep.code))
        return grades

    def _process_rewards(self, items: list, episodes: list[Episode]) -> list[list[float]]:
        """The env's process reward of each episode's scored steps, all prefixes of the batch in one call."""
        if self.env.process_reward is None:
            return [[] for _ in episodes]
        spans, prefixes = [], []
        for (p, _, _), ep in zip(items, episodes):
            n = ep.scored_steps(self.env.max_steps)
            spans.append((len(prefixes), len(prefixes) + n))
            prefixes += [(p, ep.steps[: j + 1]) for j in range(n)]
        values = prefix_values(self.env.process_reward, prefixes)
        return [values[a:b] for a, b in spans]

    def close(self) -> None:
        """Close the owned sandbox (a given one stays open) and the env; idempotent."""
        if self._owns_sandbox and self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        self.env.close()

    def __enter__(self) -> O1CodeTask:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _asserts(tests: Sequence[Any]) -> tuple[str, ...]:
    """Tests as assert statements (a `TestCase` grades exactly as its `as_assert`), for a dataset column."""
    return tuple(t if isinstance(t, str) else t.as_assert() for t in tests)


__all__ = ["Episode", "Grade", "JUDGING_NAME", "O1CodeTask", "PRM_NAME", "completion_text", "read_episode",
           "trace_steps"]
