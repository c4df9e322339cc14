"""Self-play: o1-Coder's Algorithm 1 as one resumable run directory (the loop and its stage order in
`loop`, the settings and plan in `config`, each stage in `stages`, manifests and clocks in `manifest`,
report and status in `report`)."""

from o1code.pipeline.selfplay.config import EVAL_AGENTS, OWNED, TABLES, UNPINNED, SelfPlayConfig, Stage, find_stage, plan
from o1code.pipeline.selfplay.loop import SelfPlayResult, _return_freed_memory, redo_from, run_selfplay
from o1code.pipeline.selfplay.manifest import StageClock, read_manifest
from o1code.pipeline.selfplay.report import iteration_rows, report_markdown, status, write_report
from o1code.pipeline.selfplay.stages import GeneratorHook, _Context, _run_stage
from o1code.runs import digest

__all__ = ["EVAL_AGENTS", "GeneratorHook", "OWNED", "SelfPlayConfig", "SelfPlayResult", "Stage", "StageClock", "TABLES",
           "UNPINNED", "digest", "find_stage", "iteration_rows", "plan", "read_manifest", "redo_from",
           "report_markdown", "run_selfplay", "status", "write_report"]
