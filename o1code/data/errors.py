"""Exceptions of `o1code.data`."""

from o1code.errors import O1CodeError


class DataError(O1CodeError, ValueError):
    """A data set or problem file cannot be used (missing, unknown split, bad content)."""


class ProblemFormatError(DataError):
    """A record in a problem file is malformed; the message names the file and line."""
