"""Adapters that put o1code's tasks and rewards into other projects' trainers: `o1code.integrations.trl`
(O1Code problems as a TRL dataset, sandboxed rewards in TRL's reward-function signature).

Layering: integrations sit beside training (they import data, sandboxes, rewards and envs, never agents,
pipeline or cli). Each module imports its foreign library (TRL, datasets) only when used.
"""

from o1code.integrations.errors import IntegrationError

__all__ = ["IntegrationError"]
