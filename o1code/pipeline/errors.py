"""Exceptions of `o1code.pipeline`."""


class PipelineError(ValueError):
    """A run is misconfigured (unknown agent or key, conflicting run directory, ...)."""
