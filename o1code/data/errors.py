"""Exceptions of `o1code.data`."""


class DataError(ValueError):
    """A data set or problem file cannot be used (missing, unknown split, bad content)."""


class ProblemFormatError(DataError):
    """A record in a problem file is malformed; the message names the file and line."""
