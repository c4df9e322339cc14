"""Typed records of `CodeEnv`: its observation, its info, the judging-test record in
``info["eval"]`` and the snapshot used by tree search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, TypedDict

from o1code.sandboxes import ExecutionResult, Verdict


class Observation(TypedDict):
    """`CodeEnv`'s observation (the `spaces.Dict` sample): see the class docstring."""

    prompt: str
    problem: str
    steps: str
    step: int


class EvalDict(TypedDict):
    """``info["eval"]`` as a dict (the keys of `EvalInfo`)."""

    verdict: str
    passed: int
    total: int
    all_passed: bool


class StepInfo(TypedDict, total=False):
    """The `info` of `CodeEnv.reset` and `step`; which keys appear when is on `CodeEnv`."""

    task_id: str
    step: int
    action_type: int | None
    action_not_str: str
    action_truncated: int
    action_cut: bool
    action_replaced_chars: bool
    reason: str
    process_reward: float
    code: str
    tests: list[str]
    verdict: str
    passed: int
    total: int
    message: str
    eval: EvalDict
    outcome_reward: float
    process_rewards: list[float]
    phi_alpha: float


@dataclass(frozen=True)
class EvalInfo:
    """How a terminal step's code did on the judging tests (every test of the data set), whatever
    the reward tests were. In `info` as the dict ``info["eval"]`` (`to_dict`); read it back with
    `EvalInfo.from_info(info)`."""

    verdict: str  #: a `Verdict` value
    passed: int
    total: int
    all_passed: bool

    @classmethod
    def from_result(cls, result: ExecutionResult) -> EvalInfo:
        """The record of a sandbox run on the judging tests."""
        return cls(result.verdict.value, result.passed, result.total, result.verdict is Verdict.PASSED)

    def to_dict(self) -> EvalDict:
        """``{"verdict", "passed", "total", "all_passed"}``: what ``info["eval"]`` holds."""
        return {"verdict": self.verdict, "passed": self.passed, "total": self.total, "all_passed": self.all_passed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalInfo:
        """The record of a `to_dict` dict."""
        return cls(str(d["verdict"]), int(d["passed"]), int(d["total"]), bool(d["all_passed"]))

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> EvalInfo | None:
        """The record of ``info["eval"]``; None when `info` has none (no terminal step with code)."""
        ev = info.get("eval")
        return None if ev is None else cls.from_dict(ev)


@dataclass(frozen=True)
class EnvState:
    """An immutable snapshot of an episode for tree search (`CodeEnv.get_state`/`set_state`).

    `process_rewards` are the process rewards of the non-terminal steps so far, kept only when the
    env aggregates with `phi` (else empty); when a restored state lacks some, `phi` recomputes them.
    """

    task_id: str
    steps: tuple[str, ...]
    done: bool
    process_rewards: tuple[float, ...] = ()


__all__ = ["EnvState", "EvalDict", "EvalInfo", "Observation", "StepInfo"]
