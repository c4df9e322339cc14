"""o1code.sandboxes (see docs/architecture in README)."""
