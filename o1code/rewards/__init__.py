"""Turning execution into reward: outcome rewards, test sources, and the paper's phi aggregation."""

from o1code.rewards.errors import RewardError, TCGError
from o1code.rewards.outcome import DatasetTests, OutcomeReward, TestSource, alpha_schedule, phi
from o1code.rewards.tcg import TCGConfig, TCGCounts, TCGResult, TestCaseGenerator

__all__ = [
    "DatasetTests", "OutcomeReward", "RewardError", "TCGConfig", "TCGCounts", "TCGError", "TCGResult",
    "TestCaseGenerator", "TestSource", "alpha_schedule", "phi",
]
