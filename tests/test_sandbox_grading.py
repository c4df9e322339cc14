"""o1code.sandboxes.grading: splitting tests into sandbox calls, decoding values, host checks."""

from __future__ import annotations

import math

import pytest

from o1code.sandboxes import InvalidTestError, TestCase, decode_value, evaluate_test, parse_test
from o1code.sandboxes.errors import ValueDecodeError
from o1code.sandboxes.grading import top_level_names


@pytest.mark.parametrize(
    "test, calls, check",
    [
        ("assert add(2, 3) == 5", ("add(2, 3)",), "__sbx_v0 == 5"),
        ("assert set(f(x)) == set((1,2))", ("f(x)",), "set(__sbx_v0) == set((1, 2))"),
        ("assert math.isclose(f(1), 2.5, rel_tol=0.001)", ("f(1)",), "math.isclose(__sbx_v0, 2.5, rel_tol=0.001)"),
        ("assert f(a) == b", ("f(a)", "b"), "__sbx_v0 == __sbx_v1"),
        ("assert f([1, 2], key=len) == g(3)", ("f([1, 2], key=len)", "g(3)"), "__sbx_v0 == __sbx_v1"),
        ("assert root.left.value == 3", ("root.left.value",), "__sbx_v0 == 3"),
        ("assert f(3)[0] == 1", ("f(3)[0]",), "__sbx_v0 == 1"),
        ("assert sorted(f(3), reverse=True) == [3, 1]", ("f(3)",), "sorted(__sbx_v0, reverse=True) == [3, 1]"),
        ("assert all(v > 0 for v in f(3))", ("f(3)",), "all((v > 0 for v in __sbx_v0))"),
        ("assert not f(3)", ("f(3)",), "not __sbx_v0"),
        ("assert f(3) is None", ("f(3)",), "__sbx_v0 is None"),
        ("assert 1 == 1", (), "1 == 1"),
    ],
)
def test_split(test, calls, check):
    plan = parse_test(test)
    assert plan.calls == calls
    assert plan.check == check


def test_expected_values_never_in_calls():
    plan = parse_test("assert f(1) == 987654321")
    assert "987654321" not in "".join(plan.calls)
    plan = parse_test(TestCase("f(1)", 987654321))
    assert plan.calls == ("f(1)",) and "987654321" not in plan.check


def test_shadowed_builtin_is_the_solutions_only_when_nothing_else_is_called():
    # MBPP 126 defines `sum` and tests `sum(10, 15)`.
    assert parse_test("assert sum(10,15) == 6", frozenset({"sum"})).calls == ("sum(10, 15)",)
    assert parse_test("assert sum(10,15) == 6").calls == ()
    # A solution defining `set` must not take over the comparison of its own result.
    plan = parse_test("assert set(f(x)) == set((1, 2))", frozenset({"set", "f"}))
    assert plan.calls == ("f(x)",)


def test_top_level_names():
    code = "import os, re as r\nfrom x import y as z\nA = 1\nif A:\n    def f(): b = 2\nclass C: pass\nfor i in []: pass"
    assert top_level_names(code) == {"os", "r", "z", "A", "f", "C", "i"}
    assert top_level_names("def (") == frozenset()


@pytest.mark.parametrize(
    "bad",
    ["x = f(1)", "assert f(", "assert all(f(i) == i for i in range(3))", 42,
     # multi-statement tests that record/replay cannot grade, or that misbehave on the host
     "x = f(1)\ny = 2",  # no assert
     "for v in f(3):\n    assert v > 0",  # iterates over a solution result outside an assert
     "g = lambda v: v\nassert f(g) == 1",  # an argument that is not plain data
     "y = f(1)\nassert f(y) == 2",  # an argument that is another call's result
     "import os\nassert f(os.sep) == 1",  # a module the host does not give tests
     "while True:\n    pass\nassert f(1)",  # over the host budget
     "__sbx_h0__ = 1\nassert f(1)",  # reserved name
     "return 1\nassert f(1)"],
)
def test_invalid_tests(bad):
    with pytest.raises(InvalidTestError):
        parse_test(bad)


