"""Turning execution into reward: outcome rewards, test sources, and the paper's phi aggregation."""

from o1code.rewards.errors import RewardError
from o1code.rewards.outcome import DatasetTests, OutcomeReward, TestSource, alpha_schedule, phi

__all__ = ["DatasetTests", "OutcomeReward", "RewardError", "TestSource", "alpha_schedule", "phi"]
