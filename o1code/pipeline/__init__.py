"""o1code.pipeline (see docs/architecture in README)."""
