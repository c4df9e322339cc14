"""What a sample's reply means: `LocalSandbox`'s reading of the result lines a worker sends back
(one record per call, in order, cut short where the process died) into verdicts.

`grade` turns them into the `ExecutionResult` of `LocalSandbox.run` (each test's values decoded and
checked on the host by `o1code.sandboxes.grading`), `call_results` into the `CallResult` list of
`LocalSandbox.evaluate`; both read the records, the death and an early (code or setup) failure the
same way (`read_sample`). Everything the child sent is untrusted: malformed records count as missing.
"""

from __future__ import annotations

import signal
from typing import Any, Optional

from .errors import ValueDecodeError
from .grading import CallResult, TestPlan, decode_value, evaluate_test, parse_line, replay
from .isolation import SandboxConfig
from .types import ExecutionResult, TestOutcome, Verdict

_SIGNAMES = {int(s): s.name for s in signal.Signals}


def read_sample(config: SandboxConfig, header: dict, res: bytes, timeout_s: float
                ) -> tuple[dict[int, dict], tuple[Verdict, str], Optional[tuple[Verdict, str]]]:
    """Read a sample's result lines: ``(call records by index, death, early)``. ``death`` is why
    results stop where they stop (it applies to every call that has none); ``early`` is the
    failure of the code or setup phase (then no call ran), else None."""
    phases: dict[str, Any] = {}
    calls: dict[int, dict] = {}
    for line in res.split(b"\n"):
        if not line:
            continue
        try:
            rec = parse_line(line)
        except ValueDecodeError:
            continue  # a torn last line (killed mid-write) or garbage: treated as missing
        if type(rec) is not dict:
            continue
        if rec.get("p") in ("code", "setup") and rec["p"] not in phases:
            phases[rec["p"]] = rec.get("e")
        elif type(rec.get("c")) is int and rec["c"] not in calls:
            calls[rec["c"]] = rec

    sig = header.get("signal")
    if header.get("timed_out") or sig == signal.SIGXCPU:
        death = (Verdict.TIMEOUT, f"time limit exceeded ({timeout_s:g} s)")
    elif header.get("over_cap"):
        death = (Verdict.FAILED, f"returned values exceed {config.result_cap_bytes} bytes")
    elif sig is not None:
        death = (Verdict.RUNTIME_ERROR, f"process killed by {_SIGNAMES.get(sig, sig)}")
    elif header.get("exit") is not None or not header.get("done"):
        death = (Verdict.RUNTIME_ERROR,
                 f"process exited (status {header.get('exit')}) before finishing the tests")
    else:  # it said it finished (or the sample said so early) and was stopped there
        death = (Verdict.RUNTIME_ERROR, "process stopped before finishing the tests")

    early: Optional[tuple[Verdict, str]] = None
    for phase in ("code", "setup"):
        if phase not in phases:
            early = death
            break
        if phases[phase] is not None:
            early = _error_verdict(phases[phase], "setup code: " if phase == "setup" else "")
            break
    return calls, death, early


def call_results(config: SandboxConfig, exprs: list[str], header: dict, res: bytes, timeout_s: float
                 ) -> list[CallResult]:
    """One `CallResult` per expression of a sample sent by `LocalSandbox.evaluate` (the same reading
    of records, deaths and early failures as `grade`)."""
    calls, death, early = read_sample(config, header, res, timeout_s)
    out: list[CallResult] = []
    for i, expr in enumerate(exprs):
        rec = calls.get(i)
        label = expr if len(expr) <= 80 else expr[:77] + "..."
        if early is not None:
            out.append(CallResult(False, None, *early))
        elif rec is None:
            out.append(CallResult(False, None, *death))
        elif "e" in rec:
            out.append(CallResult(False, None, *_error_verdict(rec["e"], f"{label}: ")))
        else:
            try:
                out.append(CallResult(True, decode_value(rec.get("v"), config.max_value_depth, config.max_value_items)))
            except ValueDecodeError as exc:
                out.append(CallResult(False, None, Verdict.FAILED, f"{label}: {exc}"))
    return out


