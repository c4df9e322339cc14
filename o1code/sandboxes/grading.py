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
"""

from __future__ import annotations

import ast
import builtins
import cmath
import collections
import decimal
import fractions
import functools
import heapq
import itertools
import json
import math
import operator
import re
import string
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidTestError, ValueDecodeError
from .types import Test, TestCase

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
        calls: The sub-expressions to evaluate in the sandbox, in evaluation order (source text).
        check: The host-side expression, source text, with placeholders ``__sbx_v<i>`` for calls.
        host_values: Extra host-only values the check uses (a `TestCase`'s expected value).
    """

    __test__ = False

    source: str
    calls: tuple[str, ...]
    check: str
    host_values: dict[str, Any] = field(default_factory=dict, compare=False)
    _code: Any = field(default=None, compare=False, repr=False)


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
        raise InvalidTestError(f"test {test!r} is not a single assert statement")
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

    Returns a `TestPlan`. Raises `InvalidTestError` when the test is not a single assert, does not
    parse, or cannot be split (see the module docstring). Results for strings are cached.
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


def _short(v: Any, n: int = 120) -> str:
    try:
        s = repr(v)
    except Exception:  # e.g. an int too large for repr
        s = f"<{type(v).__name__}>"
    return s if len(s) <= n else s[: n - 3] + "..."


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
