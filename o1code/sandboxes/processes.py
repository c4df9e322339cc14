"""The worker processes of `LocalSandbox`: starting one (the zygote, `_worker.py`, under the launcher
argv that `LocalSandbox` builds), its binary pipe protocol with deadlines and size caps (the
frame layouts are defined once, in `_worker.py`, and mirrored here), and killing its whole process
tree (a /proc walk: `_descendants`, `_alive`).

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
# The frames of `_worker.py` (REQ_HEAD, PAYLOAD_HEAD, REP_HEAD and the reply flags; the worker
# runs as a separate program, so they are restated here and checked against its source below).
_REQ_HEAD = struct.Struct(">4sddII")
_REQ_MAGIC = b"O1Q1"
_PAYLOAD_HEAD = struct.Struct(">IIII")
_REP_HEAD = struct.Struct(">4sBxxxidIII")
_REP_MAGIC = b"O1P1"
_F_READY, _F_DONE, _F_TIMED_OUT, _F_OVER_CAP, _F_EXITED, _F_SIGNALED = 1, 2, 4, 8, 16, 32
for _line in ('REQ_HEAD = struct.Struct(">4sddII")', 'PAYLOAD_HEAD = struct.Struct(">IIII")',
              'REP_HEAD = struct.Struct(">4sBxxxidIII")', 'REQ_MAGIC = b"O1Q1"', 'REP_MAGIC = b"O1P1"',
              "F_READY, F_DONE, F_TIMED_OUT, F_OVER_CAP, F_EXITED, F_SIGNALED = 1, 2, 4, 8, 16, 32"):
    assert _line in _WORKER_SOURCE, f"_worker.py and processes.py disagree on the frame: {_line}"


def encode_request(code: str, setup: str, exprs: list[str], timeout_s: float, ready_s: float,
                   output_cap: int, cpu_s: int, max_depth: int, max_items: int) -> bytes:
    """The request frame for the zygote: returns REQ_HEAD + payload bytes (see `_worker.py`).

    Strings are UTF-8 with lone surrogates passed through (model text may hold them; the child
    decodes them the same way). Raises ValueError when a field does not fit its frame slot."""
    parts = [x.encode("utf-8", "surrogatepass") for x in (code, setup, *exprs)]
    payload = b"".join([_PAYLOAD_HEAD.pack(cpu_s, max_depth, max_items, len(parts)),
                        struct.pack(f">{len(parts)}I", *map(len, parts)), *parts])
    try:
        head = _REQ_HEAD.pack(_REQ_MAGIC, timeout_s, ready_s, output_cap, len(payload))
    except struct.error as exc:
        raise ValueError(f"request does not fit the frame: {exc}") from None
    return head + payload


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

    def execute(self, request: bytes, deadline: float, caps: tuple[int, int]) -> tuple[dict, bytes, bytes, bytes]:
        """Send one request frame (`encode_request`); return (header, result bytes, stdout bytes,
        stderr bytes). The header is a dict: ``ready`` (the child got as far as running the
        sample), ``done`` (it said it finished), ``timed_out``, ``over_cap``, ``exit`` and
        ``signal`` (None unless it exited or was killed on its own before the zygote stopped
        it), ``seconds`` (the sample's wall time). Raises `WorkerError` when the worker fails."""
        self._write(request, deadline)
        try:
            magic, flags, code, seconds, *sizes = _REP_HEAD.unpack(self._read(_REP_HEAD.size, deadline))
        except struct.error as exc:
            raise WorkerError(f"malformed reply header: {exc}") from None
        if magic != _REP_MAGIC:
            raise WorkerError("malformed reply header: bad magic")
        result_cap, out_cap = caps
        # Enforced here too: the zygote is trusted code, but its memory is shared with samples.
        if sizes[0] > result_cap or max(sizes[1:]) > out_cap + 1:
            raise WorkerError("reply larger than the configured caps")
        header = {
            "ready": bool(flags & _F_READY), "done": bool(flags & _F_DONE),
            "timed_out": bool(flags & _F_TIMED_OUT), "over_cap": bool(flags & _F_OVER_CAP),
            "exit": code if flags & _F_EXITED else None,
            "signal": code if flags & _F_SIGNALED else None, "seconds": seconds,
        }
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
