"""Self-play: o1-Coder's Algorithm 1 end to end, as one resumable run directory.

The stages, in order (``I`` is the iteration)::

    iter-0/tcg        train the test-case generator on train problems (or load one), and its figures
                      on the held-out slice; only with ``tcg`` set (its tests reward RL when tests="tcg")
    iter-0/baseline   held-out Pass@1 of the starting policy (greedy and MCTS: ``eval_agents``)
    iter-0/collect    MCTS on train problems, rewarded and labelled by their dataset tests -> trajectories
                      and PRM rows (train problems only: evaluation is on another split)
    iter-0/sft        policy SFT on the correct paths found so far
    iter-0/eval       held-out Pass@1 of the SFT policy
    iter-I/prm        PRM (re)trained on the rows of every collection so far   } I = 1 .. iterations
    iter-I/rl         PPO/GRPO from the last policy, rewarded by the reward tests } (the paper's
                      (visible or TCG) at the end and the PRM after each step     }  [PRM -> RL ->
    iter-I/eval       held-out Pass@1 of the new policy (MCTS guided by the PRM)  }  new data] loop)
    iter-I/collect    new MCTS data with the new policy and the PRM's values      }

Trained policies play (evaluation, new data) on the backend of the starting model: when it is a GGUF on
llama.cpp (``default``), the SFT and RL stages also export their policy into ``policy.gguf`` beside it
(`o1code.models.gguf_export`: the trained tensors as Q8_0, the rest copied from the base), so that
baseline and trained policies are measured alike and decode faster (greedy: 2.6x) than on transformers.

Each stage writes into ``RUN/iter-I/STAGE/``: its own outputs (every inner stage is itself resumable:
an eval or collection resumes after its last problem, training from its last checkpoint), then
``manifest.json`` (the stage's config, its inputs' and outputs' sha256, seconds summed over every
attempt, figures), then the done-marker ``stage.done`` (holding the manifest's sha256), last. A
rerun of the same command skips every stage whose marker, manifest and outputs verify, and goes on
with the first one that does not; ``from_stage`` deletes a stage and everything after it so they are
done again. The run's settings are pinned in ``RUN/config.json``: a changed setting is refused by
name (``iterations`` may grow).

After every stage the report is rewritten from the manifests: ``RUN/report.md`` (Pass@1 per iteration
for each agent, the PRM's held-out AUC, RL's train reward vs the hidden-test pass rate of the same
episodes, the TCG figures, wall time per stage), ``RUN/report.png`` and one TensorBoard run in
``RUN/tb`` (per-iteration scalars; each stage keeps its own logs as well).

With ``ray`` the decoding stages run on Ray workers (evaluations and collections as ``o1code eval --ray``,
RL's rollouts on ``rollout_workers`` llama.cpp workers) while this process trains and stays the only
writer of the run directory; what learns from a search's files reads them in problem order, so a run
gives the same data on Ray as locally, and resumes either way.

Honesty: every held-out figure is measured on ``eval_split`` (never train) with the judging tests
hidden (search and selection see only the visible tests); the dataset tests label only train problems.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from o1code.distributed import connected
from o1code.errors import RunDirError
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.selfplay.config import UNPINNED, SelfPlayConfig, find_stage, plan
from o1code.pipeline.selfplay.manifest import StageClock, _clock, _finish, read_manifest
from o1code.pipeline.selfplay.report import _figure_line, write_report
from o1code.pipeline.selfplay.stages import GeneratorHook, _Context, _run_stage
from o1code.runs import pin_config

log = logging.getLogger(__name__)


@dataclass
class SelfPlayResult:
    """What `run_selfplay` finished: the manifests by stage key (``I/NAME``), and the report's path."""

    manifests: dict[str, dict[str, Any]]
    report: Path


def redo_from(config: SelfPlayConfig, text: str) -> list[str]:
    """Delete stage `text` (``I/NAME`` or ``NAME``) and every stage after it; returns their keys."""
    run = Path(config.run_dir)
    stages = plan(config)
    start = find_stage(stages, text)
    removed = []
    for s in stages[start:]:
        if s.dir(run).exists():
            shutil.rmtree(s.dir(run))
            removed.append(s.key)
    for d in run.glob("iter-*"):  # iterations past the plan (a run that had more)
        if d.is_dir() and int(d.name.split("-")[1]) > config.iterations:
            shutil.rmtree(d)
    log.info("selfplay: redoing from %s (removed %s)", stages[start].key, ", ".join(removed) or "nothing")
    return removed


def run_selfplay(config: SelfPlayConfig, *, progress: bool = True, from_stage: str | None = None,
                 generators: GeneratorHook | None = None) -> SelfPlayResult:
    """Run (or resume) the self-play of `config`; returns every stage's manifest and the report's path.

    Finished stages are verified and skipped; the first unfinished one resumes from its own last
    commit point. `from_stage` (``I/NAME``) redoes that stage and all after it. `generators` may
    replace the model a stage samples from (tests script the search's policy with it). Raises
    `PipelineError` for bad settings, a run directory holding other settings, or a finished stage
    whose outputs changed."""
    run = Path(config.run_dir)
    pinned = asdict(config)
    try:
        pin_config(run, pinned, ignore=UNPINNED)
    except RunDirError as exc:  # name the field, one line
        raise PipelineError(str(exc)) from None
    if from_stage:
        redo_from(config, from_stage)
    stages = plan(config)
    ctx = _Context(config, run, {}, generators, progress)
    with connected(config.ray) if config.ray else contextlib.nullcontext():  # one Ray connection for every stage
        return _run_stages(run, stages, ctx)


def _run_stages(run: Path, stages: list, ctx: _Context) -> SelfPlayResult:
    config = ctx.config
    t0 = time.perf_counter()
    ran: list[float] = []
    for n, stage in enumerate(stages, 1):
        manifest = read_manifest(run, stage)
        if manifest is not None:
            ctx.manifests[stage.key] = manifest
            continue
        left = len(stages) - n + 1
        eta = f", about {_clock(sum(ran) / len(ran) * left)} left at this pace" if ran else ""
        log.info("selfplay: stage %d/%d %s starts (%s so far%s)", n, len(stages), stage.key,
                 _clock(time.perf_counter() - t0), eta)
        with StageClock(stage.dir(run)) as clock:  # wall time over every attempt at this stage
            cfg, inputs, outputs, figures = _run_stage(ctx, stage)
        seconds = clock.seconds()
        ran.append(seconds)
        ctx.manifests[stage.key] = _finish(run, stage, cfg, inputs, outputs, figures, seconds)
        _return_freed_memory()
        log.info("selfplay: stage %d/%d %s done in %s: %s", n, len(stages), stage.key, _clock(seconds),
                 _figure_line(figures))
        write_report(run, config, ctx.manifests)
    report = write_report(run, config, ctx.manifests)
    log.info("selfplay: all %d stages done; report in %s", len(stages), report)
    return SelfPlayResult(ctx.manifests, report)


def _return_freed_memory() -> None:
    """Hand the heap a finished stage freed back to the OS. glibc keeps freed pages mapped: after the real
    run's RL stage its process stayed at 12.5 GB resident through stages that need ~3 GB, and the next
    training stage would have started from there (peak 20.5 GB on a 24 GB machine). A no-op without glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
