"""Exceptions of `o1code.envs`."""

from o1code.errors import O1CodeError


class EnvError(O1CodeError, RuntimeError):
    """An environment is misconfigured or misused, or its sandbox failed on infrastructure."""
