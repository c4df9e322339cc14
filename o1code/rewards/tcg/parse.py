"""Reading test cases: model output -> `ParsedCase`s, dataset asserts -> (call, value), literals.

Nothing here raises on bad text: malformed input is reported in the returned values.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from typing import Any

from o1code.data import Problem


@dataclass(frozen=True)
class ParsedCase:
    """One case read from model output.

    Attributes:
        call: The canonical call text (``ast.unparse`` of the parsed input), or the raw input text when
            it is malformed.
        output: The model's expected value (a plain Python value) when `output_ok`, else None.
        output_ok: Whether the ``# output:`` part parsed as a literal.
        input_ok: Whether the input is a single call of the entry point with literal arguments.
        error: Why the case is malformed ("" when `input_ok`).
    """

    call: str
    output: Any = None
    output_ok: bool = False
    input_ok: bool = False
    error: str = ""


_INPUT_RE = re.compile(r"#\s*input\s*:?", re.IGNORECASE)
_OUTPUT_RE = re.compile(r"#\s*output\s*:?", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[^\n]*")
_ASSERT_RE = re.compile(r"^\s*assert\s+(.+?)\s*==\s*(.+?)\s*$", re.MULTILINE)


def parse_literal(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a Python literal (also ``set()``/``frozenset(...)``), else (False, None)."""
    text = text.strip()
    if not text or len(text) > 100_000:
        return False, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    # repr() writes empty sets and frozensets as calls, which literal_eval refuses.
    m = re.fullmatch(r"(set|frozenset)\((.*)\)", text, re.DOTALL)
    if m:
        ok, inner = parse_literal(m.group(2)) if m.group(2).strip() else (True, ())
        if ok:
            try:
                return True, (set if m.group(1) == "set" else frozenset)(inner)
            except TypeError:
                return False, None
    return False, None


def parse_call(text: str, entry_point: str) -> tuple[str | None, str]:
    """Check that `text` is one call of `entry_point` whose arguments are all literals.

    Returns ``(canonical call text, "")`` on success, ``(None, reason)`` otherwise. The canonical
    text is ``ast.unparse`` of the call, so formatting differences do not defeat deduplication.
    """
    text = text.strip().rstrip(";")
    if text.startswith(">>>"):
        text = text[3:].strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None, "input does not parse"
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None, "input is not a function call"
    if node.func.id != entry_point:
        return None, f"input calls {node.func.id!r}, not {entry_point!r}"
    for arg in [*node.args, *(kw.value for kw in node.keywords)]:
        if isinstance(arg, ast.Starred) or not parse_literal(ast.unparse(arg))[0]:
            return None, "an argument is not a literal"
    if any(kw.arg is None for kw in node.keywords):
        return None, "an argument is not a literal"
    return ast.unparse(node), ""


def parse_cases(text: str, entry_point: str) -> list[ParsedCase]:
    """Read every test case from raw model output; never raises.

    Cases are found by their ``# input:`` markers (fences optional, so truncated or unfenced output
    still counts); the output is what follows ``# output:`` up to the next fence or marker. When the
    text has no ``# input:`` marker at all, lines of the form ``assert <call> == <literal>`` are read
    instead. A case whose input is not a literal-argument call of `entry_point` has ``input_ok=False``.
    """
    cases: list[ParsedCase] = []
    starts = [m for m in _INPUT_RE.finditer(text)]
    if not starts:
        for m in _ASSERT_RE.finditer(text):
            call, err = parse_call(m.group(1), entry_point)
            ok, value = parse_literal(m.group(2))
            cases.append(ParsedCase(call or m.group(1).strip(), value if ok else None, ok, call is not None, err))
        return cases
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        segment = text[m.end():end]
        out_m = _OUTPUT_RE.search(segment)
        raw_in = segment[: out_m.start()] if out_m else segment
        raw_in = _FENCE_RE.split(raw_in)[0] if "```" in raw_in else raw_in
        raw_out = ""
        if out_m:
            raw_out = _FENCE_RE.split(segment[out_m.end():])[0]
        call, err = parse_call(raw_in, entry_point)
        if call is None and raw_in.strip().count("\n"):
            # Allow chatter after the call: try the first non-empty line alone.
            first = next((ln for ln in raw_in.splitlines() if ln.strip()), "")
            call, _ = parse_call(first, entry_point)
        ok, value = parse_literal(raw_out)
        if not ok and raw_out.strip():
            ok, value = parse_literal(next((ln for ln in raw_out.splitlines() if ln.strip()), ""))
        cases.append(ParsedCase(call or raw_in.strip()[:200], value if ok else None, ok, call is not None,
                                "" if call is not None else (err or "input does not parse")))
    return cases


def parse_assert(test: str, entry_point: str) -> tuple[str, Any] | None:
    """``(call, expected)`` for a dataset assert of the form ``assert f(literals) == literal``; else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = ast.parse(test)
    except (SyntaxError, ValueError):
        return None
    if len(mod.body) != 1 or not isinstance(mod.body[0], ast.Assert):
        return None
    cmp = mod.body[0].test
    if not (isinstance(cmp, ast.Compare) and len(cmp.ops) == 1 and isinstance(cmp.ops[0], ast.Eq)):
        return None
    call, _ = parse_call(ast.unparse(cmp.left), entry_point)
    ok, value = parse_literal(ast.unparse(cmp.comparators[0]))
    if call is None or not ok:
        return None
    return call, value


def normal_call(text: str) -> str:
    """`text` as ``ast.unparse(ast.parse(text))`` (the canonical form `parse_call` gives), or stripped
    as it stands when it does not parse; so that two spellings of one call compare equal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.unparse(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return text.strip()


def value_literal(value: Any) -> str | None:
    """``repr(value)`` when it reads back (via the literal parser) as an equal value, else None.

    NaN, infinities and non-plain objects have no literal that round-trips, so such tests are dropped.
    """
    try:
        text = repr(value)
    except Exception:  # e.g. an int too large to print
        return None
    ok, back = parse_literal(text)
    try:
        return text if ok and back == value and type(back) is type(value) else None
    except Exception:
        return None


def cases_from_asserts(problem: Problem) -> list[tuple[str, Any]]:
    """The problem's dataset tests that fit ``assert f(literals) == literal``, as (call, value) pairs."""
    out = []
    for t in problem.tests:
        parsed = parse_assert(t, problem.entry_point)
        if parsed is not None:
            out.append(parsed)
    return out