def grade(config: SandboxConfig, plans: list[TestPlan], spans: list[range], header: dict, res: bytes,
          out: bytes, err: bytes, timeout_s: float) -> ExecutionResult:
    """The `ExecutionResult` of a sample sent by `LocalSandbox.run`: each plan's calls are the
    records of its `spans` entry; stdout and stderr are capped (the timing and isolation fields
    are the caller's)."""
    calls, death, early = read_sample(config, header, res, timeout_s)

    outcomes: list[TestOutcome] = []
    for plan, span in zip(plans, spans):
        if early is not None:
            outcomes.append(TestOutcome(early[0], early[1]))
            continue
        if plan.multi:
            outcomes.append(_grade_multi(config, plan, span, calls, death))
            continue
        values: list[Any] = []
        bad: Optional[tuple[Verdict, str]] = None
        secs = 0.0
        for i in span:
            rec = calls.get(i)
            if rec is None:
                bad = death
                break
            t = rec.get("t")
            secs += t if type(t) is float and 0 <= t < 1e6 else 0.0
            if "e" in rec:
                bad = _error_verdict(rec["e"], f"{_label(plan, i - span.start)}: ")
                break
            try:
                values.append(decode_value(rec.get("v"), config.max_value_depth, config.max_value_items))
            except ValueDecodeError as exc:
                bad = (Verdict.FAILED, f"{_label(plan, i - span.start)}: {exc}")
                break
        if bad is None:
            ok, msg = evaluate_test(plan, values)
            bad = None if ok else (Verdict.FAILED, msg)
        outcomes.append(TestOutcome(Verdict.PASSED, "", secs) if bad is None
                        else TestOutcome(bad[0], bad[1], secs))

    passed = sum(o.verdict is Verdict.PASSED for o in outcomes)
    first = next((o for o in outcomes if o.verdict is not Verdict.PASSED), None)
    if first is None and early is not None:  # no tests, but the code itself failed
        first = TestOutcome(early[0], early[1])
    verdict = Verdict.PASSED if first is None else first.verdict
    return ExecutionResult(
        verdict, passed, len(plans), tuple(outcomes),
        stdout=_text(out, config.output_cap_bytes), stderr=_text(err, config.output_cap_bytes),
        message="" if first is None else first.message,
    )


def _grade_multi(config: SandboxConfig, plan: TestPlan, span: range, calls: dict[int, dict],
                 death: tuple[Verdict, str]) -> TestOutcome:
    """Replay a multi-statement test on the host with the results of its recorded calls. A
    call's error (or a missing result) counts only if the test uses that call's result."""
    results: list[CallResult] = []
    secs = 0.0
    for i in span:
        rec = calls.get(i)
        if rec is None:
            results.append(CallResult(False, None, *death))
            continue
        t = rec.get("t")
        secs += t if type(t) is float and 0 <= t < 1e6 else 0.0
        if "e" in rec:
            verdict, msg = _error_verdict(rec["e"], "")
            results.append(CallResult(False, None, verdict, msg))
            continue
        try:
            results.append(CallResult(True, decode_value(rec.get("v"), config.max_value_depth,
                                                         config.max_value_items)))
        except ValueDecodeError as exc:
            results.append(CallResult(False, None, Verdict.FAILED, str(exc)))
    bad = replay(plan, results)
    return TestOutcome(Verdict.PASSED, "", secs) if bad is None else TestOutcome(bad[0], bad[1], secs)


def infrastructure_message(last: str) -> str:
    """The message of a `Verdict.SANDBOX_ERROR` (both attempts failed; `last` says why)."""
    return f"sandbox infrastructure failed twice: {last}"[:1000]


def _label(plan: TestPlan, k: int) -> str:
    s = plan.calls[k]
    return s if len(s) <= 80 else s[:77] + "..."


def _error_verdict(e: Any, prefix: str) -> tuple[Verdict, str]:
    """Map an error record [kind, type, message] sent by the (untrusted) child to a verdict."""
    if type(e) is not list or len(e) != 3 or not all(type(x) is str for x in e):
        return Verdict.RUNTIME_ERROR, prefix + "malformed error report"
    kind, tname, msg = e[0], e[1][:100], e[2][:500]
    text = prefix + (f"{tname}: {msg}" if tname else msg)
    if kind == "memory":
        return Verdict.MEMORY, text
    if kind == "unencodable":
        return Verdict.FAILED, text
    return Verdict.RUNTIME_ERROR, text


def _text(data: bytes, cap: int) -> str:
    s = data[:cap].decode("utf-8", "replace")
    return s + "\n[... output truncated]" if len(data) > cap else s
