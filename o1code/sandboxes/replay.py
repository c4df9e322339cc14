"""Grading a test of several statements by record and replay (`o1code.sandboxes.grading` is the
front: `parse_test`, `evaluate_test`, and the budget settings it passes in as a `PassBudget`).

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
(`o1code.sandboxes.plans`: `TEST_IMPORTS`, `TEST_IMPORTABLE`), and a step/time budget; solution calls
inside an assert are made before the assert's check (like single asserts), so the calls do not depend on short-circuiting.
"""

from __future__ import annotations

import ast
import random
import time
import types
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .errors import InvalidTestError
from .plans import _TEST_BUILTINS, TEST_HOST_NAMES, TEST_IMPORTABLE, TEST_IMPORTS, TestPlan, _bound_names
from .types import Verdict
from .values import CallResult, _clip, _same, _short, call_source


@dataclass(frozen=True)
class PassBudget:
    """The host-side budget of one pass of a test (loop iterations plus function calls of the test
    code, and wall-clock seconds) and the seed of its private ``random`` module (the same in both
    passes); `o1code.sandboxes.grading` makes one from its ``TEST_*`` settings."""

    steps: int
    seconds: float
    seed: int


#: Largest nesting and size of the arguments of one recorded solution call.
_ARG_MAX_DEPTH = 100
_ARG_MAX_ITEMS = 1_000_000

_RESERVED = "__sbx_"


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

    def __init__(self, budget: PassBudget) -> None:
        self.budget = budget
        self.steps = budget.steps
        self.deadline = time.monotonic() + budget.seconds

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
        rng = random.Random(self.budget.seed)
        for name in random.__all__:
            attr = getattr(rng, name, None)
            if callable(attr) and getattr(attr, "__self__", None) is rng:
                setattr(rand, name, attr)
        rand.Random = random.Random
        mods = {**TEST_IMPORTS, "random": rand}
        importable = {**TEST_IMPORTABLE, **mods}

        def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if level == 0 and name in importable:
                return importable[name]
            raise ImportError(f"a test may import only {', '.join(sorted(importable))}, not {name!r}")

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
    def __init__(self, budget: PassBudget) -> None:
        super().__init__(budget)
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

    def __init__(self, program: _Program, results: Sequence[CallResult], budget: PassBudget) -> None:
        super().__init__(budget)
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


def record(test: str, budget: PassBudget) -> TestPlan:
    """Plan a test of several statements: check it, instrument it and run the recording pass (on
    the host, without the solution). Returns its `TestPlan` (the recorded calls, in order, as call
    expressions); raises `InvalidTestError` when it has no assert or cannot be recorded."""
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
    rec = _Recorder(budget)
    try:
        exec(code, rec.namespace(sorted(sol)))  # noqa: S102 - trusted test text; no solution code
    except _Invalid as exc:
        raise InvalidTestError(f"test {test[:120]!r}: {exc}{_test_line(exc)}") from None
    except _OverBudget:
        raise InvalidTestError(f"test {test[:120]!r} exceeds the host budget of "
                               f"{budget.steps} steps / {budget.seconds:g} s") from None
    except (Exception, SystemExit) as exc:
        raise InvalidTestError(
            f"test {test[:120]!r} cannot be recorded: {type(exc).__name__}: {str(exc)[:200]}"
            f"{_test_line(exc)} (outside an assert, the recording pass cannot use a solution "
            "result as a concrete value: iterate over it, take its len(), convert it, hash it)") from None
    program = _Program(code, tuple(sorted(sol)), tuple(inst.asserts), tuple(rec.calls))
    calls = tuple(call_source(*c) for c in rec.calls)
    return TestPlan(test, calls, ast.unparse(tree), {}, None, program)


def replay(plan: TestPlan, results: Sequence[CallResult], budget: PassBudget) -> Optional[tuple[Verdict, str]]:
    """Replay a multi-statement test (see the module docstring) with the sandbox's results for
    its recorded calls. Returns None when it passed, else ``(verdict, message)``: the verdict of
    a solution call's error when the test used that call's result, else `Verdict.FAILED`."""
    program: _Program = plan._program
    if program is None:
        raise ValueError("replay() is for multi-statement tests")
    if len(results) != len(program.recorded):
        raise ValueError(f"expected {len(program.recorded)} results, got {len(results)}")
    rep = _Replayer(program, results, budget)
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
        return Verdict.FAILED, (f"the test code exceeded its host budget ({budget.steps} steps / "
                                f"{budget.seconds:g} s) with the solution's values")
    except (Exception, SystemExit) as exc:
        return Verdict.FAILED, f"test raised {type(exc).__name__}: {str(exc)[:200]}{_test_line(exc)}"
    return None
