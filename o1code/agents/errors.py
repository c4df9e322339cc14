"""Exceptions of `o1code.agents`."""

from o1code.errors import O1CodeError


class AgentError(O1CodeError, ValueError):
    """An agent is misconfigured (e.g. an unknown algorithm, a batch that cannot be formed)."""
