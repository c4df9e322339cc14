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
from a data set, so trusted) is graded by *record and replay*; the solution's code still runs
only in the sandbox:

1. Record (host, once per test, at `parse_test` time): the test runs with every name it calls
   but neither binds nor gets from the host (the solution's functions) bound to a recorder. A
   call records its arguments (deep-copied; they must be plain data) and returns a placeholder
   that absorbs operations and is truthy; asserts run with errors swallowed. Result: the ordered
   list of solution calls. A test that cannot be recorded (non-plain arguments, arguments made
   from another call's result, a placeholder iterated over outside an assert, over budget)
   raises `InvalidTestError`.
2. The sandbox evaluates exactly those calls, as call expressions built from the recorded
   arguments (`call_source`), and returns plain values as for any other test.
3. Replay (host): the test runs again; each solution call returns the sandbox's value for the
   next recorded call with equal arguments (recorded calls it does not make are skipped; a
   call's error is raised only where the test makes or uses that call), and asserts are real. A
   call that was not recorded means the test's calls depended on solution results: the test
   fails with a message saying so.

Both passes see the same seeded private ``random`` module, restricted builtins and imports
(`TEST_IMPORTS`), and a step/time budget; solution calls inside an assert are made before the
assert's check (like single asserts), so the calls do not depend on short-circuiting.
"""

from __future__ import annotations

import ast
import builtins
import cmath
import collections
import copy
import decimal
import fractions
import functools
import heapq
import itertools
import json
import keyword
import math
import operator
import random
import re
import string
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import InvalidTestError, ValueDecodeError
from .types import Test, TestCase, Verdict

_SAFE_BUILTIN_NAMES = (
    "abs all any ascii bin bool bytes callable chr complex dict divmod enumerate filter float "
    "format frozenset hash hex int isinstance issubclass iter len list map max min next oct ord "
    "pow range repr reversed round set slice sorted str sum tuple type zip "
    "Exception ValueError TypeError ArithmeticError ZeroDivisionError"
).split()

#: Builtins available to host-side evaluation of a test (no open, import, eval, getattr ...).
SAFE_BUILTINS: dict[str, Any] = {n: getattr(builtins, n) for n in _SAFE_BUILTIN_NAMES}

#: Modules a test may use on the host (pure, no I/O).
HOST_MODULES: dict[str, Any] = {
    "math": math, "cmath": cmath, "re": re, "collections": collections, "itertools": itertools,
    "functools": functools, "operator": operator, "string": string, "decimal": decimal,
    "fractions": fractions, "heapq": heapq,
}

#: Every name a test can resolve on the host; any other name lives in the sandbox.
HOST_NAMES = frozenset(SAFE_BUILTINS) | frozenset(HOST_MODULES) | {"True", "False", "None"}

_PLACEHOLDER = "__sbx_v{}"
_EXPECTED = "__sbx_expected"


@dataclass(frozen=True)
class TestPlan:
    """A test split for record/replay grading.

    Attributes:
        source: The test as an assert statement (a `TestCase` is shown via `TestCase.as_assert`).
        calls: The sub-expressions to evaluate in the sandbox, in evaluation order (source text);
            for a multi-statement test, the recorded solution calls.
        check: The host-side expression, source text, with placeholders ``__sbx_v<i>`` for calls
            (for a multi-statement test: the instrumented test program).
        host_values: Extra host-only values the check uses (a `TestCase`'s expected value).
    """

    __test__ = False

    source: str
    calls: tuple[str, ...]
    check: str
    host_values: dict[str, Any] = field(default_factory=dict, compare=False)
    _code: Any = field(default=None, compare=False, repr=False)
    _program: Any = field(default=None, compare=False, repr=False)

    @property
    def multi(self) -> bool:
        """True for a test of several statements (graded by record and replay, see `replay`)."""
        return self._program is not None


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the test binds itself: comprehension targets, lambda arguments, walrus targets."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            out |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Lambda):
            a = node.args
            out |= {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
            out |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
        elif isinstance(node, ast.NamedExpr):
            out.add(node.target.id)
    return out


def top_level_names(code: str) -> frozenset[str]:
    """Names `code` binds at module level (defs, classes, assignments, imports; not inside
    functions). Returns an empty set when the code does not parse."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    out: set[str] = set()
    stack: list[ast.stmt] = list(body)
    while stack:
        st = stack.pop()
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(st.name)
            continue
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in st.names}
            continue
        for node in ast.iter_child_nodes(st):
            if isinstance(node, ast.stmt):
                stack.append(node)
            elif isinstance(node, ast.excepthandler):
                stack.extend(node.body)
                if node.name:
                    out.add(node.name)
            else:
                out |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return frozenset(out)


def _split(expr: ast.expr, source: str, shadowed: frozenset[str] = frozenset()) -> tuple[ast.expr, list[str]]:
    local = _bound_names(expr)
    calls: list[str] = []
    host = HOST_NAMES

    def sandbox_names(node: ast.AST) -> set[str]:
        return {
            n.id for n in ast.walk(node)
            if isinstance(n, ast.Name) and n.id not in host and n.id not in local
        }

    # A solution may define a function named like a builtin (MBPP 126 tests `sum(10, 15)`). Such a
    # name is the solution's only when the test calls nothing else of the solution: otherwise a
    # solution defining `set` could take over `set(f(x)) == set((1, 2))` and see the expected value.
    if shadowed and not sandbox_names(expr):
        host = HOST_NAMES - shadowed

    def uses_local(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id in local for n in ast.walk(node))

    def visit(node: ast.AST) -> ast.AST:
        if isinstance(node, ast.expr):
            if not sandbox_names(node):
                return node
            whole = (
                isinstance(node, ast.Name)
                or (isinstance(node, ast.Call) and sandbox_names(node.func))
                or (isinstance(node, (ast.Attribute, ast.Subscript)) and sandbox_names(node.value))
            )
            if whole:
                if uses_local(node):
                    raise InvalidTestError(
                        f"test {source!r}: the sandbox expression {ast.unparse(node)!r} uses a "
                        "variable bound inside the test; rewrite the test without it"
                    )
                name = _PLACEHOLDER.format(len(calls))
                calls.append(ast.unparse(node))
                return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        # Descend (also through keywords and comprehensions, which are not expressions).
        for fname, old in ast.iter_fields(node):
            if isinstance(old, list):
                setattr(node, fname, [visit(x) if isinstance(x, ast.AST) else x for x in old])
            elif isinstance(old, ast.AST):
                setattr(node, fname, visit(old))
        return node

    return visit(expr), calls


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


def _finish(source: str, check: ast.expr, calls: list[str], host_values: dict) -> TestPlan:
    tree = ast.fix_missing_locations(ast.Expression(body=check))
    code = compile(tree, "<check>", "eval")
    return TestPlan(source, tuple(calls), ast.unparse(check), host_values, code)


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


def _clip(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _short(v: Any, n: int = 120) -> str:
    try:
        s = repr(v)
    except Exception:  # e.g. an int too large for repr
        s = f"<{type(v).__name__}>"
    return s if len(s) <= n else s[: n - 3] + "..."


# ------------------------------------------------------------------------ multi-statement tests

#: Modules a multi-statement test may import (and finds without importing); ``random`` is a
#: private module over ``random.Random(TEST_RANDOM_SEED)``, new for each pass of each test.
TEST_IMPORTS: dict[str, Any] = {**HOST_MODULES, "copy": copy, "typing": typing, "random": None}

#: Seed of the private ``random`` module of a multi-statement test (the same in both passes).
TEST_RANDOM_SEED = 0

#: Host-side budget of one pass of a multi-statement test: loop iterations plus function calls
#: of the test code, and wall-clock seconds.
TEST_STEP_BUDGET = 2_000_000
TEST_TIME_BUDGET_S = 10.0

#: Largest nesting and size of the arguments of one recorded solution call.
_ARG_MAX_DEPTH = 100
_ARG_MAX_ITEMS = 1_000_000

_TEST_EXTRA_BUILTINS = (
    "AssertionError AttributeError IndexError KeyError LookupError NotImplementedError "
    "OverflowError RecursionError RuntimeError StopIteration object __build_class__"
).split()

_TEST_BUILTINS: dict[str, Any] = {
    **SAFE_BUILTINS, **{n: getattr(builtins, n) for n in _TEST_EXTRA_BUILTINS},
    "print": lambda *a, **k: None,  # a test's print() is a no-op on the host
}

#: Names a multi-statement test resolves on the host; every other name it neither binds nor
#: finds here is the solution's and may only be called.
TEST_HOST_NAMES = frozenset(_TEST_BUILTINS) | frozenset(TEST_IMPORTS) | {"__name__"}

_RESERVED = "__sbx_"


@dataclass(frozen=True, slots=True)
class CallResult:
    """The sandbox's answer for one call (see `LocalSandbox.evaluate`): ``ok`` and ``value`` (plain
    builtin data, exact types), or the verdict and message of the error (an exception of the
    solution, a dead process, a value that is not plain data). ``verdict`` is `Verdict.PASSED`
    when ``ok``; ``value`` is None when not."""

    ok: bool
    value: Any = None
    verdict: Verdict = Verdict.PASSED
    message: str = ""

    @property
    def error(self) -> str:
        """The same as ``message`` (the name `o1code.rewards.tcg` used)."""
        return self.message


# Control flow of the two passes. BaseException, so that `except Exception` in a test cannot
# swallow them.
class _Invalid(BaseException):
    """Recording found the test unusable (e.g. arguments that are not plain data)."""


class _OverBudget(BaseException):
    pass


class _SolutionFailed(BaseException):
    def __init__(self, verdict: Verdict, message: str) -> None:
        super().__init__(message)
        self.verdict, self.message = verdict, message


class _Diverged(BaseException):
    pass


class _AssertFailed(BaseException):
    def __init__(self, index: int, detail: str) -> None:
        super().__init__(index, detail)
        self.index, self.detail = index, detail


class _Pending(Exception):
    """A recording-pass placeholder was used where a concrete value is needed."""


class _Placeholder:
    """What a solution call returns while recording: absorbs operations (and is truthy), so that
    asserts and comprehensions go on making their calls; conversions to concrete values raise."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<solution result>"

    def __bool__(self) -> bool:
        return True

    def _absorb(self, *args: Any, **kwargs: Any) -> "_Placeholder":
        return self

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _Pending("a solution result is used where a concrete value is needed")


for _n in ("eq ne lt le gt ge add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv mod "
           "rmod pow rpow matmul rmatmul and rand or ror xor rxor lshift rlshift rshift rrshift "
           "divmod rdivmod neg pos abs invert round trunc floor ceil getitem getattr call "
           "contains").split():
    setattr(_Placeholder, f"__{_n}__", _Placeholder._absorb)
for _n in "index int float complex len iter hash str format bytes reversed".split():
    setattr(_Placeholder, f"__{_n}__", _Placeholder._refuse)
_PENDING = _Placeholder()


class _NotPlain(Exception):
    pass


def _plain_copy(x: Any, budget: list[int], depth: int = 0) -> Any:
    """A deep copy of `x`, which must be plain data (exact builtin types, as `decode_value`)."""
    if depth > _ARG_MAX_DEPTH:
        raise _NotPlain("nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise _NotPlain("too many parts")
    t = type(x)
    if x is None or t in (bool, int, float, complex, str, bytes):
        return x
    if t is list or t is tuple:
        items = [_plain_copy(v, budget, depth + 1) for v in x]
        return items if t is list else tuple(items)
    if t is set or t is frozenset:
        return t(_plain_copy(v, budget, depth + 1) for v in x)
    if t is dict:
        return {_plain_copy(k, budget, depth + 1): _plain_copy(v, budget, depth + 1) for k, v in x.items()}
    if isinstance(x, _Placeholder):
        raise _NotPlain("it uses the result of another solution call")
    raise _NotPlain(f"a value of type {t.__name__} is not plain data")


def _same(a: Any, b: Any) -> bool:
    """Equal plain data of the same types (NaN equals NaN, 0.0 differs from -0.0)."""
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)
    if t is complex:
        return _same(a.real, b.real) and _same(a.imag, b.imag)
    if t is list or t is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if t is dict:
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def value_source(x: Any) -> str:
    """Python source (no names except ``complex`` and ``frozenset``) that evaluates to the plain
    value `x`: exact for NaN, infinities, -0.0, ints of any size (hex, so no digit limit), bytes."""
    t = type(x)
    if x is None or t is bool or t is str or t is bytes:
        return repr(x)
    if t is int:
        return repr(x) if -(1 << 62) < x < (1 << 62) else hex(x)
    if t is float:
        if x != x:
            return "(1e999-1e999)"
        if math.isinf(x):
            return "1e999" if x > 0 else "-1e999"
        return repr(x)
    if t is complex:
        return f"complex({value_source(x.real)}, {value_source(x.imag)})"
    if t is list:
        return "[" + ", ".join(map(value_source, x)) + "]"
    if t is tuple:
        return "(" + ", ".join(map(value_source, x)) + ("," if len(x) == 1 else "") + ")"
    if t is set:
        return "{" + ", ".join(map(value_source, x)) + "}" if x else "{*()}"
    if t is frozenset:
        return f"frozenset({value_source(set(x))})"
    if t is dict:
        return "{" + ", ".join(f"{value_source(k)}: {value_source(v)}" for k, v in x.items()) + "}"
    raise TypeError(f"{t.__name__} is not plain data")


def call_source(name: str, args: tuple, kwargs: dict) -> str:
    """The call expression ``name(*args, **kwargs)`` the sandbox evaluates for a recorded call."""
    parts = [value_source(a) for a in args]
    named = {k: v for k, v in kwargs.items() if k.isidentifier() and not keyword.iskeyword(k)}
    parts += [f"{k}={value_source(v)}" for k, v in named.items()]
    rest = {k: v for k, v in kwargs.items() if k not in named}
    if rest:
        parts.append("**" + value_source(rest))
    return f"{name}({', '.join(parts)})"


@dataclass(frozen=True)
class _Program:
    code: Any  # the instrumented test, compiled
    solution_names: tuple[str, ...]
    asserts: tuple[str, ...]  # source of each assert, for messages
    recorded: tuple[tuple[str, tuple, dict], ...]  # (name, args, kwargs) of each solution call


class _SolutionFn:
    """A solution function as the test sees it on the host: calls go to the pass's session."""

    __slots__ = ("name", "session")

    def __init__(self, name: str, session: "_Session") -> None:
        self.name, self.session = name, session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.session.call(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<solution function {self.name}>"


class _Box:
    """The result of a solution call made ahead of its assert's check: raises only when used."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: Optional[_SolutionFailed] = None) -> None:
        self.value, self.error = value, error


def _get(box: _Box) -> Any:
    if box.error is not None:
        raise box.error
    return box.value


class _Session:
    """One pass of a multi-statement test: budget, private random, solution calls, asserts."""

    recording = True

    def __init__(self) -> None:
        self.steps = TEST_STEP_BUDGET
        self.deadline = time.monotonic() + TEST_TIME_BUDGET_S

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0 or (not self.steps & 1023 and time.monotonic() > self.deadline):
            raise _OverBudget()

    def iterate(self, iterable: Any) -> Any:
        for x in iterable:
            self.tick()
            yield x

    def boxed(self, fn: Any, *args: Any, **kwargs: Any) -> _Box:
        if not isinstance(fn, _SolutionFn):  # not a solution function after all: call it here
            return _Box(fn(*args, **kwargs))
        try:
            return _Box(self.call(fn.name, args, kwargs))
        except _SolutionFailed as exc:
            return _Box(error=exc)

    def namespace(self, solution_names: Sequence[str]) -> dict[str, Any]:
        rand = types.ModuleType("random")
        rng = random.Random(TEST_RANDOM_SEED)
        for name in random.__all__:
            attr = getattr(rng, name, None)
            if callable(attr) and getattr(attr, "__self__", None) is rng:
                setattr(rand, name, attr)
        rand.Random = random.Random
        mods = {**TEST_IMPORTS, "random": rand}

        def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if level == 0 and name in mods:
                return mods[name]
            raise ImportError(f"a test may import only {', '.join(sorted(mods))}, not {name!r}")

        ns: dict[str, Any] = {"__builtins__": {**_TEST_BUILTINS, "__import__": _import},
                              "__name__": "__test__", **mods}
        ns.update({n: _SolutionFn(n, self) for n in solution_names})
        ns.update(__sbx_tick__=self.tick, __sbx_iter__=self.iterate, __sbx_call__=self.boxed,
                  __sbx_get__=_get, __sbx_check__=self.check)
        return ns

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def check(self, index: int, thunk: Any) -> None:
        raise NotImplementedError


class _Recorder(_Session):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        budget = [_ARG_MAX_ITEMS]
        try:
            a, kw = _plain_copy(args, budget), _plain_copy(kwargs, budget)
        except _NotPlain as exc:
            raise _Invalid(f"the arguments of a call to {name}() are not plain data: {exc}") from None
        self.calls.append((name, a, kw))
        return _PENDING

    def check(self, index: int, thunk: Any) -> None:
        try:
            thunk()  # only to make its solution calls: the values are placeholders
        except Exception:
            pass


class _Replayer(_Session):
    recording = False

    def __init__(self, program: _Program, results: Sequence[CallResult]) -> None:
        super().__init__()
        self.recorded, self.results, self.pos = program.recorded, results, 0
        self.last: Optional[int] = None

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        try:
            budget = [_ARG_MAX_ITEMS]
            a, kw = _plain_copy(args, budget), _plain_copy(kwargs, budget)
        except _NotPlain as exc:
            raise _Diverged(f"a call to {name}() has arguments that are not plain data ({exc})") from None
        for j in range(self.pos, len(self.recorded)):
            n, ra, rkw = self.recorded[j]
            if n == name and _same(ra, a) and _same(rkw, kw):
                self.pos, self.last = j + 1, j
                r = self.results[j]
                if not r.ok:
                    raise _SolutionFailed(r.verdict, f"{_clip(call_source(n, ra, rkw), 80)}: {r.message}")
                return r.value
        try:
            shown = call_source(name, a, kw)
        except (TypeError, ValueError, RecursionError):
            shown = f"{name}(...)"
        raise _Diverged(f"the test made a call the recording pass did not make: {_clip(shown, 120)} "
                        "(its calls depend on solution results, which record/replay cannot grade)")

    def check(self, index: int, thunk: Any) -> None:
        try:
            ok = bool(thunk())
        except Exception as exc:  # the values made the check itself fail: a wrong answer
            raise _AssertFailed(index, f"check raised {type(exc).__name__}: {str(exc)[:200]}") from None
        if not ok:
            raise _AssertFailed(index, "")


def _test_line(exc: BaseException) -> str:
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


class _Instrument(ast.NodeTransformer):
    """Rewrites a multi-statement test: each ``assert E`` becomes its hoisted solution calls plus
    ``__sbx_check__(k, lambda: E')``; loops and functions tick the budget; comprehension
    iterables are wrapped so that their items tick it too."""

    def __init__(self, source: str, solution_names: frozenset[str]) -> None:
        self.source, self.sol = source, solution_names
        self.asserts: list[str] = []
        self.hoisted = 0

    def _tick(self) -> ast.stmt:
        return ast.Expr(ast.Call(ast.Name("__sbx_tick__", ast.Load()), [], []))

    def _loop(self, node: Any) -> Any:
        self.generic_visit(node)
        node.body.insert(0, self._tick())
        return node

    visit_For = visit_AsyncFor = visit_While = visit_FunctionDef = visit_AsyncFunctionDef = _loop

    def visit_comprehension(self, node: ast.comprehension) -> ast.comprehension:
        self.generic_visit(node)
        node.iter = ast.Call(ast.Name("__sbx_iter__", ast.Load()), [node.iter], [])
        return node

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        index = len(self.asserts)
        self.asserts.append(ast.get_source_segment(self.source, node) or ast.unparse(node))
        local = _bound_names(node.test)
        hoisted: list[ast.stmt] = []
        sol, outer = self.sol, self

        class Hoist(ast.NodeTransformer):
            depth = 0

            def _scope(self, n: Any) -> Any:
                self.depth += 1
                self.generic_visit(n)
                self.depth -= 1
                return n

            visit_Lambda = visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _scope

            def visit_Call(self, n: ast.Call) -> ast.expr:
                self.generic_visit(n)  # inner calls first: they are evaluated first
                if (self.depth == 0 and isinstance(n.func, ast.Name) and n.func.id in sol
                        and not any(isinstance(m, ast.Name) and m.id in local for m in ast.walk(n))):
                    name = f"__sbx_h{outer.hoisted}__"
                    outer.hoisted += 1
                    call = ast.Call(ast.Name("__sbx_call__", ast.Load()), [n.func, *n.args], n.keywords)
                    hoisted.append(ast.Assign([ast.Name(name, ast.Store())], call))
                    return ast.Call(ast.Name("__sbx_get__", ast.Load()), [ast.Name(name, ast.Load())], [])
                return n

        check = Hoist().visit(node.test)
        check = self.visit(check)  # comprehensions in the check tick too
        thunk = ast.Lambda(ast.arguments([], [], None, [], [], None, []), check)
        stmts = [*hoisted, ast.Expr(ast.Call(ast.Name("__sbx_check__", ast.Load()),
                                             [ast.Constant(index), thunk], []))]
        for st in stmts:
            ast.copy_location(st, node)
        return stmts


def _test_bound_names(tree: ast.AST) -> set[str]:
    """Every name the test binds anywhere (assignments, defs, imports, arguments, handlers)."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, ast.alias):
            out.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
    return out


@functools.lru_cache(maxsize=4096)
def _plan_multi(test: str) -> TestPlan:
    tree = ast.parse(test)
    if not any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
        raise InvalidTestError(f"test {test[:120]!r} has several statements but no assert")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | _test_bound_names(tree)
    if any(n.startswith(_RESERVED) for n in names):
        raise InvalidTestError(f"test {test[:120]!r} uses a name starting with {_RESERVED!r} (reserved)")
    loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    sol = frozenset(loads - _test_bound_names(tree) - TEST_HOST_NAMES)
    inst = _Instrument(test, sol)
    tree = ast.fix_missing_locations(inst.visit(tree))
    try:
        code = compile(tree, "<test>", "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError) as exc:  # e.g. `return` outside a function
        raise InvalidTestError(f"test {test[:120]!r} does not compile: {exc}") from None
    rec = _Recorder()
    try:
        exec(code, rec.namespace(sorted(sol)))  # noqa: S102 - trusted test text; no solution code
    except _Invalid as exc:
        raise InvalidTestError(f"test {test[:120]!r}: {exc}{_test_line(exc)}") from None
    except _OverBudget:
        raise InvalidTestError(f"test {test[:120]!r} exceeds the host budget of "
                               f"{TEST_STEP_BUDGET} steps / {TEST_TIME_BUDGET_S:g} s") from None
    except (Exception, SystemExit) as exc:
        raise InvalidTestError(
            f"test {test[:120]!r} cannot be recorded: {type(exc).__name__}: {str(exc)[:200]}"
            f"{_test_line(exc)} (outside an assert, the recording pass cannot use a solution "
            "result as a concrete value: iterate over it, take its len(), convert it, hash it)") from None
    program = _Program(code, tuple(sorted(sol)), tuple(inst.asserts), tuple(rec.calls))
    calls = tuple(call_source(*c) for c in rec.calls)
    return TestPlan(test, calls, ast.unparse(tree), {}, None, program)


def replay(plan: TestPlan, results: Sequence[CallResult]) -> Optional[tuple[Verdict, str]]:
    """Replay a multi-statement test (see the module docstring) with the sandbox's results for
    its recorded calls. Returns None when it passed, else ``(verdict, message)``: the verdict of
    a solution call's error when the test used that call's result, else `Verdict.FAILED`."""
    program: _Program = plan._program
    if program is None:
        raise ValueError("replay() is for multi-statement tests")
    if len(results) != len(program.recorded):
        raise ValueError(f"expected {len(program.recorded)} results, got {len(results)}")
    rep = _Replayer(program, results)
    try:
        exec(program.code, rep.namespace(program.solution_names))  # noqa: S102 - trusted test, plain values
    except _AssertFailed as exc:
        msg = f"assertion failed: {_clip(program.asserts[exc.index], 200)}"
        if exc.detail:
            msg += f": {exc.detail}"
        if rep.last is not None and results[rep.last].ok:
            msg += f" (last call {_clip(plan.calls[rep.last], 80)} -> {_short(results[rep.last].value)})"
        return Verdict.FAILED, msg
    except _SolutionFailed as exc:
        return exc.verdict, exc.message
    except _Diverged as exc:
        return Verdict.FAILED, str(exc)
    except _OverBudget:
        return Verdict.FAILED, (f"the test code exceeded its host budget ({TEST_STEP_BUDGET} steps / "
                                f"{TEST_TIME_BUDGET_S:g} s) with the solution's values")
    except (Exception, SystemExit) as exc:
        return Verdict.FAILED, f"test raised {type(exc).__name__}: {str(exc)[:200]}{_test_line(exc)}"
    return None


# ------------------------------------------------------------------------------- value decoding

def decode_value(obj: Any, max_depth: int = 100, max_items: int = 1_000_000) -> Any:
    """Decode one tagged-JSON value sent by the sandbox into plain builtin data.

    Returns a value whose every part has an exact builtin type (None, bool, int, float, complex,
    str, bytes, list, tuple, set, frozenset, dict). Raises `ValueDecodeError` for anything else,
    for nesting deeper than `max_depth`, or for more than `max_items` parts. Nothing is unpickled.
    """
    budget = [max_items]

    def dec(x: Any, depth: int) -> Any:
        if depth > max_depth:
            raise ValueDecodeError("value nested too deeply")
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueDecodeError("value has too many parts")
        t = type(x)
        if x is None or t is bool or t is int or t is str:
            return x
        if t is not list or len(x) < 2 or type(x[0]) is not str:
            raise ValueDecodeError(f"malformed value ({t.__name__})")
        tag = x[0]
        try:
            if tag == "f" and len(x) == 2:
                return float.fromhex(x[1])
            if tag == "I" and len(x) == 2 and type(x[1]) is str and len(x[1]) <= 100_000:
                return int(x[1], 16)
            if tag == "c" and len(x) == 3:
                return complex(float.fromhex(x[1]), float.fromhex(x[2]))
            if tag == "b" and len(x) == 2:
                return bytes.fromhex(x[1])
            if len(x) == 2 and type(x[1]) is list:
                items = x[1]
                if tag == "l":
                    return [dec(v, depth + 1) for v in items]
                if tag == "t":
                    return tuple(dec(v, depth + 1) for v in items)
                if tag == "s":
                    return {dec(v, depth + 1) for v in items}
                if tag == "F":
                    return frozenset(dec(v, depth + 1) for v in items)
                if tag == "d":
                    out = {}
                    for pair in items:
                        if type(pair) is not list or len(pair) != 2:
                            raise ValueDecodeError("malformed dict item")
                        out[dec(pair[0], depth + 1)] = dec(pair[1], depth + 1)
                    return out
        except ValueDecodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. unhashable set member
            raise ValueDecodeError(f"bad {tag!r} value: {type(exc).__name__}") from None
        raise ValueDecodeError(f"unknown value tag {tag!r}")

    return dec(obj, 0)


def parse_line(line: bytes) -> Any:
    """Parse one JSON line from the sandbox; raises `ValueDecodeError` on anything malformed."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:  # incl. ints beyond the str-conversion limit
        raise ValueDecodeError(f"malformed result line: {type(exc).__name__}") from None
