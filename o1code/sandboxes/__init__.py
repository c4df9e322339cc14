"""o1code.sandboxes: run untrusted code against tests in isolated workers (bubblewrap, rlimits, seccomp),
grade on the host; `LocalSandbox` and its settings, the verdicts, the `Sandbox` protocol.

```python
from o1code.sandboxes import LocalSandbox
with LocalSandbox(workers=2) as sb:
    r = sb.run("def add(a, b): return a + b", ["assert add(2, 3) == 5"])
    r.verdict  # Verdict.PASSED
    sb.evaluate("def add(a, b): return a + b", ["add(2, 3)"])  # [CallResult(ok=True, value=5, ...)]
```
"""

from .errors import InvalidTestError, SandboxError, SandboxUnavailableError
from .grading import CallResult, TestPlan, decode_value, evaluate_test, parse_test, top_level_names
from .local import IsolationLevel, LocalSandbox, SandboxConfig
from .types import ExecutionResult, Job, Sandbox, SandboxHandle, Test, TestCase, TestOutcome, Verdict

__all__ = [
    "CallResult", "ExecutionResult", "InvalidTestError", "IsolationLevel", "Job", "LocalSandbox", "Sandbox",
    "SandboxConfig", "SandboxError", "SandboxHandle", "SandboxUnavailableError", "Test", "TestCase", "TestOutcome",
    "TestPlan", "Verdict", "decode_value", "evaluate_test", "parse_test", "top_level_names",
]
