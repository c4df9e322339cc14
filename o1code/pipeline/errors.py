"""Exceptions of `o1code.pipeline`."""

from o1code.errors import O1CodeError


class PipelineError(O1CodeError, ValueError):
    """A run is misconfigured (unknown agent or key, conflicting run directory, ...)."""


class ComparisonError(PipelineError):
    """Two runs cannot be compared: not run directories, judged on different tests (the message names
    the field), or no problem in common."""
