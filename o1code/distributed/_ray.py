"""Ray plumbing shared by `RaySandbox` and the distributed evaluation: the import with a clear
message, connecting to (or starting) a cluster, and which exceptions mean "the actor is gone"."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from .errors import MissingRayError, RayClusterError

log = logging.getLogger(__name__)

#: What `RaySandbox` and ``o1code eval --ray`` accept as an address.
ADDRESS_HELP = ("local (start Ray in this process), auto (join the cluster `ray start --head` runs here, "
                "or $RAY_ADDRESS), or a cluster ADDRESS (host:6379, ray://host:10001)")


def import_ray() -> Any:
    """The ``ray`` module, or `MissingRayError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise MissingRayError("o1code.distributed needs Ray: pip install 'o1code[distributed]' "
                              f"(or pip install ray) [{e}]") from e
    return ray


def connect(address: Optional[str]) -> bool:
    """Make sure this process is connected to Ray: nothing when it already is (``ray.init`` done by
    the caller), else ``ray.init(address=...)``: ``"local"`` (or None) starts a new local instance
    (no dashboard), ``"auto"`` joins the one running on this machine (or ``$RAY_ADDRESS``), anything
    else is a cluster address.
    Returns True when this call connected (the caller then owns the connection and shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    addr = address or "local"  # "local": a new instance here, even when $RAY_ADDRESS names a cluster
    kwargs: dict[str, Any] = {"include_dashboard": False} if addr == "local" else {}
    try:
        ray.init(address=addr, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayClusterError(f"cannot connect to Ray at {address!r} ({ADDRESS_HELP}): {e}") from None
    log.info("connected to Ray (%s): %s", address or "local", ray.cluster_resources())
    return True


@contextmanager
def connected(address: Optional[str]) -> Iterator[None]:
    """`connect` for the length of a ``with`` block (a run of several stages joins Ray once; the stages'
    own `connect` calls then find it connected), shutting Ray down at the end when this block started it."""
    owns = connect(address)
    try:
        yield
    finally:
        if owns:
            import_ray().shutdown()


def actor_lost_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of ``ray.get`` that mean the actor (its process or its node) is gone or hung,
    not that the code it ran raised."""
    import ray.exceptions as rx

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
             "NodeDiedError", "ObjectLostError", "OwnerDiedError", "GetTimeoutError", "LocalRayletDiedError")
    return tuple(getattr(rx, n) for n in names if isinstance(getattr(rx, n, None), type))


def unwrap(exc: BaseException) -> BaseException:
    """The application exception inside a ``RayTaskError`` (what the remote code raised), else `exc`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def free_cpus() -> float:
    """CPUs of the connected cluster (all nodes) that no actor or task holds now."""
    ray = import_ray()
    return float(ray.available_resources().get("CPU", 0.0))
