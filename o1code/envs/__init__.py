"""Gymnasium environments over coding problems, and wrappers.

`import o1code` registers the ids below; ``gym.make("o1code:O1Code-MBPP-v0")`` works without it.

| id                       | mode         | episode                                                      |
| ------------------------ | ------------ | ------------------------------------------------------------ |
| ``O1Code-MBPP-v0``       | pseudocode   | Action 1 (structure) -> Action 2 (refine, repeatable) -> Action 3 (code) |
| ``O1Code-MBPP-Vanilla-v0`` | vanilla    | step-level chain of thought, the last step holds the code    |
| ``O1Code-MBPP-Direct-v0``  | direct     | one action: the code                                         |
"""

from o1code.envs.code_env import ACTION_CHARSET, CodeEnv, EnvState, ProcessReward
from o1code.envs.errors import EnvError
from o1code.envs.wrappers import CandidateSelection, Proposer, hashed_ngrams
from o1code.registration import ENV_IDS, register_envs

__all__ = [
    "ACTION_CHARSET",
    "ENV_IDS",
    "CandidateSelection",
    "CodeEnv",
    "EnvError",
    "EnvState",
    "ProcessReward",
    "Proposer",
    "hashed_ngrams",
    "register_envs",
]
