"""A multi-statement data-set test may import the pure, deterministic standard modules test writers use
(hashlib, json, bisect, statistics, datetime ...); modules with I/O or process access stay refused, and a
solution function named like an importable module stays the solution's unless the test imports it."""

import hashlib

import pytest

from o1code.sandboxes import InvalidTestError, LocalSandbox, Verdict, parse_test
from o1code.sandboxes.grading import TEST_IMPORTABLE, CallResult, replay

DIGEST = hashlib.sha256(repr([1, 2, 3]).encode()).hexdigest()


@pytest.mark.parametrize("test", [
    f"import hashlib\nassert hashlib.sha256(repr(f(3)).encode()).hexdigest() == {DIGEST!r}",
    "import json\nassert json.loads(json.dumps(f(3))) == [1, 2, 3]",
    "from bisect import bisect_left\nassert bisect_left(f(3), 2) == 1",
    "import statistics as st\nassert st.mean(f(3)) == 2",
    "import datetime\nassert datetime.date(2024, 1, f(3)[0]).isoformat() == '2024-01-01'",
])
def test_a_test_importing_a_pure_module_is_recorded_and_replayed(test):
    plan = parse_test(test)
    assert plan.multi and plan.calls == ("f(3)",)
    assert replay(plan, [CallResult(True, [1, 2, 3])]) is None
    assert replay(plan, [CallResult(True, [2, 3, 4])])[0] is Verdict.FAILED


@pytest.mark.parametrize("module", ["os", "sys", "subprocess", "io", "pathlib", "pickle", "time", "importlib",
                                    "socket", "shutil", "ctypes", "builtins"])
def test_modules_with_io_or_process_access_stay_refused(module):
    assert module not in TEST_IMPORTABLE
    with pytest.raises(InvalidTestError, match="may import only"):
        parse_test(f"import {module}\nassert f(1) == 1")


def test_an_importable_name_is_the_solutions_unless_the_test_imports_it():
    assert parse_test("x = [1, 2]\nassert bisect(x, 2) == 1").calls == ("bisect([1, 2], 2)",)
    assert parse_test("import bisect\nassert bisect.bisect([1, 2], f(2)) == 2").calls == ("f(2)",)


def test_a_data_set_test_with_a_digest_passes_end_to_end_in_the_sandbox():
    test = f"import hashlib\nresult = f(3)\nassert hashlib.sha256(repr(result).encode()).hexdigest() == {DIGEST!r}"
    with LocalSandbox(workers=1) as sb:
        good = sb.run("def f(n):\n    return list(range(1, n + 1))", [test])
        bad = sb.run("def f(n):\n    return list(range(n))", [test])
    assert good.verdict is Verdict.PASSED, good
    assert bad.verdict is Verdict.FAILED
