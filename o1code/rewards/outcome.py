"""Turning a test run into a reward: the outcome reward, test sources, and the paper's phi."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

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
    *,
    alpha_start: float = 1.0,
    alpha_decay: float = 0.01,
    alpha_floor: float = 0.1,
) -> float:
    """Combine outcome and process rewards: ``alpha(t) R + (1 - alpha(t)) mean_j gamma^j r_j``.

    ``alpha(t) = alpha_schedule(t, alpha_start, alpha_decay, alpha_floor)`` (by default
    ``max(0.1, 1 - 0.01 t)``). `exponent_from` picks the convention: 0 (the paper's code,
    j = 0..m-1, first step undiscounted) or 1 (the paper's text, j = 1..m). With no process
    rewards, returns `outcome`.
    """
    if exponent_from not in (0, 1):
        raise RewardError("exponent_from must be 0 or 1")
    if not process_rewards:
        return float(outcome)
    a = alpha_schedule(t, alpha_start, alpha_decay, alpha_floor)
    m = len(process_rewards)
    discounted = sum(gamma ** (j + exponent_from) * r for j, r in enumerate(process_rewards)) / m
    return a * outcome + (1.0 - a) * discounted


@dataclass(frozen=True)
class PhiConfig:
    """The settings of the paper's aggregation `phi` of an outcome reward with the process rewards.

    `t` is the time index of ``alpha(t) = max(alpha_floor, alpha_start - alpha_decay * t)``: the RL
    iteration (or update) count, which the trainer advances so that weight moves from the outcome
    to the process rewards; `gamma` the discount of the process rewards; `exponent_from` their
    exponent convention (see `phi`).
    """

    t: int = 0
    gamma: float = 0.9
    exponent_from: int = 0
    alpha_start: float = 1.0
    alpha_decay: float = 0.01
    alpha_floor: float = 0.1

    def __post_init__(self) -> None:
        if self.t < 0:
            raise RewardError(f"phi's t must be >= 0, got {self.t}")
        if not 0.0 <= self.gamma <= 1.0:
            raise RewardError(f"phi's gamma must be in [0, 1], got {self.gamma}")
        if self.exponent_from not in (0, 1):
            raise RewardError("phi's exponent_from must be 0 or 1")

    def alpha(self, t: int | None = None) -> float:
        """``alpha(t)`` (at `t`, or this config's `t`)."""
        return alpha_schedule(self.t if t is None else t, self.alpha_start, self.alpha_decay, self.alpha_floor)

    def __call__(self, outcome: float, process_rewards: Sequence[float], t: int | None = None) -> float:
        """`phi` of `outcome` and `process_rewards` with these settings (at `t`, or this config's `t`)."""
        return phi(outcome, process_rewards, self.t if t is None else t, self.gamma, self.exponent_from,
                   alpha_start=self.alpha_start, alpha_decay=self.alpha_decay, alpha_floor=self.alpha_floor)

    @classmethod
    def coerce(cls, value: PhiConfig | Mapping[str, Any] | bool | None) -> PhiConfig | None:
        """None or False: None (no aggregation); True: the defaults; a mapping: its keys as fields.

        Raises:
            RewardError: for unknown keys or another type.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise RewardError(f"unknown phi settings: {', '.join(sorted(unknown))}")
            return cls(**value)
        raise RewardError(f"phi must be a PhiConfig, a dict, True or None; got {type(value).__name__}")
