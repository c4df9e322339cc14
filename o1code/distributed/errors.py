"""Exceptions of `o1code.distributed`, all subclasses of `o1code.errors.O1CodeError`.

None of these is raised for a misbehaving *solution* (that is a `Verdict`), nor for one dead actor
(it is replaced and its work retried once). They say that Ray is missing, cannot be reached, or
that the cluster keeps losing the same piece of work.
"""

from __future__ import annotations

from o1code.errors import O1CodeError


class DistributedError(O1CodeError):
    """Base class of every exception raised by `o1code.distributed`."""


class MissingRayError(DistributedError, ImportError):
    """Ray is not installed; the message says what to ``pip install`` (the ``distributed`` extra)."""


class RayClusterError(DistributedError, ConnectionError):
    """Ray could not be started or reached at the given address, or has no room for an actor."""


class WorkerLostError(DistributedError):
    """A Ray actor died on the same piece of work twice (the first death is retried on a fresh
    actor); the work is not turned into a verdict, the run stops and resumes later."""
