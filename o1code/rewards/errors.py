"""Exceptions of `o1code.rewards`."""


class RewardError(ValueError):
    """A reward is misconfigured (unknown form, out-of-range weight)."""


class TCGError(RewardError):
    """The test-case generator was misused or misconfigured (bad config, a problem without an entry
    point, an unreadable cache entry). Malformed model output is never an error: it is counted."""
