"""Process rewards: one protocol for everything that scores reasoning steps (a PRM, a heuristic).

`ProcessReward` is what `CodeEnv(process_reward=...)` (the reward of each non-terminal step),
`MCTSAgent(value_fn=...)` (the value of a new node, weighted into selection by ``value_weight``)
and step-level RL (one reward per step of a trajectory) all take. Its unit is a *prefix*: a problem
and the steps so far, ``(problem, (S^1, ..., S^j))``; the value of the prefix is the PRM's score
``r(Q, S^{1:j}) in [0, 1]`` of its last step S^j, given the steps before it (the paper's
``rho_PRM(Q, S^{1:j})``). Two batched calls, so a model can fill a forward pass:

- ``score_last(batch) -> list[float]``: for each prefix, the value of its last step (the env scores
  the step just taken; MCTS scores the children of one expansion in one call);
- ``score_batch(batch) -> list[list[float]]``: for each trajectory, one value per step, element
  ``j`` being the value of the prefix that ends at step ``j + 1`` (a generative PRM reads every
  step's marker in one pass; RL and PRM evaluation want all of them).

Subclass `ProcessRewardBase` and implement either method (the other follows from it), or wrap what
you have: `StepRewardFn` (the env's old hook ``(problem, previous_steps, step) -> float``),
`PrefixValueFn` (MCTS's old ``(problem, steps) -> float``), `QuestionScorer` (a model scoring
``(question_text, steps)`` pairs, the shape of `o1code.models.prm.ProcessRewardModel`).
`as_process_reward` picks the wrapper.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from o1code.data import Problem
from o1code.data.formats import describe_problem
from o1code.rewards.errors import RewardError

#: A prefix to score: the problem and the steps so far (the last one is the step scored).
Prefix = tuple[Problem, Sequence[str]]
#: The env's old process-reward hook: ``(problem, previous_steps, step) -> reward``.
StepRewardHook = Callable[[Problem, Sequence[str], str], float]
#: MCTS's old value hook: ``(problem, steps) -> value in [0, 1]`` of the state after `steps`.
PrefixValueHook = Callable[[Problem, Sequence[str]], float]


@runtime_checkable
class ProcessReward(Protocol):
    """Scores reasoning steps: values in [0, 1], batched (see the module's docstring)."""

    def score_last(self, batch: Sequence[Prefix]) -> list[float]:
        """For each ``(problem, steps)`` (steps non-empty), the value of its last step: one float each."""
        ...

    def score_batch(self, batch: Sequence[Prefix]) -> list[list[float]]:
        """For each ``(problem, steps)``, ``len(steps)`` floats: element j is the value of step j + 1
        given the steps before it."""
        ...


def _check_steps(batch: Sequence[Prefix]) -> None:
    for problem, steps in batch:
        if not steps:
            raise RewardError(f"score_last needs at least one step (problem {problem.task_id})")


class ProcessRewardBase:
    """A `ProcessReward` from either method: subclasses implement `score_batch` or `score_last`.

    `score_last` from `score_batch` scores each whole trajectory and keeps the last value;
    `score_batch` from `score_last` scores every prefix of every trajectory in one batch.
    """

    def score_last(self, batch: Sequence[Prefix]) -> list[float]:
        if type(self).score_batch is ProcessRewardBase.score_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither score_last nor score_batch")
        _check_steps(batch)
        return [values[-1] for values in self.score_batch(batch)]

    def score_batch(self, batch: Sequence[Prefix]) -> list[list[float]]:
        if type(self).score_last is ProcessRewardBase.score_last:
            raise NotImplementedError(f"{type(self).__name__} implements neither score_last nor score_batch")
        prefixes = [(p, tuple(steps[: j + 1])) for p, steps in batch for j in range(len(steps))]
        flat = iter(self.score_last(prefixes)) if prefixes else iter(())
        return [[next(flat) for _ in steps] for _, steps in batch]

    def score(self, problem: Problem, steps: Sequence[str]) -> list[float]:
        """One trajectory's values, one per step (``score_batch`` of one)."""
        return self.score_batch([(problem, steps)])[0]


class StepRewardFn(ProcessRewardBase):
    """Adapts the env's old hook ``fn(problem, previous_steps, step) -> float`` (called once per prefix,
    with the steps before the last as a tuple). Values are passed through as the hook returns them."""

    def __init__(self, fn: StepRewardHook) -> None:
        self.fn = fn

    def score_last(self, batch: Sequence[Prefix]) -> list[float]:
        _check_steps(batch)
        return [float(self.fn(p, tuple(steps[:-1]), steps[-1])) for p, steps in batch]


class PrefixValueFn(ProcessRewardBase):
    """Adapts MCTS's old hook ``fn(problem, steps) -> float`` (called once per prefix, steps as a tuple)."""

    def __init__(self, fn: PrefixValueHook) -> None:
        self.fn = fn

    def score_last(self, batch: Sequence[Prefix]) -> list[float]:
        _check_steps(batch)
        return [float(self.fn(p, tuple(steps))) for p, steps in batch]


def default_question(problem: Problem, mode: str = "pseudocode", show_tests: str = "first") -> str:
    """The question a PRM reads: the problem as the policy saw it (statement, the function to write,
    the tests shown: ``describe_problem(problem, show_tests)``), as `o1code.pipeline.prm` trains it.
    The policy's fixed instructions and worked examples are left out: the same for every problem, they
    tell the PRM nothing and would triple its input. `mode` is accepted for symmetry with the policy's
    prompt and does not change the text (the steps carry the mode's format)."""
    del mode
    return describe_problem(problem, show_tests)


class QuestionScorer(ProcessRewardBase):
    """Adapts a model whose ``score_batch`` takes ``(question_text, steps)`` pairs and returns one
    value per step (e.g. `o1code.models.prm.ProcessRewardModel`); `question` turns a problem into
    the text the model was trained on (`default_question` unless given)."""

    def __init__(self, model: Any, question: Callable[[Problem], str] = default_question) -> None:
        self.model, self.question = model, question

    def score_batch(self, batch: Sequence[Prefix]) -> list[list[float]]:
        if not batch:
            return []
        out = self.model.score_batch([(self.question(p), list(steps)) for p, steps in batch])
        return [[float(v) for v in values] for values in out]


def as_process_reward(obj: Any, legacy: type[StepRewardFn] | type[PrefixValueFn] = StepRewardFn,
                      question: Callable[[Problem], str] = default_question) -> ProcessReward | None:
    """`obj` as a `ProcessReward`: None stays None; an object with both ``score_last`` and
    ``score_batch`` is returned as is; an object with only ``score_batch`` is a question-text model,
    wrapped as ``QuestionScorer(obj, question)``; a plain callable is an old hook, wrapped by
    `legacy` (`StepRewardFn` for the env's ``(problem, previous_steps, step)``, `PrefixValueFn` for
    MCTS's ``(problem, steps)``).

    Raises:
        RewardError: for anything else.
    """
    if obj is None:
        return None
    if callable(getattr(obj, "score_last", None)) and callable(getattr(obj, "score_batch", None)):
        return obj
    if callable(getattr(obj, "score_batch", None)):
        return QuestionScorer(obj, question)
    if callable(obj):
        return legacy(obj)
    raise RewardError(f"not a process reward: {type(obj).__name__} (needs score_last/score_batch, or a callable)")


def _checked(values: Sequence[Any], n: int, what: str) -> list:
    values = list(values)
    if len(values) != n:
        raise RewardError(f"the process reward returned {len(values)} {what} for {n} inputs")
    return values


def prefix_values(prm: ProcessReward, batch: Sequence[Prefix]) -> list[float]:
    """`prm.score_last(batch)` as floats, checked to hold one value per prefix ([] for no prefixes).

    Raises:
        RewardError: for a prefix without steps, or a reply of the wrong length.
    """
    if not batch:
        return []
    _check_steps(batch)
    return [float(v) for v in _checked(prm.score_last(batch), len(batch), "values")]


def step_rewards(prm: ProcessReward, problem: Problem, steps: Sequence[str]) -> list[float]:
    """The per-step rewards ``r_1..r_m`` of one trajectory (one `score_batch` call), checked."""
    if not steps:
        return []
    (values,) = _checked(prm.score_batch([(problem, steps)]), 1, "trajectories")
    return [float(v) for v in _checked(values, len(steps), "step values")]


__all__ = [
    "Prefix", "PrefixValueFn", "PrefixValueHook", "ProcessReward", "ProcessRewardBase", "QuestionScorer",
    "StepRewardFn", "StepRewardHook", "as_process_reward", "default_question", "prefix_values", "step_rewards",
]
