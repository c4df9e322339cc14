"""TCG settings: `TCGConfig`, the cache's location and its format version."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from o1code.caches import cache_dir
from o1code.rewards.errors import TCGError

#: Bump when the prompt, parsing or cache schema changes: old cache entries are then ignored.
TCG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TCGConfig:
    """How test cases are generated.

    Attributes:
        k: Test cases asked for per completion (the paper uses 3).
        n_samples: Completions sampled per problem; their cases are pooled, then deduplicated.
        temperature, top_p, top_k, max_tokens: Sampling parameters (the paper's fork tests with
            temperature 0.7, top-p 0.9).
        seed: Sampling seed; part of the cache key.
        timeout_s: Sandbox time limit for running the reference on the generated inputs.
        max_case_chars: A kept test's ``call`` plus the repr of its expected value may be at most this
            long (the paper caps a case block at 100 characters; MBPP values are longer).
        max_tests: At most this many tests are kept per problem (first ones win).
        show_example: Show the problem's first visible test (`Problem.visible`) in the prompt as an example.
        use_reference: Show the reference in the Code Part and use it to compute outputs. False
            forces the unverified path even when a reference exists.
        fallback_to_dataset: `tests_for` returns the dataset tests when no generated test is kept
            (otherwise an empty list, which makes every solution's pass fraction 0).
        cache_dir: Where per-problem results are cached (None: ``$O1CODE_CACHE/tcg``, see `o1code.caches`);
            ``""`` disables the cache.
        model_name: The model's identity in the cache key (None: derived from the generator).
    """

    k: int = 3
    n_samples: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int | None = None
    max_tokens: int = 384
    seed: int = 0
    timeout_s: float = 4.0
    max_case_chars: int = 2000
    max_tests: int = 10
    show_example: bool = True
    use_reference: bool = True
    fallback_to_dataset: bool = True
    cache_dir: str | None = None
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_samples < 1 or self.max_tests < 1:
            raise TCGError("k, n_samples and max_tests must be >= 1")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise TCGError("timeout_s must be a positive number")


def default_cache_dir() -> Path:
    """``$O1CODE_CACHE/tcg`` (default ``~/.cache/o1code/tcg``)."""
    return cache_dir("tcg")
