"""Resumable runs built from the parts: evaluation (`o1code eval`, Pass@1 and ASPR) and its statistics and
paired comparison (`o1code compare`), the TCG and PRM stages, the RL stage (`o1code ppo`), o1-Coder's
self-play loop (`o1code selfplay`) and the demo. Each writes one run directory (`o1code.runs`)."""

from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, markdown_table, run_eval, summarise

__all__ = ["EvalConfig", "PipelineError", "markdown_table", "run_eval", "summarise"]
