"""o1code.rewards (see docs/architecture in README)."""
