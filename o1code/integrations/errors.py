"""Exceptions of `o1code.integrations`."""

from o1code.errors import O1CodeError


class IntegrationError(O1CodeError, RuntimeError):
    """A foreign trainer handed o1code's rewards something they cannot grade (an unknown task id, a
    completion of another shape, a batch with columns missing), or the sandbox failed on infrastructure."""
