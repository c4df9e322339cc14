"""Host-side grading: split tests into sandbox calls, decode returned values, evaluate asserts.

The sandbox never sees expected values and never decides pass/fail. For each test we parse the
assert with `ast`, replace every *sandbox sub-expression* (a piece whose evaluation needs a name
the host does not have, e.g. ``f(x)`` or a setup-defined ``root``) with a placeholder, send only
those sub-expressions to the sandbox, and evaluate the rest of the assert here, in a restricted
namespace (safe builtins plus a few pure modules), with the decoded plain values substituted:

    assert set(f(x)) == set((1, 2))            -> sandbox: f(x)         host: set(v0) == set((1, 2))
    assert math.isclose(f(1), 2.5, rel_tol=.1) -> sandbox: f(1)         host: math.isclose(v0, 2.5, ...)
    assert f(a) == b   (a, b from setup_code)  -> sandbox: f(a), b      host: v0 == v1

Names the host knows (builtins, ``math`` ...) are always evaluated on the host, even when the
solution redefines them: a solution defining ``set`` or ``math`` cannot take over the comparison.

A test of several statements (imports, assignments, loops, helper definitions, several asserts;
from a data set, so trusted) is graded by *record and replay* (`o1code.sandboxes.replay`): a
recording pass on the host, at `parse_test` time, finds the solution calls it makes; the sandbox
evaluates exactly those; a replay pass on the host runs the test with their values (importing only
the pure standard modules `TEST_IMPORTS` and `TEST_IMPORTABLE`), within the budget set here (``TEST_STEP_BUDGET``, ``TEST_TIME_BUDGET_S``, ``TEST_RANDOM_SEED``).

This module is the front and keeps every name importable from it: the plans and the host's
namespace are `o1code.sandboxes.plans`, record and replay `o1code.sandboxes.replay`, and the plain
values (decoding what the sandbox sends, `CallResult`) `o1code.sandboxes.values`.
"""

from __future__ import annotations

import ast
import functools
from typing import Any, Optional, Sequence

from .errors import InvalidTestError
from .plans import _EXPECTED, _PLACEHOLDER, HOST_MODULES, HOST_NAMES, SAFE_BUILTINS, TestPlan, _finish, _split
from .plans import TEST_HOST_NAMES, TEST_IMPORTABLE, TEST_IMPORTS, top_level_names
from .replay import PassBudget, record
from .replay import replay as _replay
from .types import Test, TestCase, Verdict
from .values import _same, _short, call_source, decode_value, parse_line, value_source  # noqa: F401 (re-exported)
from .values import CallResult

#: Seed of the private ``random`` module of a multi-statement test (the same in both passes).
TEST_RANDOM_SEED = 0

#: Host-side budget of one pass of a multi-statement test: loop iterations plus function calls
#: of the test code, and wall-clock seconds.
TEST_STEP_BUDGET = 2_000_000
TEST_TIME_BUDGET_S = 10.0


def _budget() -> PassBudget:
    """The settings above, read when a pass starts (so that changing them takes effect)."""
    return PassBudget(TEST_STEP_BUDGET, TEST_TIME_BUDGET_S, TEST_RANDOM_SEED)


@functools.lru_cache(maxsize=65536)
def _plan_str(test: str, shadowed: frozenset[str]) -> TestPlan:
    try:
        mod = ast.parse(test)
    except SyntaxError as exc:
        raise InvalidTestError(f"test {test!r} does not parse: {exc.msg}") from None
    if len(mod.body) != 1 or not isinstance(mod.body[0], ast.Assert):
        return _plan_multi(test)
    check, calls = _split(mod.body[0].test, test, shadowed)
    return _finish(test, check, calls, {})


def parse_test(test: Test, defined: frozenset[str] = frozenset()) -> TestPlan:
    """Split one test (an assert string or a `TestCase`) into sandbox calls and a host check.

    `defined` is the set of names the solution and setup code bind at module level (see
    `top_level_names`); it only matters when the solution redefines a builtin name the test uses.

    A string test is either one assert statement (split as in the module docstring) or a test of
    several statements (record and replay, see the module docstring; its recording pass runs
    here, on the host, without the solution).

    Returns a `TestPlan`. Raises `InvalidTestError` when the test does not parse, cannot be split,
    or (several statements) has no assert or cannot be recorded. Results for strings are cached.
    """
    if isinstance(test, TestCase):
        try:
            call = ast.parse(test.call, mode="eval").body
        except SyntaxError as exc:
            raise InvalidTestError(f"TestCase call {test.call!r} does not parse: {exc.msg}") from None
        left, calls = _split(call, test.call, defined & HOST_NAMES)
        check = ast.Compare(left=left, ops=[ast.Eq()], comparators=[ast.Name(_EXPECTED, ast.Load())])
        # The expected value stays on the host as an object: it is never sent anywhere.
        return _finish(f"assert {test.call} == <expected>", check, calls, {_EXPECTED: test.expected})
    if not isinstance(test, str):
        raise InvalidTestError(f"a test must be a str or TestCase, not {type(test).__name__}")
    return _plan_str(test, defined & HOST_NAMES)


def evaluate_test(plan: TestPlan, values: list[Any]) -> tuple[bool, str]:
    """Evaluate a plan's host check with the sandbox call values (plain data, already decoded).

    Returns ``(True, "")`` when the assert holds, else ``(False, message)``; an exception raised by
    the host check (e.g. ``set()`` of unhashable values) counts as not holding.
    """
    if len(values) != len(plan.calls):
        raise ValueError(f"expected {len(plan.calls)} values, got {len(values)}")
    if plan.multi:
        bad = replay(plan, [CallResult(True, v) for v in values])
        return (True, "") if bad is None else (False, bad[1])
    env: dict[str, Any] = {"__builtins__": SAFE_BUILTINS, **HOST_MODULES, **plan.host_values}
    for i, v in enumerate(values):
        env[_PLACEHOLDER.format(i)] = v
    try:
        ok = bool(eval(plan._code, env))  # noqa: S307 - trusted test text, plain-data values
    except Exception as exc:  # the values made the check itself fail: a wrong answer
        return False, f"check raised {type(exc).__name__}: {str(exc)[:200]}"
    if ok:
        return True, ""
    shown = ", ".join(f"{c} -> {_short(v)}" for c, v in zip(plan.calls, values))
    return False, f"assertion failed: {plan.source[:200]}" + (f" (got {shown})" if shown else "")


@functools.lru_cache(maxsize=4096)
def _plan_multi(test: str) -> TestPlan:
    return record(test, _budget())


def replay(plan: TestPlan, results: Sequence[CallResult]) -> Optional[tuple[Verdict, str]]:
    """Replay a multi-statement test (see `o1code.sandboxes.replay`) with the sandbox's results for
    its recorded calls. Returns None when it passed, else ``(verdict, message)``: the verdict of
    a solution call's error when the test used that call's result, else `Verdict.FAILED`."""
    return _replay(plan, results, _budget())


__all__ = [
    "HOST_MODULES", "HOST_NAMES", "SAFE_BUILTINS", "TEST_HOST_NAMES", "TEST_IMPORTABLE", "TEST_IMPORTS",
    "TEST_RANDOM_SEED", "TEST_STEP_BUDGET", "TEST_TIME_BUDGET_S", "CallResult", "TestPlan", "call_source", "decode_value",
    "evaluate_test", "parse_line", "parse_test", "replay", "top_level_names", "value_source",
]
