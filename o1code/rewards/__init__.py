"""Turning execution into reward: outcome rewards and test sources with the paper's phi aggregation
(`outcome`), process rewards over steps (`process`), the Test Case Generator (`tcg`) and AST mutants
that measure how well tests discriminate (`mutants`)."""

from o1code.rewards.errors import RewardError, TCGError
from o1code.rewards.outcome import (
    ORACLE_TEST_SOURCES,
    DatasetTests,
    OutcomeReward,
    PhiConfig,
    TestSource,
    VisibleTests,
    alpha_schedule,
    is_oracle,
    phi,
)
from o1code.rewards.process import (
    PrefixValueFn,
    ProcessReward,
    ProcessRewardBase,
    QuestionScorer,
    StepRewardFn,
    as_process_reward,
    default_question,
    prefix_values,
    step_rewards,
)
from o1code.rewards.tcg import TCGConfig, TCGCounts, TCGResult, TestCaseGenerator

__all__ = [
    "ORACLE_TEST_SOURCES", "DatasetTests", "OutcomeReward", "RewardError", "TCGConfig", "TCGCounts",
    "TCGError", "TCGResult", "TestCaseGenerator", "TestSource", "VisibleTests", "alpha_schedule",
    "is_oracle", "phi",
]
__all__ += [  # process rewards and their aggregation
    "PhiConfig", "PrefixValueFn", "ProcessReward", "ProcessRewardBase", "QuestionScorer", "StepRewardFn",
    "as_process_reward", "default_question", "prefix_values", "step_rewards",
]
