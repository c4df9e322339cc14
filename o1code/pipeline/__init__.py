"""Runs built from the parts: evaluation (Pass@1, ASPR) and, later, the self-play loop."""

from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, markdown_table, run_eval, summarise

__all__ = ["EvalConfig", "PipelineError", "markdown_table", "run_eval", "summarise"]