def test_evaluate():
    plan = parse_test("assert math.isclose(f(1), 2.5, rel_tol=0.001)")
    assert evaluate_test(plan, [2.5001]) == (True, "")
    ok, msg = evaluate_test(plan, [3.0])
    assert not ok and "assertion failed" in msg
    ok, msg = evaluate_test(parse_test("assert set(f(1)) == {1}"), [[[1]]])  # unhashable
    assert not ok and "TypeError" in msg
    assert evaluate_test(parse_test(TestCase("f(1)", {"a": (1, 2)})), [{"a": (1, 2)}])[0]


def test_host_check_has_no_dangerous_builtins():
    from o1code.sandboxes.grading import HOST_NAMES, SAFE_BUILTINS

    for name in ("open", "__import__", "eval", "exec", "getattr", "compile", "globals", "vars"):
        assert name not in SAFE_BUILTINS and name not in HOST_NAMES
        # a name the host lacks is evaluated in the sandbox, never on the host
        assert parse_test(f"assert {name}('x')").calls == (f"{name}('x')",)


@pytest.mark.parametrize(
    "wire, value",
    [
        (None, None), (True, True), (5, 5), ("s", "s"),
        (["f", (2.5).hex()], 2.5), (["I", hex(10**40)], 10**40), (["c", (1.0).hex(), (2.0).hex()], 1 + 2j),
        (["b", "6869"], b"hi"), (["l", [1, ["t", [2, 3]]]], [1, (2, 3)]), (["s", [1, 2]], {1, 2}),
        (["F", [1]], frozenset({1})), (["d", [["a", 1], [["t", [1, 2]], None]]], {"a": 1, (1, 2): None}),
        (["f", "nan"], None),
    ],
)
def test_decode(wire, value):
    got = decode_value(wire)
    if value is None and wire is not None:
        assert math.isnan(got)
    else:
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "wire",
    [1.5, [1, 2], ["x", []], ["l", 5], ["s", [["l", []]]], ["d", [[1]]], ["I", "zz"], {"a": 1}, ["f", 3]],
)
def test_decode_rejects(wire):
    with pytest.raises(ValueDecodeError):
        decode_value(wire)


def test_decode_caps():
    deep: object = 1
    for _ in range(200):
        deep = ["l", [deep]]
    with pytest.raises(ValueDecodeError):
        decode_value(deep, max_depth=100)
    with pytest.raises(ValueDecodeError):
        decode_value(["l", list(range(1000))], max_items=100)


# ------------------------------------------------------------------- multi-statement tests

from o1code.sandboxes.grading import (  # noqa: E402
    TEST_RANDOM_SEED, CallResult, call_source, replay, value_source,
)
from o1code.sandboxes.types import Verdict  # noqa: E402


def _ok(*values):
    return [CallResult(True, v) for v in values]


def test_multi_records_calls_in_order_and_replays():
    test = "xs = [3, 1, 2]\nys = sorted(xs)\nfor i in range(2):\n    assert f(xs, i) == ys[i]\nassert g(k=1) is None"
    plan = parse_test(test)
    assert plan.multi and plan.calls == ("f([3, 1, 2], 0)", "f([3, 1, 2], 1)", "g(k=1)")
    assert replay(plan, _ok(1, 2, None)) is None
    assert evaluate_test(plan, [1, 2, None]) == (True, "")
    verdict, msg = replay(plan, _ok(1, 5, None))
    assert verdict is Verdict.FAILED and "assert f(xs, i) == ys[i]" in msg and "f([3, 1, 2], 1)" in msg
    # a solution error counts where the test uses that call's result, with the call's verdict
    verdict, msg = replay(plan, [CallResult(True, 1), CallResult(False, None, Verdict.TIMEOUT, "time limit"),
                                 CallResult(True, None)])
    assert verdict is Verdict.TIMEOUT and "f([3, 1, 2], 1)" in msg
    # ... and only there: an unused failing call does not fail the test
    plan = parse_test("x = None\nassert x is None or f(1) == 1\nassert f(2) == 2")
    assert plan.calls == ("f(1)", "f(2)")
    assert replay(plan, [CallResult(False, None, Verdict.RUNTIME_ERROR, "boom"), CallResult(True, 2)]) is None


