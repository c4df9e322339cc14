"""Things that act in the O1Code environments: LLM agents, MCTS over reasoning steps, and step-level
PPO/GRPO (`ppo`, its torch-free `ppo_config`, the rollout engines in `rollout`)."""

from o1code.agents.llm import Agent, LLMAgent, LLMConfig, play_lockstep, problem_seed
from o1code.agents.mcts import (
    MCTSAgent,
    MCTSConfig,
    Node,
    SearchResult,
    hard_label,
    trajectory_records,
)

__all__ = [
    "Agent",
    "LLMAgent",
    "LLMConfig",
    "MCTSAgent",
    "MCTSConfig",
    "Node",
    "SearchResult",
    "hard_label",
    "play_lockstep",
    "trajectory_records",
    "problem_seed",
]
