"""Public types of `o1code.sandboxes`: verdicts, test cases, jobs, results, the Sandbox protocol and
the `SandboxHandle` base of the sandbox classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, TypeVar, Union, runtime_checkable


class Verdict(str, enum.Enum):
    """The outcome of running one solution against its tests (or of one test)."""

    PASSED = "passed"  #: every test was replayed and its assert held on the host
    FAILED = "failed"  #: an assert was false, or a value could not be returned as plain data
    TIMEOUT = "timeout"  #: the wall-clock or CPU limit was hit
    MEMORY = "memory"  #: the memory limit was hit (MemoryError under the address-space limit)
    RUNTIME_ERROR = "runtime_error"  #: an exception, SystemExit, or the process died without results
    SYNTAX_ERROR = "syntax_error"  #: the code does not parse (decided on the host)
    SANDBOX_ERROR = "sandbox_error"  #: the infrastructure failed; not the solution's fault, never a reward

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TestCase:
    """A test as a call and its expected value: ``call`` is an expression such as ``"add(2, 3)"``.

    Grades exactly like the assert ``assert add(2, 3) == 5`` (see `TestCase.as_assert`).
    `expected` must be plain data (None, bool, int, float, complex, str, bytes, and lists, tuples,
    sets, frozensets and dicts of those).
    """

    __test__ = False  # not a pytest test class

    call: str
    expected: Any

    def as_assert(self) -> str:
        """Return the equivalent MBPP-style assert statement."""
        return f"assert {self.call} == {self.expected!r}"


#: A test is an assert statement (str) or a `TestCase`.
Test = Union[str, TestCase]


@dataclass(frozen=True)
class Job:
    """One unit of work for `Sandbox.run_many`: the arguments of `Sandbox.run`."""

    code: str
    tests: Sequence[Test]
    setup_code: str = ""
    timeout_s: float = 4.0


@dataclass(frozen=True)
class TestOutcome:
    """The outcome of one test: its verdict, a short message (empty when passed), and seconds."""

    __test__ = False

    verdict: Verdict
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class ExecutionResult:
    """The result of `Sandbox.run`.

    Attributes:
        verdict: `Verdict.PASSED` only when every test passed; otherwise the first non-passing
            outcome's verdict (a syntax error or a crash before the tests applies to all).
        passed: Number of tests that passed.
        total: Number of tests.
        outcomes: One `TestOutcome` per test, in order.
        stdout: The solution's standard output, capped (a note marks truncation).
        stderr: The solution's standard error, capped.
        seconds: Wall time of the run, host side.
        message: A short explanation of the verdict (exception type and text, limit hit, ...).
        attempts: How many times the run was tried (2 after a retried `sandbox_error`).
        isolation: The isolation the code ran under, e.g. ``"bwrap+seccomp+rlimits"``; a value
            starting with ``"none"`` means it ran WITHOUT confinement (an explicit opt-in).
    """

    verdict: Verdict
    passed: int
    total: int
    outcomes: tuple[TestOutcome, ...] = field(default_factory=tuple)
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    message: str = ""
    attempts: int = 1
    isolation: str = ""

    @property
    def pass_fraction(self) -> float:
        """`passed / total`, or 0.0 when there are no tests."""
        return self.passed / self.total if self.total else 0.0

    @property
    def compiled(self) -> bool:
        """True unless the code failed to parse."""
        return self.verdict is not Verdict.SYNTAX_ERROR


@runtime_checkable
class Sandbox(Protocol):
    """Anything that runs untrusted code against tests and grades it."""

    def run(
        self, code: str, tests: Sequence[Test], setup_code: str = "", timeout_s: float = 4.0
    ) -> ExecutionResult:
        """Run `code`, then `setup_code`-prefixed tests; return the graded result."""
        ...

    def run_many(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        """Run many jobs in parallel; results in the order of `jobs`."""
        ...

    def close(self) -> None:
        """Release workers; idempotent."""
        ...


_H = TypeVar("_H", bound="SandboxHandle")


class SandboxHandle:
    """What every sandbox class shares (`LocalSandbox`, `RaySandbox`): a context manager that calls
    `close`, closed when collected, and never copied. A sandbox is a shared service handle: gym.make
    deep-copies its kwargs, and a copy must not clone the workers."""

    def close(self) -> None:
        raise NotImplementedError

    def __deepcopy__(self: _H, memo: dict) -> _H:
        return self

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a half-built sandbox, or the interpreter shutting down
            pass
