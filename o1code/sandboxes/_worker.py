"""The sandbox worker ("zygote"): runs INSIDE the isolation, stdlib only, self-contained.

The host never imports this module: it reads this file as text and starts it with
``python -I -S -B -c <source> <config-json>``, so the project directory never has to be visible
inside the sandbox. The zygote pre-imports common modules once, then for every sample forks a
fresh child (a fork costs ~1 ms, a new interpreter ~30 ms). The child is forked *ahead* of its
request, while the host grades the previous sample; it applies rlimits and a seccomp filter, then
waits for the request, runs the solution and evaluates only the call sub-expressions the host
sent. It never sees expected values and never decides pass/fail.

Wire format, host -> zygote: ``u32 length`` + JSON request (code, setup, exprs, timeout, cpu_s).
Zygote -> host: ``u32 length`` + JSON header (``{"n": [len_results, len_stdout, len_stderr], ...}``)
followed by those three raw byte strings. The result bytes are what the child wrote into the
shared result buffer, forwarded untouched: the child runs untrusted code, so the host parses them
strictly. One line each: ``R`` (ready: our setup is done), then ``{"p": "code"|"setup"[, "e": err]}``
and ``{"c": i, "v": value | "e": [kind, type, message], "t": seconds}`` per call expression.
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


BPF = None


def install_seccomp(pid):
    """Install the child's filter; raises OSError on failure (the child then never reports ready)."""
    if BPF is not None:
        raw, slots, n = BPF  # the child's own copy (fork): patch the pid in place
        for off in slots:
            struct.pack_into("<I", raw, off, pid)
        buf = (ctypes.c_char * len(raw)).from_buffer(raw)
        prog = SockFprog(n, ctypes.addressof(buf))
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


def shm_write(data, _unpack=struct.unpack_from, _pack=struct.pack_into, _len=len):
    shm = SHM
    used = _unpack("<Q", shm, 0)[0]
    end = SHM_HEAD + used + _len(data)
    if end > _len(shm):
        _pack("<Q", shm, 8, 1)
        raise MemoryError("result buffer full")
    shm[SHM_HEAD + used:end] = data
    _pack("<Q", shm, 0, used + _len(data))


def run_child(vmsize, workdir, req_fd):
    """Runs in the forked child. Never returns: always ends with os._exit.

    The child is forked ahead of time (while the host grades the previous sample): it sets up
    everything that does not depend on the request, then blocks reading the request from `req_fd`.
    """
    try:
        os.setsid()  # own session and process group, so the zygote can kill all of it at once
        LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the zygote
        for fd in CONFIG["close_fds"]:  # the host protocol pipes: never reachable by the sample
            try:
                os.close(fd)
            except OSError:
                pass
        os.chdir(workdir)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            path = os.path.join(CONFIG["workdir"], "." + name)
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.dup2(f, fd)
            os.close(f)
        if os.getuid() == 0 and CONFIG.get("drop_uid"):
            # Without a user namespace the zygote may be real root: the sample must not be.
            os.chown(workdir, 65534, 65534)
            for name in (".stdout", ".stderr"):
                os.chown(os.path.join(CONFIG["workdir"], name), 65534, 65534)
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
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stdin = open(0, "r", closefd=False)
        (n,) = struct.unpack(">I", read_exact(req_fd, 4))
        req = json.loads(read_exact(req_fd, n))
        os.close(req_fd)
        resource.setrlimit(resource.RLIMIT_CPU, (req["cpu_s"], req["cpu_s"]))
        shm_write(b"R\n")  # from here on, whatever happens is the sample's doing
    except BaseException as exc:  # infrastructure failure: the zygote reports "not ready"
        try:
            os.write(2, repr(exc).encode()[:500])
        finally:
            os._exit(3)

    try:
        run_sample(req, shm_write)
    except BaseException:  # e.g. SystemExit raised from a __del__ or a signal handler
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
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


