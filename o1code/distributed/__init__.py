"""o1code.distributed: scale out on Ray (the ``distributed`` extra: ``pip install 'o1code[distributed]'``).

- `RaySandbox`: the `LocalSandbox` API (`run`, `run_many`, `evaluate`, `isolation_summary`, a context
  manager) over Ray actors, each owning a `LocalSandbox` on its node; any env takes it
  (``CodeEnv(sandbox=RaySandbox(address="auto"))``).
- `evaluate_on_ray`: the problems of ``o1code eval --ray local|auto|ADDRESS`` over Ray worker actors
  (one generator each, loaded once); this process stays the only writer of the run directory.
- `RayRolloutEngine`: the RL stage's rollouts (``o1code ppo --ray ...``) on llama.cpp worker actors,
  the LoRA adapter published to them after each update (`o1code.distributed.rollout`).
- `connected(address)`: one Ray connection around several of those (``o1code selfplay --ray``).

Importing this package needs no Ray; using it without Ray raises `MissingRayError` saying what to
install. See the README's "On a cluster".
"""

from __future__ import annotations

from typing import Any

from ._ray import connected
from .errors import DistributedError, MissingRayError, RayClusterError, WorkerLostError

__all__ = ["DistributedError", "MissingRayError", "RayClusterError", "RayRolloutEngine", "RaySandbox",
           "WorkerLostError", "connected", "evaluate_on_ray"]


def __getattr__(name: str) -> Any:  # the sandbox and eval modules import o1code.sandboxes / Ray lazily
    if name == "RaySandbox":
        from .sandbox import RaySandbox

        return RaySandbox
    if name == "RayRolloutEngine":
        from .rollout import RayRolloutEngine

        return RayRolloutEngine
    if name == "evaluate_on_ray":
        from .eval import evaluate_on_ray

        return evaluate_on_ray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
