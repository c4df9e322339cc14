"""The worker processes of `LocalSandbox`: starting one (the zygote, `_worker.py`, under the launcher
argv that `LocalSandbox` builds), its length-prefixed JSON pipe protocol with deadlines and size
caps, and killing its whole process tree (a /proc walk: `_descendants`, `_alive`).

The pool that hands workers out, replaces dead ones and retries a failed sample is `LocalSandbox`
(`o1code.sandboxes.local`); what a reply means is `o1code.sandboxes.verdicts`.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import WorkerError

log = logging.getLogger(__name__)

_WORKER_SOURCE = (Path(__file__).with_name("_worker.py")).read_text()
_FRAME = struct.Struct(">I")


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