def kill_leftovers(pid):
    """Kill everything the sample may have left behind (with seccomp it cannot fork at all)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if CONFIG["pidns"]:
        # In our own PID namespace every process except bwrap's init and us belongs to a sample.
        me = os.getpid()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in (1, me):
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
    while True:  # reap adopted orphans (we are a child subreaper)
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
    """Make <workdir>/s an empty, private, real directory; remove everything else a sample left."""
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


NEXT = None  # the pre-forked child: (pid, pidfd, request pipe)


def prefork():
    """Fork the next child now, so the fork and its setup overlap with the host's grading."""
    workdir = os.path.join(CONFIG["workdir"], "s")
    struct.pack_into("<QQ", SHM, 0, 0, 0)
    # Move every object to the permanent generation: the child's collector then never walks
    # (and so never copy-on-write faults) the zygote's heap.
    gc.freeze()
    with open("/proc/self/statm") as f:
        vmsize = int(f.read().split()[0]) * PAGE
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        run_child(vmsize, workdir, r)
    os.close(r)
    return pid, os.pidfd_open(pid), w


def handle(req, outfd):
    global NEXT
    if NEXT is None:
        NEXT = prefork()
    (pid, pidfd, w), NEXT = NEXT, None
    t0 = time.monotonic()
    body = json.dumps(req).encode()
    try:
        write_all(w, struct.pack(">I", len(body)) + body)
    except OSError:  # the child died before reading: it never reports ready (host retries)
        pass
    os.close(w)
    # One wake-up per sample: when the child exits, or at the deadline.
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    exited = bool(poller.poll(max(0, int(req["timeout"] * 1000))))
    if not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    t_wait = time.monotonic()
    used, overflow = struct.unpack_from("<QQ", SHM, 0)
    used = min(used, len(SHM) - SHM_HEAD)
    res = bytes(SHM[SHM_HEAD:SHM_HEAD + used])
    out_cap = req["output_cap"]
    out = read_capped(os.path.join(CONFIG["workdir"], ".stdout"), out_cap)
    err = read_capped(os.path.join(CONFIG["workdir"], ".stderr"), out_cap)
    header = {
        "timed_out": not exited,
        "over_cap": bool(overflow),
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "seconds": t_wait - t0,
        "prof": [t_wait - t0, time.monotonic() - t_wait],  # diagnostics: run, collect seconds
        "n": [len(res), len(out), len(err)],
    }
    h = json.dumps(header).encode()
    write_all(outfd, struct.pack(">I", len(h)) + h + res + out + err)
    # Clean up after replying, while the host grades: the next sample is only forked after this.
    kill_leftovers(pid)
    prepare_workdir()
    NEXT = prefork()


def main():
    global BPF, SHM, NEXT
    # Move the protocol off fds 0/1 so that the sample's stdio can never reach the host pipe,
    # and make the zygote undumpable so a same-uid child cannot open /proc/<zygote>/fd/*.
    infd, outfd = os.dup(0), os.dup(1)
    CONFIG["close_fds"] = [infd, outfd]
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    if SECCOMP is not None:
        try:
            BPF = prebuild_bpf()
        except OSError:
            BPF = None
    SHM = mmap.mmap(-1, SHM_HEAD + CONFIG["result_cap"], flags=mmap.MAP_SHARED)
    prepare_workdir()
    LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    # Children left behind by a sample get re-parented to us, so we can reap them.
    LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 36
    hello = {"seccomp": SECCOMP is not None, "bpf": BPF is not None, "pid": os.getpid(),
             "uid": os.getuid(), "python": sys.version.split()[0]}
    h = json.dumps(hello).encode()
    write_all(outfd, struct.pack(">I", len(h)) + h)
    NEXT = prefork()
    while True:
        try:
            (n,) = struct.unpack(">I", read_exact(infd, 4))
            req = json.loads(read_exact(infd, n))
        except (EOFError, OSError):
            return  # host closed the pipe (or died): leave
        handle(req, outfd)


main()
