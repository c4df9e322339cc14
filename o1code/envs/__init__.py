"""Gymnasium environments over coding problems (`CodeEnv`: reasoning steps rewarded by executed tests),
their typed records, and wrappers.

`import o1code` registers the ids below; ``gym.make("o1code:O1Code-MBPP-v0")`` works without it.

| id                       | mode         | episode                                                      |
| ------------------------ | ------------ | ------------------------------------------------------------ |
| ``O1Code-MBPP-v0``       | pseudocode   | Action 1 (structure) -> Action 2 (refine, repeatable) -> Action 3 (code) |
| ``O1Code-MBPP-Vanilla-v0`` | vanilla    | step-level chain of thought, the last step holds the code    |
| ``O1Code-MBPP-Direct-v0``  | direct     | one action: the code                                         |
"""

from o1code.envs.code_env import ACTION_CHARSET, CodeEnv
from o1code.envs.errors import EnvError
from o1code.envs.records import EnvState, EvalDict, EvalInfo, Observation, StepInfo
from o1code.envs.wrappers import CandidateSelection, Proposer, hashed_ngrams
from o1code.registration import ENV_IDS, register_envs
from o1code.rewards.process import ProcessReward  # the type of CodeEnv(process_reward=...)

__all__ = [
    "ACTION_CHARSET",
    "ENV_IDS",
    "CandidateSelection",
    "CodeEnv",
    "EnvError",
    "EnvState",
    "EvalDict",
    "EvalInfo",
    "Observation",
    "ProcessReward",
    "Proposer",
    "StepInfo",
    "hashed_ngrams",
    "register_envs",
]
