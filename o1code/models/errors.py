"""All exceptions raised by :mod:`o1code.models`."""

from __future__ import annotations

from o1code.errors import O1CodeError


class ModelError(O1CodeError):
    """Base class of every error raised by o1code.models."""


class InvalidSpecError(ModelError, ValueError):
    """A model spec string (``load_generator(spec)``) could not be parsed."""


class InvalidParamsError(ModelError, ValueError):
    """SamplingParams (or a generator option) has an invalid value."""


class MissingExtraError(ModelError, ImportError):
    """An optional dependency is not installed; the message says what to ``pip install``."""


class ModelFileError(ModelError, FileNotFoundError):
    """A model file, directory or chunk is missing."""


class ChecksumError(ModelError):
    """Assembled model bytes do not match the expected sha256; the file is refused."""


class ServerError(ModelError, ConnectionError):
    """An OpenAI-compatible server is unreachable, timed out or answered with an error."""


class ExportError(ModelError, ValueError):
    """Weights cannot be written into a GGUF file (an architecture, tensor name or shape the export does not map)."""
