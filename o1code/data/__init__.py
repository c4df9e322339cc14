"""Coding problems: the `Problem` record, the bundled MBPP data set and user JSONL files.

MBPP (Austin et al. 2021, CC BY 4.0) ships inside the package, gzip-compressed and otherwise
unchanged; loaders normalise Windows line ends in the code fields.
"""

from o1code.data.errors import DataError, ProblemFormatError
from o1code.data.problems import (
    DATASETS,
    MBPP_KNOWN_BAD,
    MBPP_SPLITS,
    Problem,
    derive_entry_point,
    get_problem,
    load_dataset,
    load_mbpp,
    load_problems,
)

__all__ = [
    "DATASETS",
    "MBPP_KNOWN_BAD",
    "MBPP_SPLITS",
    "DataError",
    "Problem",
    "ProblemFormatError",
    "derive_entry_point",
    "get_problem",
    "load_dataset",
    "load_mbpp",
    "load_problems",
]
