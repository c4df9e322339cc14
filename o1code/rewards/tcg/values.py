"""Values of generated inputs: the reference solution's calls run in the sandbox (`evaluate_calls`)."""

from __future__ import annotations

from typing import Sequence

from o1code.rewards.errors import TCGError
from o1code.sandboxes import CallResult, Sandbox


def evaluate_calls(
    sandbox: Sandbox, code: str, calls: Sequence[str], setup_code: str = "", timeout_s: float = 4.0
) -> list[CallResult]:
    """Run `code` in the sandbox and return the plain value of each call expression, in order.

    The sandbox's public ``evaluate(code, calls, setup_code, timeout_s)`` does the work (see
    `LocalSandbox.evaluate`): one `CallResult` per call (``ok`` and ``value``, or ``verdict`` and
    ``message``, also readable as ``error``), each that call's own: calls that a dying process took
    down with it are run again one by one. Raises `TCGError` when `sandbox` has no ``evaluate``.
    """
    if not calls:
        return []
    evaluate = getattr(sandbox, "evaluate", None)
    if evaluate is None:
        raise TCGError(f"{type(sandbox).__name__} cannot evaluate calls: the test-case generator needs a "
                       "sandbox with evaluate(code, calls, setup_code, timeout_s), e.g. LocalSandbox")
    return list(evaluate(code, list(calls), setup_code, timeout_s))
