"""Exceptions of `o1code.envs`."""


class EnvError(RuntimeError):
    """An environment is misconfigured or misused, or its sandbox failed on infrastructure."""
