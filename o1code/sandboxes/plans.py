"""Test plans: which parts of a test run in the sandbox and which on the host, and the host's
restricted namespace (`SAFE_BUILTINS`, `HOST_MODULES`, `HOST_NAMES`; for a test of several statements
also `TEST_IMPORTS`, `TEST_IMPORTABLE`, `TEST_HOST_NAMES`).

A `TestPlan` holds the sandbox calls of a test and its host-side check. For a single assert the
split is here (`_split`: every sub-expression that needs a name the host does not have becomes a
placeholder ``__sbx_v<i>``, see `o1code.sandboxes.grading`); a test of several statements is
planned by record and replay (`o1code.sandboxes.replay`). `top_level_names` gives the names a
solution binds, which decide when a solution's function shadows a builtin name.
"""

from __future__ import annotations

import array
import ast
import base64
import binascii
import bisect
import builtins
import calendar
import cmath
import collections
import copy
import dataclasses
import datetime
import decimal
import difflib
import enum
import fractions
import functools
import hashlib
import heapq
import itertools
import json
import keyword
import math
import numbers
import operator
import re
import statistics
import string
import struct
import textwrap
import typing
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidTestError


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

#: Modules a multi-statement test may import (and finds without importing); ``random`` is a
#: private module over ``random.Random(seed)`` (`o1code.sandboxes.replay.PassBudget.seed`), new for
#: each pass of each test.
TEST_IMPORTS: dict[str, Any] = {**HOST_MODULES, "copy": copy, "typing": typing, "random": None}

#: Further modules a multi-statement test may import: pure and deterministic standard modules that
#: test writers use (a digest or JSON form of a result, bisect, statistics, dates ...); none opens a
#: file, a socket or a process. Unlike `TEST_IMPORTS` they are not found without an import, so that a
#: solution function of the same name (``def bisect(...)``) stays the solution's.
TEST_IMPORTABLE: dict[str, Any] = {m.__name__: m for m in (
    array, base64, binascii, bisect, calendar, dataclasses, datetime, difflib, enum, hashlib, json, keyword,
    numbers, statistics, struct, textwrap, unicodedata, zlib)}

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


def _finish(source: str, check: ast.expr, calls: list[str], host_values: dict) -> TestPlan:
    tree = ast.fix_missing_locations(ast.Expression(body=check))
    code = compile(tree, "<check>", "eval")
    return TestPlan(source, tuple(calls), ast.unparse(check), host_values, code)
