"""`RaySandbox`: the `LocalSandbox` API over Ray actors, each owning a `LocalSandbox` on its node.

```python
from o1code.distributed import RaySandbox
with RaySandbox(address="auto", num_cpus=1) as sb:      # one actor per cluster CPU by default
    r = sb.run(code, tests, setup_code="", timeout_s=4.0)  # -> ExecutionResult, graded on the node
    rs = sb.run_many(jobs)                                 # spread over every actor
env = CodeEnv(sandbox=sb)                                  # any env takes it (the `Sandbox` protocol)
```

What runs where: this process (the driver) only dispatches. Each actor reserves `num_cpus` CPUs of
one node (Ray places them, spread over the nodes by default), starts a `LocalSandbox` of
`workers_per_actor` warm, isolated workers there, and runs and grades the samples it is sent: the
isolation is that node's, set up and checked there, and every `ExecutionResult.isolation` says
what the sample actually ran under. The sandbox still fails closed: an actor whose node cannot
confine code refuses to start (`SandboxUnavailableError`, the node's own message). The driver
resolves ``isolation="auto"`` (``$O1CODE_SANDBOX``) before shipping the config, so the opt-out
from confinement is the driver's decision, never a worker's environment.

Faults: an actor that dies or hangs mid-run (its process, its node) is killed, replaced by a fresh
actor, and the run is retried once on it, as `LocalSandbox` does for a worker; a second failure is
`Verdict.SANDBOX_ERROR` (``attempts`` counts the tries), never a verdict about the solution.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import queue
import socket
import threading
import time
from typing import Any, Optional, Sequence

from o1code.sandboxes import (CallResult, ExecutionResult, Job, LocalSandbox, SandboxConfig,
                              SandboxHandle, SandboxUnavailableError, Test, TestOutcome, Verdict)

from ._ray import actor_lost_errors, free_cpus, connect, import_ray, unwrap
from .errors import RayClusterError

log = logging.getLogger(__name__)


class _SandboxActor:
    """The remote side: one `LocalSandbox` on this actor's node. Started by `start` (not in
    ``__init__``) so that a node that cannot confine code answers with its own error."""

    def __init__(self, workers: int, config: SandboxConfig) -> None:
        self.workers = workers
        self.config = config
        self.sandbox: Optional[LocalSandbox] = None

    def start(self) -> dict[str, Any]:
        if self.sandbox is None:
            self.sandbox = LocalSandbox(workers=self.workers, config=self.config)
        return {"isolation": self.sandbox.isolation_summary, "bwrap": self.sandbox.bwrap,
                "host": socket.gethostname(), "pid": os.getpid()}

    def run_batch(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        assert self.sandbox is not None
        return [self.sandbox.run(j.code, j.tests, j.setup_code, j.timeout_s) for j in jobs]

    def evaluate(self, code: str, calls: Sequence[str], setup_code: str, timeout_s: float) -> list[CallResult]:
        assert self.sandbox is not None
        return self.sandbox.evaluate(code, calls, setup_code, timeout_s)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


@dataclasses.dataclass
class _Slot:
    """One actor (an index into the actor table); an actor has `workers_per_actor` slots."""

    index: int


class RaySandbox(SandboxHandle):
    """Runs untrusted code against tests on Ray actors, each owning a `LocalSandbox` on its node.

    The `Sandbox` protocol (`run`, `run_many`, `close`) plus `evaluate` and `isolation_summary`, like
    `LocalSandbox`; a context manager. Thread-safe: any number of threads may call `run` at once
    (each call holds one actor slot; callers beyond the slots wait, as with `LocalSandbox`).

    Args:
        actors: Number of actors. None: as many as the cluster's free CPUs allow (free CPUs / `num_cpus`).
        num_cpus: CPUs each actor reserves on its node (Ray places actors by it).
        workers_per_actor: Warm sandbox workers in each actor's `LocalSandbox`, i.e. samples it runs
            at once. None: ``max(1, floor(num_cpus))``.
        config: `SandboxConfig` of every actor's `LocalSandbox` (limits, isolation).
        address: Where Ray runs when this process is not connected yet: ``"local"`` (start it here),
            ``"auto"`` (the cluster of this machine), or a cluster address. A Ray this process
            connected to before is used as it is; one this sandbox started is shut down by `close`.
        strategy: Ray scheduling strategy of the actors (``"SPREAD"``: over as many nodes as possible;
            ``"DEFAULT"``: Ray's packing).
        batch: Most jobs one `run_many` call sends to an actor at once (fewer round trips; smaller
            batches balance uneven work better).
        start_timeout_s: Seconds an actor may take to be placed and start its sandbox.

    Raises `MissingRayError` without Ray, `RayClusterError` when Ray cannot be reached or the actors
    cannot be placed, `SandboxUnavailableError` when a node cannot confine code.
    """

    def __init__(self, actors: Optional[int] = None, *, num_cpus: float = 1.0, workers_per_actor: Optional[int] = None,
                 config: Optional[SandboxConfig] = None, address: Optional[str] = "local",
                 strategy: str = "SPREAD", batch: int = 16, start_timeout_s: float = 120.0) -> None:
        self._ray = import_ray()
        self._lost = actor_lost_errors()
        config = config or SandboxConfig()
        # The opt-out from confinement ($O1CODE_SANDBOX=unsafe) is decided here, on the driver.
        self.config = dataclasses.replace(config, isolation=config.resolved_isolation().value)
        if not num_cpus > 0:
            raise ValueError("num_cpus must be > 0")
        self.num_cpus = float(num_cpus)
        self.workers_per_actor = max(1, workers_per_actor or int(math.floor(num_cpus)) or 1)
        self.strategy = strategy
        self.batch = max(1, int(batch))
        self.start_timeout_s = float(start_timeout_s)
        self._closed = False
        self._lock = threading.Lock()
        self._owns_ray = False
        self._owns_ray = connect(address)
        self._remote_cls = self._ray.remote(_SandboxActor)
        self._actors: list[Any] = []
        self._hello: list[dict[str, Any]] = []
        self._idle: "queue.Queue[_Slot]" = queue.Queue()
        self.replaced = 0  #: actors replaced after dying or hanging
        try:
            n = actors if actors is not None else max(1, int(free_cpus() // self.num_cpus))
            if n < 1:
                raise ValueError("actors must be >= 1")
            self.actors = n
            handles = [self._new_actor() for _ in range(n)]
            self._hello = self._start(handles)
            self._actors = handles
            for _ in range(self.workers_per_actor):
                for i in range(n):
                    self._idle.put(_Slot(i))
            self._pool = concurrent.futures.ThreadPoolExecutor(n * self.workers_per_actor,
                                                               thread_name_prefix="ray-sandbox")
        except BaseException:
            self.close()
            raise

    # -- actors ------------------------------------------------------------------------------

    def _new_actor(self) -> Any:
        return self._remote_cls.options(num_cpus=self.num_cpus, max_concurrency=self.workers_per_actor,
                           scheduling_strategy=self.strategy).remote(self.workers_per_actor, self.config)

    def _start(self, handles: list[Any]) -> list[dict[str, Any]]:
        """Wait for `handles` to start their sandboxes; raise the node's own error when one cannot."""
        refs = [h.start.remote() for h in handles]
        try:
            return self._ray.get(refs, timeout=self.start_timeout_s)
        except self._ray.exceptions.GetTimeoutError:
            for h in handles:
                self._ray.kill(h)
            raise RayClusterError(
                f"{len(handles)} sandbox actor(s) of {self.num_cpus:g} CPU(s) each did not start within "
                f"{self.start_timeout_s:g} s: the cluster ({self._ray.cluster_resources().get('CPU', 0):g} CPUs) "
                f"has no room for them, or a node is stuck; ask for fewer actors or fewer CPUs each") from None
        except self._ray.exceptions.RayTaskError as e:
            for h in handles:
                self._ray.kill(h)
            cause = unwrap(e)
            if isinstance(cause, SandboxUnavailableError):
                raise SandboxUnavailableError(f"on a Ray node: {cause}") from None
            raise cause from None
        except self._lost as e:
            for h in handles:
                self._ray.kill(h)
            raise RayClusterError(f"a sandbox actor died while starting: {type(e).__name__}: {e}"[:800]) from None

    def _replace(self, index: int, dead: Any, why: str) -> Any:
        """Replace actor `index` (if it is still `dead`: another thread may have done it) and
        return the live one. Raises what `_start` raises when the new actor cannot start."""
        with self._lock:
            if self._closed:
                raise SandboxUnavailableError("sandbox is closed")
            if self._actors[index] is not dead:
                return self._actors[index]
            log.warning("ray sandbox: actor %d lost (%s); replacing it", index, why)
            try:
                self._ray.kill(dead)
            except Exception:  # already gone
                pass
            fresh = self._new_actor()
            self._actors[index] = fresh
            self.replaced += 1
        self._hello[index] = self._start([fresh])[0]
        return fresh

    def _call(self, budget_s: float, method: str, *args: Any) -> tuple[Any, int, str]:
        """Call `method` on one actor slot; on a lost actor, replace it and retry once.

        Returns ``(value, attempts, "")``, or ``(None, 2, why)`` when both attempts lost their actor.
        `budget_s` bounds how long one attempt may take before the actor is declared hung."""
        if self._closed:
            raise SandboxUnavailableError("sandbox is closed")
        slot = self._idle.get()
        try:
            why = ""
            for attempt in (1, 2):
                with self._lock:
                    if self._closed:
                        raise SandboxUnavailableError("sandbox is closed")
                    actor = self._actors[slot.index]
                try:
                    ref = getattr(actor, method).remote(*args)
                    return self._ray.get(ref, timeout=budget_s), attempt, ""
                except self._ray.exceptions.RayTaskError as e:
                    raise unwrap(e) from None  # what the sandbox raised (InvalidTestError, ...)
                except self._lost as e:
                    why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
                    log.warning("ray sandbox: attempt %d lost its actor: %s", attempt, why)
                    try:
                        self._replace(slot.index, actor, why)
                    except (RayClusterError, SandboxUnavailableError) as e2:
                        why = f"{why}; replacing it failed: {e2}"[:500]
                        if self._closed:
                            raise
            return None, 2, why
        finally:
            self._idle.put(slot)

    def _budget(self, timeouts: Sequence[float]) -> float:
        """Seconds after which an actor working on samples with these timeouts counts as hung:
        twice (the local sandbox retries once) each sample's timeout, backstop and worker start."""
        c = self.config
        return 30.0 + sum(2 * (t + c.backstop_s + c.start_timeout_s) for t in timeouts)

    # -- the Sandbox API ----------------------------------------------------------------------

    @property
    def isolation_summary(self) -> str:
        """The isolation of the actors' sandboxes, e.g. ``"bwrap+seccomp+rlimits"``: the same string
        as `LocalSandbox`'s when every node agrees, else each distinct one, sorted, joined by ``", "``
        (a part starting with ``"none"`` means code runs without confinement there)."""
        return ", ".join(sorted({h["isolation"] for h in self._hello})) if self._hello else ""

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """Per actor: its host, process id and isolation, as each reported at its start."""
        return [dict(h) for h in self._hello]

    def run(self, code: str, tests: Sequence[Test], setup_code: str = "", timeout_s: float = 4.0) -> ExecutionResult:
        """Run and grade one sample on an actor (see `LocalSandbox.run`). Raises what
        `LocalSandbox.run` raises (`InvalidTestError`, ValueError) and `SandboxUnavailableError`
        after `close`; a lost actor is retried once, then `Verdict.SANDBOX_ERROR`."""
        return self._run_batch([Job(code, list(tests), setup_code, timeout_s)])[0]

    def run_many(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        """Run `jobs` over every actor (in batches of at most `batch`); results in the order of `jobs`."""
        jobs = [dataclasses.replace(j, tests=list(j.tests)) for j in jobs]
        if not jobs:
            return []
        slots = len(self._actors) * self.workers_per_actor
        size = max(1, min(self.batch, math.ceil(len(jobs) / (2 * slots))))
        futs = [self._pool.submit(self._run_batch, jobs[i:i + size]) for i in range(0, len(jobs), size)]
        return [r for f in futs for r in f.result()]

    def _run_batch(self, jobs: list[Job]) -> list[ExecutionResult]:
        for j in jobs:
            if not (j.timeout_s > 0 and math.isfinite(j.timeout_s)):
                raise ValueError("timeout_s must be a positive number")
        t0 = time.perf_counter()
        results, attempt, why = self._call(self._budget([j.timeout_s for j in jobs]), "run_batch", jobs)
        if results is not None:
            if attempt == 1:
                return results
            return [dataclasses.replace(r, attempts=r.attempts + attempt - 1) for r in results]
        msg = f"infrastructure failure (not the solution's fault): the Ray actor was lost twice: {why}"
        return [ExecutionResult(Verdict.SANDBOX_ERROR, 0, len(j.tests),
                                tuple(TestOutcome(Verdict.SANDBOX_ERROR, msg) for _ in j.tests),
                                seconds=time.perf_counter() - t0, message=msg, attempts=2,
                                isolation=self.isolation_summary) for j in jobs]

    def evaluate(self, code: str, calls: Sequence[str], setup_code: str = "", timeout_s: float = 4.0) -> list[CallResult]:
        """The value of each call expression of `calls` after `code` and `setup_code`, run on an
        actor (see `LocalSandbox.evaluate`); a lost actor is retried once, then every call gets
        `Verdict.SANDBOX_ERROR`."""
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError("timeout_s must be a positive number")
        calls = list(calls)
        if not calls:
            return []
        # evaluate may run each call again alone: budget for one sample per call plus the batch
        out, _, why = self._call(self._budget([timeout_s] * (len(calls) + 1)), "evaluate", code, calls,
                                 setup_code, float(timeout_s))
        if out is not None:
            return out
        msg = f"infrastructure failure: the Ray actor was lost twice: {why}"
        return [CallResult(False, None, Verdict.SANDBOX_ERROR, msg) for _ in calls]

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every actor (their sandboxes' workers die with them); shut Ray down when this
        sandbox started it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            actors, self._actors = list(self._actors), []
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
        try:
            if actors:
                try:  # a clean stop first: the workers' temp dirs go too
                    self._ray.get([a.close.remote() for a in actors], timeout=10)
                except Exception:
                    pass
                for a in actors:
                    try:
                        self._ray.kill(a)
                    except Exception:
                        pass
        finally:
            if self._owns_ray and self._ray.is_initialized():
                self._ray.shutdown()

    def __repr__(self) -> str:
        return (f"RaySandbox(actors={len(self._actors)}, num_cpus={self.num_cpus:g}, "
                f"workers_per_actor={self.workers_per_actor}, isolation={self.isolation_summary!r})")
