"""Turning a test run into a reward: the outcome reward, test sources, and the paper's phi."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from o1code.data import Problem
from o1code.rewards.errors import RewardError
from o1code.sandboxes import ExecutionResult, Test, Verdict


@runtime_checkable
class TestSource(Protocol):
    """Where the reward tests of a problem come from (the data set, a test-case generator ...)."""

    def tests_for(self, problem: Problem) -> Sequence[Test]:
        """Return the tests whose outcome makes the reward for `problem`."""
        ...


#: Test sources whose tests are the judging tests: a search or selection rewarded by them sees
#: the tests that score it, so its figures are oracle figures.
ORACLE_TEST_SOURCES = frozenset({"dataset"})


def is_oracle(tests: str) -> bool:
    """True when reward tests named `tests` (``"dataset"``, ``"visible"``, ``"tcg"`` ...) are
    the judging tests, so that results rewarded by them must be labelled oracle."""
    return tests in ORACLE_TEST_SOURCES


class VisibleTests:
    """The tests a solver may see (`Problem.visible`: MBPP's first assert, HumanEval's docstring
    examples): an honest reward, since Pass@1 is judged on all of the problem's tests."""

    __test__ = False
    name = "visible"

    def tests_for(self, problem: Problem) -> Sequence[Test]:
        return problem.visible()


class DatasetTests:
    """The problem's own tests (for MBPP, its three asserts); optionally the challenge tests too.

    These are the judging tests: a reward from them is an oracle (see `is_oracle`)."""

    __test__ = False
    name = "dataset"

    def __init__(self, include_challenge: bool = False) -> None:
        self.include_challenge = include_challenge

    def tests_for(self, problem: Problem) -> Sequence[Test]:
        if self.include_challenge:
            return (*problem.tests, *problem.challenge_tests)
        return problem.tests


@dataclass(frozen=True)
class OutcomeReward:
    """The reward of a terminal step from its test run.

    ``form="pass_fraction"``: ``alpha * compile + (1 - alpha) * passed / total``, where compile is
    1 unless the code has a syntax error (the paper's code uses alpha = 0). ``form="binary"``:
    `tau_pass` when every test passes, else `tau_fail` (the paper's Algorithm 1).
    """

    form: str = "pass_fraction"
    alpha: float = 0.0
    tau_pass: float = 1.0
    tau_fail: float = 0.0

    def __post_init__(self) -> None:
        if self.form not in ("pass_fraction", "binary"):
            raise RewardError(f"unknown reward form {self.form!r}; use 'pass_fraction' or 'binary'")
        if not 0.0 <= self.alpha <= 1.0:
            raise RewardError(f"alpha must be in [0, 1], got {self.alpha}")

    def __call__(self, result: ExecutionResult) -> float:
        """Return the reward of `result`; a `sandbox_error` result is refused (never a reward)."""
        if result.verdict is Verdict.SANDBOX_ERROR:
            raise RewardError("a sandbox_error is an infrastructure failure, not a reward")
        if self.form == "binary":
            return self.tau_pass if result.verdict is Verdict.PASSED else self.tau_fail
        return self.alpha * float(result.compiled) + (1.0 - self.alpha) * result.pass_fraction


def alpha_schedule(t: int, start: float = 1.0, decay: float = 0.01, floor: float = 0.1) -> float:
    """The paper's code default: ``alpha(t) = max(floor, start - decay * t)``."""
    return max(floor, start - decay * t)


def phi(
    outcome: float,
    process_rewards: Sequence[float],
    t: int = 0,
    gamma: float = 0.9,
    exponent_from: int = 0,
) -> float:
    """Combine outcome and process rewards: ``alpha(t) R + (1 - alpha(t)) mean_j gamma^j r_j``.

    `exponent_from` picks the convention: 0 (the paper's code, j = 0..m-1, first step
    undiscounted) or 1 (the paper's text, j = 1..m). With no process rewards, returns `outcome`.
    """
    if exponent_from not in (0, 1):
        raise RewardError("exponent_from must be 0 or 1")
    if not process_rewards:
        return float(outcome)
    a = alpha_schedule(t)
    m = len(process_rewards)
    discounted = sum(gamma ** (j + exponent_from) * r for j, r in enumerate(process_rewards)) / m
    return a * outcome + (1.0 - a) * discounted
