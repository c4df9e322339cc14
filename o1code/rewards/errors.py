"""Exceptions of `o1code.rewards`."""

from o1code.errors import O1CodeError


class RewardError(O1CodeError, ValueError):
    """A reward is misconfigured (unknown form, out-of-range weight)."""


class TCGError(RewardError):
    """The test-case generator was misused or misconfigured (bad config, a problem without an entry
    point, an unreadable cache entry). Malformed model output is never an error: it is counted."""
