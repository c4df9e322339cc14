"""o1code.models (see docs/architecture in README)."""
