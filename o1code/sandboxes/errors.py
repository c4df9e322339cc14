"""Exceptions of `o1code.sandboxes`, all in one place.

None of these is raised for a misbehaving *solution*: that always becomes a `Verdict`. They signal
caller mistakes (`InvalidTestError`) or an infrastructure that cannot start at all
(`SandboxUnavailableError`). Worker failures during a run become `Verdict.SANDBOX_ERROR`.
"""

from __future__ import annotations

from o1code.errors import O1CodeError


class SandboxError(O1CodeError):
    """Base class of every exception raised by `o1code.sandboxes`."""


class InvalidTestError(SandboxError, ValueError):
    """A test does not parse, or cannot be split into sandbox calls and a host-side check (e.g. a
    single assert whose solution call uses a comprehension variable of the test, or a test of
    several statements whose solution calls take non-plain arguments or other calls' results)."""


class SandboxUnavailableError(SandboxError):
    """No worker could be started with the isolation the configuration requires."""


class WorkerError(SandboxError):
    """A worker died, hung or sent a malformed reply (internal: becomes `sandbox_error`)."""


class ValueDecodeError(SandboxError):
    """A value sent back by the sandbox is not plain data within the caps (internal: the test is
    graded `failed`)."""
