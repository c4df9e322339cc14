"""Plain values on the host side of the sandbox: what the sandbox sends back, how it is compared,
shown and sent in.

- `decode_value` / `parse_line`: the tagged JSON a sample writes, decoded into plain builtin data of
  exact types (None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict) with
  depth and size caps; nothing is unpickled, anything else is a `ValueDecodeError`.
- `CallResult`: the sandbox's answer for one call (a value, or a verdict and message).
- `value_source` / `call_source`: plain values and calls written as Python source (how recorded
  calls of a multi-statement test are sent to the sandbox); `_same`: equality of plain data of the
  same types; `_short` / `_clip`: values and text shortened for messages.
"""

from __future__ import annotations

import json
import keyword
import math
from dataclasses import dataclass
from typing import Any

from .errors import ValueDecodeError
from .types import Verdict


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


def _clip(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _short(v: Any, n: int = 120) -> str:
    try:
        s = repr(v)
    except Exception:  # e.g. an int too large for repr
        s = f"<{type(v).__name__}>"
    return s if len(s) <= n else s[: n - 3] + "..."


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
