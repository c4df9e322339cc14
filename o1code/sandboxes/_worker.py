"""The sandbox worker ("zygote"): runs INSIDE the isolation, stdlib only, self-contained.

The host never imports this module: it reads this file as text and starts it with
``python -I -S -B -c <source> <config-json>``, so the project directory never has to be visible
inside the sandbox. That is also why it is one long file (the project keeps modules under ~450
lines): it travels as one source string and can import nothing of o1code. The zygote pre-imports
common modules once, then for every sample forks a fresh child (a fork costs ~1 ms, a new
interpreter ~30 ms). Each child is forked one sample
*ahead*, while the previous sample runs: it applies rlimits and a seccomp filter and runs a
throw-away warm-up sample (the copy-on-write faults of a first compile cost more than a typical
MBPP sample), then waits for its request; only then does it take the work dir, its output files
and the shared result buffer, which the zygote has wiped after killing the previous sample. It
runs the solution and evaluates only the call sub-expressions the host sent. It never sees
expected values and never decides pass/fail.

Wire format (binary, see REQ_HEAD / PAYLOAD_HEAD / REP_HEAD below): host -> zygote a fixed header
(timeout, ready allowance, output cap, payload length) and an opaque payload the zygote forwards
to the child (code, setup, call expressions); zygote -> host a fixed header (ready/done/timeout/
over-cap flags, exit status or signal, seconds, three lengths) followed by the result bytes,
stdout and stderr. The result bytes are what the child wrote into the shared result buffer,
forwarded untouched: the child runs untrusted code, so the host parses them strictly. One line
each: ``{"p": "code"|"setup"[, "e": err]}`` and ``{"c": i, "v": value | "e": [kind, type,
message], "t": seconds}`` per call expression. Whether the sample started ("ready") and finished
("done") comes from a control pipe (child -> zygote) whose first byte our code writes before the
sample runs: a sample can end its own run early but cannot make it look like an infrastructure
failure.
"""
import ctypes
import gc
import errno
import json
import mmap
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time

# Pre-imported so that forked children start warm (MBPP solutions use these a lot).
import array  # noqa: F401
import bisect  # noqa: F401
import cmath  # noqa: F401
import collections  # noqa: F401
import copy  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import operator  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import types
import typing  # noqa: F401

CONFIG = json.loads(sys.argv[1])

# Syscalls denied outright (EPERM). Default-allow plus a denylist: an allowlist would be stronger
# but needs tuning for every CPython release.
DENY = (
    "fork vfork execve execveat ptrace process_vm_readv process_vm_writev mount umount2 unshare "
    "setns pivot_root chroot bpf perf_event_open keyctl add_key request_key userfaultfd "
    "io_uring_setup io_uring_enter io_uring_register personality pidfd_open pidfd_getfd "
    "pidfd_send_signal setsid setpgid tkill rt_sigqueueinfo rt_tgsigqueueinfo kexec_load "
    "kexec_file_load init_module finit_module delete_module reboot swapon swapoff acct "
    "settimeofday clock_settime clock_adjtime adjtimex syslog quotactl name_to_handle_at "
    "open_by_handle_at move_mount open_tree fsopen fsmount fspick mount_setattr "
    "set_mempolicy migrate_pages move_pages mbind lookup_dcookie vhangup"
).split()
CLONE_THREAD = 0x00010000
AF_UNIX = 1
ACT_ALLOW = 0x7FFF0000
CMP_NE, CMP_MASKED_EQ = 1, 7


