"""Things that act in the O1Code environments: LLM agents and MCTS over reasoning steps."""

from o1code.agents.llm import Agent, LLMAgent, LLMConfig, problem_seed
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
    "trajectory_records",
    "problem_seed",
]
