"""Exceptions of `o1code.rewards`."""


class RewardError(ValueError):
    """A reward is misconfigured (unknown form, out-of-range weight)."""
