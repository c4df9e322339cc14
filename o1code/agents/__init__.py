"""o1code.agents (see docs/architecture in README)."""
