"""The Test Case Generator's stages (o1-Coder section 2): training, then evaluation.

- Training (``o1code tcg train``): SFT then DPO with the paper's shuffled-output negatives; it lives in
  `o1code.training.tcg` (`train_tcg`, `TCGTrainConfig`; records: `build_tcg_examples`) and is
  re-exported here.
- Evaluation (``o1code tcg eval``): `o1code.pipeline.tcg.evaluate` (`run_tcg_eval`, one resumable
  ``results.jsonl`` row per problem) and its figures, `o1code.pipeline.tcg.report` (`summarise_tcg`,
  `tcg_markdown`, `plot_tcg`).
- Their command, ``o1code tcg``, is `o1code.cli.tcg`.
"""

from o1code.pipeline.tcg.evaluate import (
    TCGEvalConfig,
    evaluate_problem,
    run_tcg_eval,
    sample_prompt,
    sample_wrong_solutions,
)
from o1code.pipeline.tcg.report import WRONG_KINDS, plot_tcg, summarise_tcg, tcg_markdown
from o1code.training.tcg import TCGTrainConfig, TCGTrainResult, train_tcg
from o1code.training.tcg_data import build_tcg_examples

__all__ = [
    "TCGEvalConfig", "TCGTrainConfig", "TCGTrainResult", "WRONG_KINDS", "build_tcg_examples",
    "evaluate_problem", "plot_tcg", "run_tcg_eval", "sample_prompt", "sample_wrong_solutions", "summarise_tcg",
    "tcg_markdown", "train_tcg",
]