def act_errno(e):
    return 0x00050000 | (e & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def load_libseccomp():
    """Return the libseccomp handle, or None (the host then reports the missing layer)."""
    path = CONFIG.get("libseccomp")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(ArgCmp)]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        nrs = {}
        for name in DENY + ["clone", "clone3", "kill", "tgkill", "socket", "socketpair"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0:  # -1 (__NR_SCMP_ERROR): the syscall does not exist on this arch
                nrs[name] = nr
        return lib, nrs
    except (OSError, AttributeError):
        return None


SECCOMP = load_libseccomp()
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


PAGE = resource.getpagesize()
MAGIC_PID = 0x3EADBEEF  # placeholder for the child's pid in the pre-built filter


def build_filter(pid):
    """Return a libseccomp context with the child's rules (caller releases it)."""
    lib, nrs = SECCOMP
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")

    def rule(action, name, *cmps):
        if name not in nrs:
            return
        arr = (ArgCmp * max(1, len(cmps)))(*cmps)
        rc = lib.seccomp_rule_add_array(ctx, action, nrs[name], len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, "seccomp_rule_add %s" % name)

    eperm = act_errno(errno.EPERM)
    for name in DENY:
        rule(eperm, name)
    # Threads are fine, new processes are not: clone without CLONE_THREAD is a fork.
    rule(eperm, "clone", ArgCmp(0, CMP_MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes flags in memory seccomp cannot read: ENOSYS makes glibc fall back to clone.
    rule(act_errno(errno.ENOSYS), "clone3")
    # Signals only to itself (kill(-1), kill(0), the zygote, anything else: EPERM).
    rule(eperm, "kill", ArgCmp(0, CMP_NE, pid, 0))
    rule(eperm, "tgkill", ArgCmp(0, CMP_NE, pid, 0))
    # No network sockets; AF_UNIX only (and there is no one to talk to).
    rule(eperm, "socket", ArgCmp(0, CMP_NE, AF_UNIX, 0))
    rule(eperm, "socketpair", ArgCmp(0, CMP_NE, AF_UNIX, 0))
    return ctx


def prebuild_bpf():
    """Compile the filter once, with a placeholder pid, to raw BPF: building it with libseccomp in
    every child costs ~1 ms; patching the pid into the bytes and loading costs ~0.05 ms."""
    lib = SECCOMP[0]
    ctx = build_filter(MAGIC_PID)
    r, w = os.pipe()
    try:
        rc = lib.seccomp_export_bpf(ctx, w)
        os.close(w)
        w = -1
        data = b""
        while True:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        lib.seccomp_release(ctx)
        os.close(r)
        if w >= 0:
            os.close(w)
    if rc < 0 or not data or len(data) % 8:
        return None
    insns = [struct.unpack("<HBBI", data[i:i + 8]) for i in range(0, len(data), 8)]
    slots = [i * 8 + 4 for i, ins in enumerate(insns) if ins[3] == MAGIC_PID]  # offsets of k
    if not slots:  # kill and tgkill compare against the pid (libseccomp may share the block)
        return None
    return bytearray(data), slots, len(insns)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


BPF = None  # (raw filter bytes, offsets of the pid placeholders, ctypes buffer, sock_fprog)


def prepare_bpf():
    """Pre-build the BPF program and everything `install_seccomp` passes to the kernel, once, in
    the zygote. Returns the tuple stored in BPF, or None when the filter cannot be pre-built (each
    child then compiles it with libseccomp). Building the ctypes array type in every child cost
    ~0.2 ms (a new type per process); here a child only patches its pid into its copy."""
    built = prebuild_bpf()
    if built is None:
        return None
    raw, slots, n = built
    buf = (ctypes.c_char * len(raw)).from_buffer(raw)
    return raw, slots, buf, SockFprog(n, ctypes.addressof(buf))


def install_seccomp(pid):
    """Install the child's filter; raises OSError on failure (the child then never reports ready)."""
    if BPF is not None:
        raw, slots, _buf, prog = BPF  # the child's own copy (fork): patch the pid in place
        for off in slots:
            struct.pack_into("<I", raw, off, pid)
        if LIBC.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        # PR_SET_SECCOMP = 22, SECCOMP_MODE_FILTER = 2
        if LIBC.prctl(22, 2, ctypes.addressof(prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
        return
    lib = SECCOMP[0]
    ctx = build_filter(pid)
    rc = lib.seccomp_load(ctx)
    lib.seccomp_release(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load failed")


# ---------------------------------------------------------------- value encoding (child side)
# Tagged JSON, exact builtin types only. The host re-checks everything: the child is untrusted.

DICT_LIKE = (collections.Counter, collections.OrderedDict, collections.defaultdict)


class Unencodable(Exception):
    pass


# Every builtin the child uses after the sample has run is bound here, at zygote start, as a
# default argument: a sample that patches builtins, json or os cannot break result reporting.
# (It could not gain anything either: the host re-validates every byte.)

def encode(value, limits, _type=type, _hex=hex, _fhex=float.hex, _items=dict.items,
           _list=list, _enc_err=Unencodable):
    budget = [limits["max_items"]]
    max_depth = limits["max_depth"]

    def enc(x, depth):
        if depth > max_depth:
            raise _enc_err("nested deeper than %d" % max_depth)
        budget[0] -= 1
        if budget[0] < 0:
            raise _enc_err("more than %d items" % limits["max_items"])
        t = _type(x)
        if x is None or t is bool or t is str:
            return x
        if t is int:
            if -(1 << 62) < x < (1 << 62):
                return x
            return ["I", _hex(x)]
        if t is float:
            return ["f", _fhex(x)]
        if t is complex:
            return ["c", _fhex(x.real), _fhex(x.imag)]
        if t is bytes:
            return ["b", bytes.hex(x)]
        if t is list or t is tuple or t is set or t is frozenset:
            tag = "l" if t is list else "t" if t is tuple else "s" if t is set else "F"
            return [tag, [enc(v, depth + 1) for v in x]]
        if t is dict or t in DICT_LIKE:
            # Counter/OrderedDict/defaultdict leave as plain dicts (MBPP 40, 88, 653, 902 return
            # them): only the items cross, never the class or its __eq__.
            return ["d", [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in _items(x)]]
        raise _enc_err("a value of type %s is not plain data" % t.__name__)

    return enc(value, 0)


def dumps(x, _type=type, _irepr=int.__repr__, _frepr=float.__repr__,
          _esc=json.encoder.encode_basestring_ascii, _join=",".join, _map=map):
    """Compact JSON of None/bool/int/float/str/list/dict(str keys) with exact types only."""
    t = _type(x)
    if x is None:
        return "null"
    if t is bool:
        return "true" if x else "false"
    if t is int:
        return _irepr(x)
    if t is float:
        return _frepr(x) if x == x and x not in (float("inf"), float("-inf")) else "0.0"
    if t is str:
        return _esc(x)
    if t is list:
        return "[" + _join(_map(dumps, x)) + "]"
    if t is dict:
        return "{" + _join(_esc(k) + ":" + dumps(v) for k, v in x.items()) + "}"
    raise TypeError("cannot send %r" % t)


def error_record(exc, _isinstance=isinstance, _memerr=MemoryError, _str=str, _type=type):
    kind = "memory" if _isinstance(exc, _memerr) else "error"
    try:
        name = str.__str__(_type(exc).__name__)[:100]
    except BaseException:
        name = "?"
    try:
        msg = str.__str__(_str(exc))[:500]
    except BaseException:
        msg = "<unprintable>"
    return [kind, name, msg]


def run_sample(req, _shm_write=None, _exec=exec, _eval=eval, _compile=compile,
               _clock=time.perf_counter, _enumerate=enumerate, _base=BaseException,
               _unenc=Unencodable, _encode=encode, _dumps=dumps, _error=error_record):
    """Run the sample and report; the caller exits right after."""
    limits = req["encode"]

    def send(obj):
        try:
            data = _dumps(obj)
        except _base:  # e.g. a str subclass in an exception's name: report without details
            data = _dumps({k: obj[k] for k in ("p", "c") if k in obj} | {"e": ["error", "", "unreportable"]})
        _shm_write((data + "\n").encode())

    mod = types.ModuleType("solution")
    sys.modules["solution"] = mod
    ns = mod.__dict__
    for phase, src in (("code", req["code"]), ("setup", req["setup"])):
        try:
            _exec(_compile(src, "<%s>" % phase, "exec"), ns)
        except _base as exc:
            send({"p": phase, "e": _error(exc)})
            return
        send({"p": phase})
    for i, expr in _enumerate(req["exprs"]):
        t0 = _clock()
        try:
            value = _eval(_compile(expr, "<test>", "eval"), ns)
        except _base as exc:
            send({"c": i, "e": _error(exc), "t": _clock() - t0})
            continue
        dt = _clock() - t0
        try:
            send({"c": i, "v": _encode(value, limits), "t": dt})
        except _unenc as exc:
            send({"c": i, "e": ["unencodable", "", exc.args[0]], "t": dt})
        except _base:
            send({"c": i, "e": ["unencodable", "", "could not encode the value"], "t": dt})


# ---------------------------------------------------------------- the child

# Results go to a shared anonymous mapping made once by the zygote: the child appends records
# without a syscall or a wake-up of the zygote, and whatever it wrote before a timeout or a crash
# is still there when the zygote looks (after the child is dead). Layout: u64 used, u64 overflow,
# then the records. The child is untrusted: the zygote clamps `used`, the host parses strictly.
SHM = None
SHM_HEAD = 16

# Binary framing (big-endian). Host -> zygote: REQ_HEAD (magic, timeout, seconds allowed for the
# child to get ready, output cap, payload length) + payload; the zygote forwards the payload
# untouched (u32 length + bytes) to the child, which alone parses it: PAYLOAD_HEAD (cpu seconds,
# max depth, max items, string count), one u32 length per string, then the strings (UTF-8):
# code, setup, then one per call expression. Zygote -> host: REP_HEAD (magic, flags, exit status
# or signal, seconds, three lengths) + the result bytes + stdout + stderr.
REQ_HEAD = struct.Struct(">4sddII")
REQ_MAGIC = b"O1Q1"
PAYLOAD_HEAD = struct.Struct(">IIII")
REP_HEAD = struct.Struct(">4sBxxxidIII")
REP_MAGIC = b"O1P1"
F_READY, F_DONE, F_TIMED_OUT, F_OVER_CAP, F_EXITED, F_SIGNALED = 1, 2, 4, 8, 16, 32

# Control pipe, child -> zygote, one byte each: "R" once the child's own setup is done and the
# sample is about to run (written by our code, so a sample can neither forge nor take it back),
# then "D" when the sample has finished (the zygote replies without waiting for the exit). Any
# byte after "R" counts as "D": a sample that writes early only cuts its own results short.
# "E" + text: the child failed before running the sample (an infrastructure error).
CTL_READY, CTL_DONE, CTL_ERROR = b"R", b"D", b"E"


def shm_write(data, _unpack=struct.unpack_from, _pack=struct.pack_into, _len=len):
    shm = SHM
    used = _unpack("<Q", shm, 0)[0]
    end = SHM_HEAD + used + _len(data)
    if end > _len(shm):
        _pack("<Q", shm, 8, 1)
        raise MemoryError("result buffer full")
    shm[SHM_HEAD + used:end] = data
    _pack("<Q", shm, 0, used + _len(data))


def parse_payload(data):
    """Decode a request payload (see PAYLOAD_HEAD) into the dict `run_sample` takes."""
    cpu_s, max_depth, max_items, n = PAYLOAD_HEAD.unpack_from(data, 0)
    off = PAYLOAD_HEAD.size
    lens = struct.unpack_from(">%dI" % n, data, off)
    off += 4 * n
    parts = []
    for k in lens:
        parts.append(data[off:off + k].decode("utf-8", "surrogatepass"))
        off += k
    if n < 2 or off != len(data):
        raise ValueError("malformed request payload")
    return {"cpu_s": cpu_s, "encode": {"max_depth": max_depth, "max_items": max_items},
            "code": parts[0], "setup": parts[1], "exprs": parts[2:]}


# A throw-away sample each child runs before its request arrives. The first compile, exec and
# encode in a fresh fork copy-on-write-fault a few hundred of the zygote's pages (~1 ms, more than
# a typical MBPP sample itself); paying that while the previous sample runs takes it off the
# critical path. Nothing it leaves behind is secret (a dummy module and function).
PREWARM = {
    "code": "def f(x, y=2.5):\n    return [x, (y, 'a')]\n",
    "setup": "", "exprs": ["f(1)"], "encode": {"max_depth": 100, "max_items": 1000},
}


def fail(ctl_fd, exc):
    """Report an infrastructure failure of the child (before the sample ran) and exit."""
    try:
        os.write(ctl_fd, CTL_ERROR + repr(exc).encode("utf-8", "replace")[:500])
    finally:
        os._exit(3)


def run_child(vmsize, req_fd, ctl_fd):
    """Runs in the forked child. Never returns: always ends with os._exit.

    The child is forked while the previous sample still runs: it sets up everything that does not
    depend on the request (session, fds, rlimits, seccomp, a warm-up run), then blocks reading the
    request. Everything it shares with the running sample is set up only at activation, after
    the zygote has killed that sample and wiped the work dir: the work dir, the output files and
    the result buffer.
    """
    try:
        os.setsid()  # own session and process group, so the zygote can kill all of it at once
        LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the zygote
        if os.getppid() != ZYGOTE_PID:  # the zygote died before the line above: no signal comes
            os._exit(3)
        for fd in (0, 1, 2):
            os.dup2(NULLFD, fd)
        # Keep only our two pipes: the host protocol, the running sample's pidfd and control
        # pipe, and the zygote's ends of our own pipes must never be reachable by the sample.
        lo, hi = sorted((req_fd, ctl_fd))
        os.closerange(3, lo)
        os.closerange(lo + 1, hi)
        os.closerange(hi + 1, 1 << 20)
        if os.getuid() == 0 and CONFIG.get("drop_uid"):
            # Without a user namespace the zygote may be real root: the sample must not be.
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes get EFBIG, not death
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        lim = CONFIG["limits"]
        # Address space is budgeted on top of what the fork inherited (LiveBench "false zeros").
        for res, val in ((resource.RLIMIT_AS, vmsize + lim["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, lim["fsize_bytes"]),
                         (resource.RLIMIT_NOFILE, lim["nofile"]),
                         (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (val, val))
        if SECCOMP is not None:
            install_seccomp(os.getpid())
        try:
            run_sample(PREWARM, lambda data: None)
        except BaseException:
            pass
    except BaseException as exc:
        fail(ctl_fd, exc)

    try:
        (n,) = struct.unpack(">I", read_exact(req_fd, 4))
        req = parse_payload(read_exact(req_fd, n))
        os.close(req_fd)
        # Activation: the previous sample is dead and the work dir wiped (zygote, before sending).
        os.chdir(os.path.join(CONFIG["workdir"], "s"))
        for fd, name in ((1, ".stdout"), (2, ".stderr")):
            f = os.open(os.path.join(CONFIG["workdir"], name), os.O_WRONLY | os.O_NOFOLLOW)
            os.dup2(f, fd)
            os.close(f)
        # CPU budget on top of what the setup above used (it counts towards RLIMIT_CPU too).
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = req["cpu_s"] + int(ru.ru_utime + ru.ru_stime) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        os.write(ctl_fd, CTL_READY)  # from here on, whatever happens is the sample's doing
    except BaseException as exc:  # infrastructure failure: the zygote reports "not ready"
        fail(ctl_fd, exc)

    try:
        run_sample(req, shm_write)
    except BaseException:  # e.g. SystemExit raised from a __del__ or a signal handler
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        os.write(ctl_fd, CTL_DONE)
    except BaseException:
        pass
    os._exit(0)


# ---------------------------------------------------------------- the zygote

def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def kill_leftovers(pid, keep):
    """Kill everything the sample may have left behind (with seccomp it cannot fork at all);
    `keep` is the pid of the next sample's process, forked by us while this sample ran."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if CONFIG["pidns"]:
        # In our own PID namespace every process except bwrap's init, us and the next sample's
        # process belongs to a sample.
        me = os.getpid()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in (1, me, keep):
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
    while True:  # reap adopted orphans (we are a child subreaper); never the spare (it is alive)
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def reset_dir(path, keep=()):
    """Empty `path` (not following links), keeping the names in `keep`."""
    for name in os.listdir(path):
        if name in keep:
            continue
        p = os.path.join(path, name)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass


def prepare_workdir():
    """Make <workdir>/s an empty, private, real directory and create empty output files next to
    it (for the next sample's stdout and stderr); remove everything else a sample left."""
    base = CONFIG["workdir"]
    work = os.path.join(base, "s")
    reset_dir(base, keep=("s",))
    if os.path.islink(work) or not os.path.isdir(work):
        try:
            os.unlink(work)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
        os.mkdir(work, 0o700)
    else:
        os.chmod(work, 0o700)
        reset_dir(work)
    drop = os.getuid() == 0 and CONFIG.get("drop_uid")
    if drop:
        os.chown(work, 65534, 65534)
    for name in (".stdout", ".stderr"):
        path = os.path.join(base, name)
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        if drop:
            os.fchown(f, 65534, 65534)
        os.close(f)
    if CONFIG["pidns"] and os.path.isdir("/dev/shm"):
        reset_dir("/dev/shm")
    return work


def read_capped(path, cap):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    try:
        return os.read(fd, cap + 1)
    finally:
        os.close(fd)


ZYGOTE_PID = 0
NULLFD = -1
SPARE = None  # the next sample's process, forked ahead: [pid, pidfd, request pipe, control pipe]


def fork_child():
    """Fork the next sample's process; returns [pid, pidfd, request write end, control read end]."""
    # Move every object to the permanent generation: the child's collector then never walks
    # (and so never copy-on-write faults) the zygote's heap.
    gc.freeze()
    sys.stderr.flush()  # nothing of ours may end up in the sample's stderr
    with open("/proc/self/statm") as f:
        vmsize = int(f.read().split()[0]) * PAGE
    req_r, req_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        run_child(vmsize, req_r, ctl_w)
    os.close(req_r)
    os.close(ctl_w)
    return [pid, os.pidfd_open(pid), req_w, ctl_r]


def has_exited(pidfd):
    return bool(select.select([pidfd], [], [], 0)[0])


def handle(timeout, ready_s, out_cap, payload, outfd):
    """Run one sample on the spare process, reply to the host, then clean up for the next one."""
    global SPARE
    child, SPARE = SPARE, None
    if child is None or has_exited(child[1]):  # the spare died (should not happen): fork anew
        if child is not None:
            for fd in child[1:]:
                os.close(fd)
            try:
                os.waitpid(child[0], 0)
            except ChildProcessError:  # already reaped as an orphan by kill_leftovers
                pass
        child = fork_child()
    pid, pidfd, req_w, ctl_r = child
    struct.pack_into("<QQ", SHM, 0, 0, 0)
    t0 = time.monotonic()
    try:
        write_all(req_w, struct.pack(">I", len(payload)) + payload)
    except OSError:  # the child died before reading: it never reports ready (host retries)
        pass
    os.close(req_w)
    # The next sample's process sets itself up while this one runs.
    SPARE = fork_child()

    # Wait for the child's control bytes, its exit, or the deadline: `ready_s` to get ready (the
    # setup is ours, not the sample's), then `timeout` for the sample itself.
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(ctl_r, select.POLLIN)
    st = {"ready": False, "done": False, "failed": False, "note": b"", "t_ready": t0}

    def take(data):
        if not data:  # every write end closed: the child exited or closed it; stop it
            st["done" if st["ready"] else "failed"] = True
            return False
        if not st["ready"] and not st["failed"]:
            if data[:1] == CTL_READY:
                st["ready"], st["t_ready"], data = True, time.monotonic(), data[1:]
            else:
                st["failed"] = True
                st["note"] = data[1:] if data[:1] == CTL_ERROR else b"garbled control byte"
        if st["ready"] and data:
            st["done"] = True
        return True

    exited = False
    ctl_open = True
    while not (exited or st["done"] or st["failed"]):
        deadline = st["t_ready"] + timeout if st["ready"] else t0 + ready_s
        left = deadline - time.monotonic()
        if left <= 0:
            break
        events = dict(poller.poll(max(1, int(left * 1000 + 0.999))))
        if ctl_r in events:
            ctl_open = take(os.read(ctl_r, 4096))
            if not ctl_open:
                poller.unregister(ctl_r)
                # The pipe closes as the child exits, a moment before its pidfd says so: wait that
                # moment, so that its exit status or signal (not "stopped") is what the host reads.
                # A sample that merely closed the pipe is killed after it.
                exited = exited or bool(select.select([pidfd], [], [], 0.05)[0])
        if pidfd in events:
            exited = True
    if exited and ctl_open and not st["ready"] and select.select([ctl_r], [], [], 0)[0]:
        take(os.read(ctl_r, 4096))  # it wrote "R" (or "E") just before it died
    ready, done, failed = st["ready"], st["done"], st["failed"]
    t_end = time.monotonic()
    timed_out = not (exited or done or failed)
    if not exited:
        exited = has_exited(pidfd)
    status = None
    if exited:  # already gone (a zombie): its status is the truth
        status = os.waitpid(pid, 0)[1]
    else:  # finished (or out of time): stop it now, reap it after replying
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    used, overflow = struct.unpack_from("<QQ", SHM, 0)
    used = min(used, len(SHM) - SHM_HEAD)
    if ready:
        res = bytes(SHM[SHM_HEAD:SHM_HEAD + used])
        out = read_capped(os.path.join(CONFIG["workdir"], ".stdout"), out_cap)
        err = read_capped(os.path.join(CONFIG["workdir"], ".stderr"), out_cap)
    else:
        res, out, err = b"", b"", st["note"][:out_cap]
    flags = ((F_READY if ready else 0) | (F_DONE if done else 0) | (F_TIMED_OUT if timed_out else 0)
             | (F_OVER_CAP if overflow else 0))
    code = 0
    if status is not None:
        if os.WIFEXITED(status):
            flags, code = flags | F_EXITED, os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            flags, code = flags | F_SIGNALED, os.WTERMSIG(status)
    write_all(outfd, REP_HEAD.pack(REP_MAGIC, flags, code, t_end - st["t_ready"], len(res), len(out),
                                   len(err))
              + res + out + err)
    # Clean up after replying, while the host grades: before the next request is read, the
    # sample is dead and reaped, and the work dir is wiped.
    if status is None:
        os.waitpid(pid, 0)
    os.close(pidfd)
    os.close(ctl_r)
    kill_leftovers(pid, SPARE[0])
    prepare_workdir()


def main():
    global BPF, SHM, SPARE, NULLFD, ZYGOTE_PID
    ZYGOTE_PID = os.getpid()
    # Move the protocol off fds 0/1 so that the sample's stdio can never reach the host pipe,
    # and make the zygote undumpable so a same-uid child cannot open /proc/<zygote>/fd/*
    # (children inherit it, so neither can a sample open its spare sibling's).
    infd, outfd = os.dup(0), os.dup(1)
    NULLFD = os.open("/dev/null", os.O_RDWR)
    os.dup2(NULLFD, 0)
    os.dup2(NULLFD, 1)
    # The sample's text streams, made once here (fds 0-2 are re-pointed in each child).
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    if SECCOMP is not None:
        try:
            BPF = prepare_bpf()
        except OSError:
            BPF = None
    SHM = mmap.mmap(-1, SHM_HEAD + CONFIG["result_cap"], flags=mmap.MAP_SHARED)
    prepare_workdir()
    LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    # Children left behind by a sample get re-parented to us, so we can reap them.
    LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 36
    hello = {"seccomp": SECCOMP is not None, "bpf": BPF is not None, "pid": os.getpid(),
             "uid": os.getuid(), "python": sys.version.split()[0], "protocol": 2}
    h = json.dumps(hello).encode()
    SPARE = fork_child()
    write_all(outfd, struct.pack(">I", len(h)) + h)
    while True:
        try:
            magic, timeout, ready_s, out_cap, n = REQ_HEAD.unpack(read_exact(infd, REQ_HEAD.size))
            if magic != REQ_MAGIC:
                return  # not our protocol: leave (the host sees the pipe close and replaces us)
            payload = read_exact(infd, n)
        except (EOFError, OSError):
            return  # host closed the pipe (or died): leave
        handle(timeout, ready_s, out_cap, payload, outfd)


main()
