"""Rollout workers on Ray: the RL stage's sampling spread over actors, each holding one llama.cpp engine.

What runs where, as OpenRLHF and verl split it:

- **Learner** (the process running ``o1code ppo --ray ...``): trains. After each update `sync` writes
  the LoRA adapters once as a llama.cpp adapter GGUF, puts its bytes in Ray's object store, and every
  worker swaps them in before its next sample. Bytes through the object store, not a file on shared
  storage: a cluster need not share a file system, and the adapter is small (the default model at
  r=16: 34 MiB in float32), so one copy per node per update is cheap beside an update's minutes.
- **Workers** (`_RolloutWorker` actors): each loads a `LlamaCppGenerator` on the base GGUF once (a
  path every node can read: the same file, or the default model, which each node assembles), and
  draws what it is sent.

A `sample` call splits its prompts in order into calls of ``prompts_per_call`` prompts, and any
worker may serve any call: a llama.cpp call's completions depend only on its prompts, the sampling
parameters, the adapter and the generator's settings, never on what the worker did before. So the
samples equal those of a local `GeneratorEngine` with the same ``prompts_per_call``: the calls, not
the machines, fix the numerics, and a run started on Ray resumes locally (or on more workers) with
the same samples. Each sample carries the adapter version it was drawn with, and `sample` refuses a
call drawn with another version than the learner's current one.

Faults: a worker that dies (its process or its node) is replaced by a fresh actor with the current
adapter, and the calls it held are drawn again on it, with the same seeds: the same samples. A call
that loses its worker twice raises `WorkerLostError`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from o1code.agents.rollout import Sample, chunks

from ._ray import actor_lost_errors, connect, import_ray, unwrap
from .errors import DistributedError, WorkerLostError

log = logging.getLogger(__name__)


class _RolloutWorker:
    """The remote side: a `GeneratorEngine` over one `LlamaCppGenerator` (its ``sample`` is what a call
    runs, each call already one of the learner's chunks), set to the adapter bytes it is sent."""

    def __init__(self, config: dict[str, Any]) -> None:
        from o1code.agents.rollout import GeneratorEngine
        from o1code.models.llamacpp import LlamaCppConfig, LlamaCppGenerator

        self.engine = GeneratorEngine("llamacpp", LlamaCppGenerator(LlamaCppConfig(**config)), "gguf")

    def ready(self) -> int:
        return os.getpid()

    def set_adapter(self, data: bytes, version: int) -> int:
        path = self.engine.workdir / f"adapter-{version}.gguf"
        path.write_bytes(data)
        self.engine.use_adapter(path, version)
        return version

    def sample(self, prompts: list[str], *args: Any) -> list[list[Sample]]:
        return self.engine.sample(prompts, *args)

    def close(self) -> None:
        self.engine.close()


class RayRolloutEngine:
    """A `RolloutEngine` (``o1code.agents.rollout``) over `workers` Ray actors, each a llama.cpp
    generator on `base` (the GGUF the policy was dequantized from); see the module docstring.

    `address`: ``local``/None (start Ray here), ``auto`` or a cluster address; `num_cpus`: CPUs each
    worker reserves (its llama.cpp threads); `options`: further `LlamaCppConfig` fields (``n_ctx`` ...)."""

    name = "llamacpp"

    def __init__(self, base: str, workers: int = 2, prompts_per_call: int | None = None, address: str | None = None,
                 num_cpus: float = 1, chat_template: bool = True, **options: Any) -> None:
        if workers < 1 or (prompts_per_call is not None and prompts_per_call < 1):
            raise DistributedError(f"workers and prompts_per_call must be >= 1, got {workers} and {prompts_per_call}")
        self.ray = import_ray()
        self._owns = connect(address)
        self.config = {"path": str(base), "chat_template": chat_template, "n_ctx": 8192,
                       "n_threads": max(1, int(num_cpus)), **options}
        self.base, self.prompts_per_call, self.num_cpus = str(base), prompts_per_call, num_cpus
        self.version = 0
        self._adapter: Any = None  # the object-store reference of the current adapter's bytes
        self.workers = [self._new_worker() for _ in range(workers)]
        self.ray.get([w.ready.remote() for w in self.workers])
        log.info("%d llama.cpp rollout workers on Ray", workers)

    @classmethod
    def for_policy(cls, policy: Any, engine: str = "auto", **kwargs: Any) -> "RayRolloutEngine":
        """Workers for `policy` (LoRA adapters on a GGUF base: llama.cpp on that GGUF), given the run's
        `engine` setting; `kwargs` as the constructor's. Raises `DistributedError` where llama.cpp
        rollouts do not apply."""
        from o1code.agents.rollout import gguf_base, resolve_engine

        if resolve_engine(engine, policy) != "llamacpp":
            raise DistributedError("Ray rollout workers run llama.cpp: train LoRA adapters on a GGUF base (the "
                                   "default model, gguf:PATH) with engine auto or llamacpp")
        return cls(gguf_base(policy), chat_template=policy.config.chat_template, **kwargs)

    def _new_worker(self) -> Any:
        worker = self.ray.remote(num_cpus=self.num_cpus)(_RolloutWorker).remote(self.config)
        if self._adapter is not None:
            worker.set_adapter.remote(self._adapter, self.version)  # ordered before its next call
        return worker

    def _replace(self, i: int, why: BaseException) -> None:
        log.warning("rollout worker %d lost (%s): starting a fresh one", i, type(why).__name__)
        try:
            self.ray.kill(self.workers[i])
        except Exception:  # already gone
            pass
        self.workers[i] = self._new_worker()

    def sync(self, policy: Any) -> None:
        """Write `policy`'s LoRA adapters as a llama.cpp adapter GGUF and set them on every worker."""
        from o1code.models.lora_gguf import write_lora_gguf

        with tempfile.TemporaryDirectory(prefix="o1code-adapter-") as tmp:
            path = Path(tmp) / "adapter.gguf"
            write_lora_gguf(policy, self.base, path)
            data = path.read_bytes()
        self.version += 1
        self._adapter = self.ray.put(data)
        for i in range(len(self.workers)):
            try:
                self.ray.get(self.workers[i].set_adapter.remote(self._adapter, self.version))
            except actor_lost_errors() as e:
                self._replace(i, e)  # the fresh worker is given the adapter as it starts

    def sample(self, prompts: Sequence[str], n: int, seed: int, max_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[Sample]]:
        args = (n, seed, max_tokens, temperature, top_p)
        parts = chunks(list(prompts), self.prompts_per_call)
        results: dict[int, list] = {}
        lost = [0] * len(parts)
        queue = list(range(len(parts)))
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (call, worker)
        while queue or running:
            busy = {w for _, w in running.values()}
            for w in range(len(self.workers)):
                if queue and w not in busy:
                    k = queue.pop(0)
                    running[self.workers[w].sample.remote(list(parts[k]), *args)] = (k, w)
            done, _ = self.ray.wait(list(running), num_returns=1)
            k, w = running.pop(done[0])
            try:
                out = self.ray.get(done[0])
            except actor_lost_errors() as e:
                lost[k] += 1
                if lost[k] > 1:
                    raise WorkerLostError(f"a rollout call lost its worker twice ({type(e).__name__})") from None
                self._replace(w, e)
                queue.insert(0, k)
                continue
            except Exception as e:
                raise unwrap(e) from None
            stale = {x.version for comps in out for x in comps} - {self.version}
            if stale:
                raise DistributedError(f"a rollout worker drew with adapter version {min(stale)}, not the current "
                                       f"{self.version}: an update would mix weights")
            results[k] = out
        return [comps for k in range(len(parts)) for comps in results[k]]

    def close(self) -> None:
        """Stop the workers (and Ray, when this engine started it)."""
        for w in self.workers:
            try:
                self.ray.get(w.close.remote(), timeout=30)
            except Exception:  # a lost worker has nothing left to close
                pass
            self.ray.kill(w)
        self.workers = []
        if self._owns:
            self.ray.shutdown()


__all__ = ["RayRolloutEngine"]
