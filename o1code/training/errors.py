"""Exceptions of `o1code.training`."""

from o1code.errors import O1CodeError


class TrainingError(O1CodeError, ValueError):
    """A training stage cannot run as asked: a setting out of range, no usable training record, or
    a base model that cannot be loaded."""
