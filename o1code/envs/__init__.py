"""o1code.envs (see docs/architecture in README)."""
