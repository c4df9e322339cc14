"""Exceptions of `o1code.pipeline`."""

from o1code.errors import O1CodeError


class PipelineError(O1CodeError, ValueError):
    """A run is misconfigured (unknown agent or key, conflicting run directory, ...)."""
