"""The root of every exception o1code raises on purpose, and the errors of its top-level modules.

Each package defines its own errors in its ``errors`` module, all subclasses of `O1CodeError`, so
``except O1CodeError`` catches every expected failure (the CLI turns them into one line on stderr).
Package errors keep their builtin bases too (``DataError`` is still a ``ValueError``).
"""

from __future__ import annotations


class O1CodeError(Exception):
    """Base class of every error raised on purpose by o1code (bad input, unusable setup, refused run)."""


class RunDirError(O1CodeError, ValueError):
    """A run directory cannot be used as asked (`o1code.runs`): it holds a run with other settings,
    or one of its files is corrupt beyond a torn last line."""


class RunDirLockedError(RunDirError):
    """Another process holds the run directory's lock (`o1code.runs.lock_run_dir`): one writer per run
    directory. The message names the holder's pid."""


class ConfigError(O1CodeError, ValueError):
    """A configuration (a ``--config`` TOML file or a dict) does not fit its dataclass: missing or
    invalid file, unknown keys (the message names the valid ones)."""