def test_multi_single_asserts_keep_their_path():
    plan = parse_test("assert f(1) == 2")
    assert not plan.multi and plan.check == "__sbx_v0 == 2"


def test_multi_calls_in_short_circuits_and_comprehensions_are_all_recorded():
    plan = parse_test("for i in range(2):\n    assert f(i) != 0 or f(-i) == 0\nassert all(f(x) for x in [7, 8])")
    assert plan.calls == ("f(0)", "f(0)", "f(1)", "f(-1)", "f(7)", "f(8)")
    assert replay(plan, _ok(0, 0, 1, 5, 1, 1)) is None  # f(1) != 0: f(-1) is not needed
    assert replay(plan, _ok(0, 0, 1, 5, 1, 0))[0] is Verdict.FAILED


def test_multi_control_flow_on_results_is_replayed_or_reported():
    plan = parse_test("y = f(1)\nif y == 5:\n    assert f(2) == 3\nelse:\n    assert f(3) == 4")
    assert plan.calls == ("f(1)", "f(2)")  # the placeholder is truthy: the first branch is recorded
    assert replay(plan, _ok(5, 3)) is None
    verdict, msg = replay(plan, _ok(0, 3))  # takes the other branch: a call that was never recorded
    assert verdict is Verdict.FAILED and "f(3)" in msg and "record" in msg


def test_multi_arguments_that_differ_from_the_recording_fail_cleanly():
    # A test whose arguments depend on a solution result cannot even be recorded ...
    with pytest.raises(InvalidTestError, match="result of another solution call"):
        parse_test("a = f(1)\nassert f([a]) == 2")
    # ... and one whose host-side state depends on it fails at replay, without crashing.
    plan = parse_test("xs = []\nxs.append(f(1))\nn = 0\nfor v in xs:\n    n = n + 1\nassert f(n) == 1")
    assert plan.calls == ("f(1)", "f(1)")
    assert replay(plan, _ok(9, 1)) is None


def test_multi_random_is_private_seeded_and_identical_in_both_passes():
    import random

    state = random.getstate()
    test = "import random\nfrom random import randint\nxs = [randint(0, 10**6) for _ in range(5)]\nassert f(xs) == sorted(xs)"
    plan = parse_test(test)
    rng = random.Random(TEST_RANDOM_SEED)
    xs = [rng.randint(0, 10**6) for _ in range(5)]
    assert plan.calls == (f"f({xs!r})",)
    assert replay(plan, _ok(sorted(xs))) is None
    assert random.getstate() == state  # the interpreter's global random is untouched


def test_multi_host_names_are_the_hosts():
    # Names the test defines or the host has stay on the host; other names are the solution's.
    plan = parse_test("def helper(v):\n    return v + 1\nassert f(helper(1)) == sum([1, 2])\nassert open('x') == 1")
    assert plan.calls == ("f(2)", "open('x')")


def test_multi_budget_applies_to_replay(monkeypatch):
    from o1code.sandboxes import grading

    plan = parse_test("n = f(1)\nassert sum(1 for _ in range(n)) == 2\nassert f(2) == 1")
    assert replay(plan, _ok(2, 1)) is None
    monkeypatch.setattr(grading, "TEST_STEP_BUDGET", 1000)
    verdict, msg = replay(plan, _ok(10**9, 1))
    assert verdict is Verdict.FAILED and "budget" in msg


@pytest.mark.parametrize(
    "value",
    [0, -5, 2**62, -(2**200), 10**5000, 1.5, -0.0, float("inf"), float("-inf"), float("nan"), 1e-300,
     complex(1.5, float("-inf")), "a'\"\n\\", b"\x00\xff", [], (), (1,), {1, 2}, set(), frozenset({3}),
     frozenset(), {"k": [1, (2.5, None)], 3: {True}}, [[[]]]],
    ids=lambda v: type(v).__name__,
)
def test_value_source_round_trips(value):
    from o1code.sandboxes.grading import _same

    back = eval(value_source(value), {"__builtins__": {"complex": complex, "frozenset": frozenset}})  # noqa: S307
    assert _same(back, value)


def test_call_source():
    assert call_source("f", (1, [2]), {"k": "v", "not id": 1, "class": 2}) == "f(1, [2], k='v', **{'not id': 1, 'class': 2})"
