"""The problems of an evaluation run over Ray worker actors (``o1code eval --ray local|auto|ADDRESS``).

What runs where:

- **Driver** (the process running ``o1code eval``): selects the problems, resumes the run directory,
  hands each unfinished problem to a free worker actor, and is the *only writer* of the run
  directory: as each result arrives it appends the problem's trajectories (MCTS), then its result
  line (the commit point), exactly as the local loop does. So resume and "nothing lost or
  duplicated" hold as locally, and a run may be resumed locally or on Ray (``ray`` is not pinned).
- **Worker actors** (one per `num_cpus` free CPUs of the cluster, by default): each opens a `LocalSandbox`
  on its node (first: a node that cannot confine code refuses before a model loads), loads its
  generator once (``config.model``, or a copy of the generator object the caller passed), builds
  the env and the agent once through the pipeline's own `run_eval` (its ``serve`` hook), then plays
  the problems it is sent and returns each result row with its trajectory records.

Results do not depend on which worker plays a problem, nor in which order: every random choice is
seeded from (seed, task_id). Lines of ``results.jsonl`` are in arrival order.

Faults: a worker that dies mid-problem (its process or node) is replaced by a fresh actor and the
problem is played again on it, once; a problem that loses its worker twice stops the run with
`WorkerLostError` (what was committed stays; the run resumes). An exception raised by the play
itself (a model error, the sandbox failing twice) stops the run as it does locally.

Worker resources default to 1 CPU and no GPU each; ``$O1CODE_RAY_WORKERS``, ``$O1CODE_RAY_CPUS`` and
``$O1CODE_RAY_GPUS`` (per worker, read by the driver) override them for the CLI; the Python API takes
`workers`, `num_cpus` and `num_gpus`. A worker's llama.cpp uses as many threads as the CPUs it reserved
(``$O1CODE_LLAMA_THREADS``, when set, wins).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from o1code.runs import ResultLog, read_jsonl
from o1code.sandboxes import LocalSandbox, SandboxConfig, SandboxUnavailableError

from ._ray import actor_lost_errors, free_cpus, connect, import_ray, unwrap
from .errors import DistributedError, RayClusterError, WorkerLostError

log = logging.getLogger(__name__)


_TMP_PREFIX = "o1code-ray-eval-"


def _remove_stale_dirs() -> None:
    """Remove the temp dirs of workers of this node that were killed (their process is gone): a
    killed actor cannot clean up after itself."""
    if not os.path.isdir("/proc/self"):  # no way to tell a live worker from a dead one here
        return
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name[len(_TMP_PREFIX):].split("-", 1)[0] if name.startswith(_TMP_PREFIX) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


class _EvalWorker:
    """The remote side: one sandbox, one generator, one env and agent; plays problems one at a time."""

    def __init__(self, build: Callable, config: Any, generator: Any, sandbox_config: SandboxConfig,
                 threads: int = 1) -> None:
        self.build = build
        self.config = config
        self.generator = generator
        self.sandbox_config = sandbox_config
        self.threads = threads
        self.sandbox: Optional[LocalSandbox] = None
        self.solve: Optional[Callable] = None
        self.tmp: Optional[str] = None

    def start(self) -> dict[str, Any]:
        if self.solve is None:
            # llama.cpp would start a thread per core of the node, and workers that share the cores then
            # wait on each other at every layer (two such workers on 2 cores: several times slower than
            # one): each uses the CPUs it reserved, unless the user set the count.
            os.environ.setdefault("O1CODE_LLAMA_THREADS", str(self.threads))
            _remove_stale_dirs()
            self.tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
            # The sandbox first: a node that cannot confine code refuses before a model loads.
            self.sandbox = LocalSandbox(workers=1, config=self.sandbox_config)
            cfg = dataclasses.replace(self.config, ray=None, run_dir=os.path.join(self.tmp, "run"))
            self.solve = self.build(cfg, generator=self.generator, progress=False, sandbox=self.sandbox,
                                    serve=lambda solve: solve)
        assert self.sandbox is not None
        return {"host": socket.gethostname(), "pid": os.getpid(), "isolation": self.sandbox.isolation_summary}

    def play(self, problem: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        assert self.solve is not None and self.tmp is not None
        trajectories = Path(self.tmp) / "trajectories.jsonl"
        trajectories.unlink(missing_ok=True)
        row = self.solve(problem, trajectories)
        records = read_jsonl(trajectories) if trajectories.exists() else []
        trajectories.unlink(missing_ok=True)
        return row, records

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _env_number(name: str, cast: Callable[[str], Any]) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return cast(text)
    except ValueError:
        raise DistributedError(f"${name}={text!r} is not a number") from None


def evaluate_on_ray(
    config: Any,
    todo: Sequence[Any],
    build: Callable,
    run_dir: Path,
    *,
    total: Optional[int] = None,
    generator: Any = None,
    sandbox: Any = None,
    progress: bool = True,
    on_problem: Optional[Callable[[dict], None]] = None,
    workers: Optional[int] = None,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    commit: Optional[Callable[[dict[str, Any]], None]] = None,
) -> list[dict[str, Any]]:
    """Play the problems `todo` of evaluation `config` on Ray worker actors; append each result to
    `run_dir` as it arrives (this process is the only writer); return the new result rows.

    `commit`: for a stage that is not an evaluation (``prm shepherd``), what to do with each arriving
    row instead of writing ``results.jsonl`` and ``trajectories.jsonl`` (its own commit point); the
    stage's `build` has the signature of `run_eval`'s and its config a ``ray`` field.

    `build` is the pipeline's `run_eval` (each worker calls it once with ``serve=`` to build its env
    and agent). Ray is joined at ``config.ray`` (``local``, ``auto`` or an address) unless this
    process is connected already; Ray started here is shut down at the end. `generator`, when given,
    is copied to every worker (it must pickle); None: each worker loads ``config.model`` once.
    `sandbox`: only its ``config`` (`SandboxConfig`) is used, for every worker's `LocalSandbox`.
    `workers`: how many actors (default: the cluster's free CPUs / `num_cpus`, at most one per problem);
    `num_cpus`, `num_gpus`: what each actor reserves (defaults 1 and 0).

    Raises `MissingRayError`, `RayClusterError` (Ray unreachable, actors not placed),
    `SandboxUnavailableError` (a node cannot confine code), `WorkerLostError`, and whatever a
    problem's play raises (as the local loop does).
    """
    if not todo:
        return []
    ray = import_ray()
    lost = actor_lost_errors()
    workers = workers or _env_number("O1CODE_RAY_WORKERS", int)
    num_cpus = num_cpus if num_cpus is not None else (_env_number("O1CODE_RAY_CPUS", float) or 1.0)
    num_gpus = num_gpus if num_gpus is not None else (_env_number("O1CODE_RAY_GPUS", float) or 0.0)
    sandbox_config = getattr(sandbox, "config", None)
    sandbox_config = sandbox_config if isinstance(sandbox_config, SandboxConfig) else SandboxConfig()
    # The opt-out from confinement ($O1CODE_SANDBOX=unsafe) is the driver's decision, not a node's.
    sandbox_config = dataclasses.replace(sandbox_config, isolation=sandbox_config.resolved_isolation().value)

    owns = connect(config.ray)
    actors: dict[int, Any] = {}
    results = None
    try:
        n = workers or max(1, int(free_cpus() // num_cpus))
        n = max(1, min(n, len(todo)))
        if generator is not None:
            try:
                generator = ray.put(generator)
            except Exception as e:
                raise DistributedError(
                    f"the generator object given ({type(generator).__name__}) cannot be sent to Ray workers: "
                    f"{type(e).__name__}: {e}; give none, and each worker loads --model itself") from None
        remote = ray.remote(_EvalWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=1)

        def start(indices: Sequence[int]) -> None:
            for i in indices:
                actors[i] = remote.remote(build, config, generator, sandbox_config, max(1, int(num_cpus)))
            refs = [actors[i].start.remote() for i in indices]
            waited = 0
            try:
                while True:  # placing an actor may wait for room; loading a model may take long: say so
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=60)
                    if len(ready) == len(refs):
                        break
                    waited += 60
                    log.warning("%d of %d Ray eval workers not started after %d s (each needs %g CPU, %g GPU; "
                                "free now: %s); still waiting", len(refs) - len(ready), len(refs), waited,
                                num_cpus, num_gpus, ray.available_resources())
                hello = ray.get(refs)
            except ray.exceptions.RayTaskError as e:
                cause = unwrap(e)
                if isinstance(cause, SandboxUnavailableError):
                    raise SandboxUnavailableError(f"on a Ray worker: {cause}") from None
                raise cause from None
            except lost as e:
                raise RayClusterError(f"an evaluation worker died while starting: {type(e).__name__}: {e}"[:800]) from None
            for i, h in zip(indices, hello):
                log.info("eval worker %d on %s (pid %s), sandbox %s", i, h["host"], h["pid"], h["isolation"])

        log.info("playing %d problems on %d Ray workers (%g CPU, %g GPU each)", len(todo), n, num_cpus, num_gpus)
        start(range(n))
        rows: list[dict[str, Any]] = []  # the new ones
        if commit is None:
            results = ResultLog(run_dir, rows, total=total or len(todo), todo=len(todo),
                                desc=f"{config.agent}/{config.mode} (ray x{n})", progress=progress,
                                on_problem=on_problem)
        pending = collections.deque(todo)
        inflight: dict[Any, tuple[int, Any]] = {}
        deaths: collections.Counter = collections.Counter()

        def submit(i: int) -> None:
            if pending:
                p = pending.popleft()
                inflight[actors[i].play.remote(p)] = (i, p)

        for i in range(n):
            submit(i)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            i, p = inflight.pop(ref)
            try:
                row, records = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise unwrap(e) from None  # what the play raised: the run stops, as locally
            except lost as e:
                deaths[p.task_id] += 1
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                if deaths[p.task_id] > 1:
                    raise WorkerLostError(f"{p.task_id}: its Ray worker died twice ({type(e).__name__}: {first}); "
                                          f"the run stops here and resumes from {run_dir}") from None
                log.warning("eval worker %d died on %s (%s: %s); playing it again on a fresh worker",
                            i, p.task_id, type(e).__name__, first)
                try:
                    ray.kill(actors[i])
                except Exception:
                    pass
                start([i])
                pending.appendleft(p)
                submit(i)
                continue
            if results is not None:
                results.commit(row, records)  # the trajectories first, then the result line: the commit point
            else:
                rows.append(row)
                commit(row)
            submit(i)
        return rows
    finally:
        if results is not None:
            results.close()
        if actors:
            try:
                ray.get([a.close.remote() for a in actors.values()], timeout=10)
            except Exception:
                pass
            for a in actors.values():
                try:
                    ray.kill(a)
                except Exception:
                    pass
        if owns and ray.is_initialized():
            ray.shutdown()
