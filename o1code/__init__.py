"""o1code: reinforcement learning on code generation (the o1-Coder recipe)."""

__version__ = "0.1.0"
