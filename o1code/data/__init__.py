"""Coding problems and their text: the `Problem` record, the bundled MBPP and HumanEval data sets and
user JSONL files (`load_dataset`), the step format, prompts and code extraction (`formats`, `prompts`,
`extract`), and the trajectory records of the search (`o1code.data.trajectories`).

MBPP (Austin et al. 2021, CC BY 4.0) ships inside the package, gzip-compressed and otherwise
unchanged; loaders normalise Windows line ends in the code fields.
"""

from o1code.data.datasets import DATASETS, load_dataset
from o1code.data.errors import DataError, ProblemFormatError
from o1code.data.problems import (
    MBPP_KNOWN_BAD,
    MBPP_SPLITS,
    Problem,
    derive_entry_point,
    get_problem,
    load_mbpp,
    load_problems,
    problems_digest,
)
from o1code.data.trajectories import (
    PairwiseExample,
    PointwiseExample,
    SampleRecord,
    StepRecord,
    TrajectoryRecord,
    pairwise_examples,
    pointwise_examples,
    read_trajectories,
)

__all__ = [
    "DATASETS",
    "MBPP_KNOWN_BAD",
    "MBPP_SPLITS",
    "DataError",
    "PairwiseExample",
    "PointwiseExample",
    "Problem",
    "ProblemFormatError",
    "SampleRecord",
    "StepRecord",
    "TrajectoryRecord",
    "derive_entry_point",
    "get_problem",
    "load_dataset",
    "load_mbpp",
    "load_problems",
    "problems_digest",
    "pairwise_examples",
    "pointwise_examples",
    "read_trajectories",
]
