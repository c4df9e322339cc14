"""Run directories: atomic writes, JSONL append/read, the pinned config, stage done-markers.

Every stage of o1code writes under a run directory and resumes after an interruption without
losing finished work. The rules, in one place:

- **Whole files** (configs, summaries, checkpoints' metadata, assembled models) are written with
  `write_atomic` / `atomic_open`: a temp file in the same directory, fsync, then ``os.replace``; a
  reader sees the old file or the new one, never a torn one.
- **Records** are appended to JSONL files with `append_jsonl`: one write, flush and fsync per call,
  so a call's records reach the disk together and a crash loses no finished record.
- **One torn-last-line rule** (`read_jsonl`): a kill during an append can leave only a last line
  without its newline, or one that does not parse. That line is dropped with a warning; a resuming
  writer passes ``repair=True`` to cut it from the file so the next append starts on a clean line.
  A bad line anywhere else is corruption, not an interruption: `RunDirError` names file and line.
- **Pinned config** (`pin_config`): the first start writes ``config.json``; a resume compares the
  stored settings with the new ones and refuses, naming every differing key, when results would mix.
- **Stage markers** (`mark_done`, `is_done`): ``STAGE.done`` files for multi-stage pipelines; a
  stage that finds its marker is skipped on resume.
- **A loop's commit point** (`ResultLog`): a problem's trajectories, then its result line.
- **One writer** (`lock_run_dir`): every command that owns a run directory holds an exclusive
  ``flock`` on ``RUN/.o1code.lock`` while it runs; a second one stops at once naming the holder's pid.
  The kernel drops the lock when its holder exits or is killed, so a killed run never blocks a resume.

Bottom layer: this module imports only the standard library and `o1code.errors` (and tqdm, for
`ResultLog`'s progress bar).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

from o1code.errors import RunDirError, RunDirLockedError

log = logging.getLogger(__name__)

#: The file a run directory's settings are pinned in.
CONFIG_FILE = "config.json"
#: The file whose ``flock`` marks a run directory's writer (`lock_run_dir`); it holds the writer's pid.
LOCK_FILE = ".o1code.lock"

_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# -- whole files ---------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: not every platform opens directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, perms: int | None = None) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces `path` atomically when the block ends without an exception.

    The bytes go to a temp file in the same directory (created with the usual permissions, i.e.
    0o666 less the umask, or `perms` when given); on a clean exit it is flushed, fsynced and renamed
    over `path`. On an exception (or a kill) `path` is untouched and the temp file is removed (a kill
    may leave a ``NAME.*.tmp`` behind, never a torn `path`).
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 32-bit random collision
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if perms is not None:
            os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` (text as UTF-8, or bytes) to `path` so that a reader sees the old or the new
    file, never a torn one (see `atomic_open`)."""
    with atomic_open(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


# -- JSONL records -------------------------------------------------------------------------------


def _jsonl(records: Iterable[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def append_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Append records to a JSONL file (created if missing) in one write, then flush and fsync:
    a crash loses no finished record, and at worst tears the last line of this call."""
    data = _jsonl(records)
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Replace a JSONL file with `records`, atomically (e.g. to drop the lines of unfinished work)."""
    write_atomic(path, _jsonl(records))


def read_jsonl(path: str | os.PathLike, *, repair: bool = False) -> list[Any]:
    """The records of a JSONL file, in order ([] when the file does not exist).

    The torn-last-line rule: a last line without its trailing newline, or one that does not parse,
    is what an interrupted append leaves; it is dropped with a warning, and ``repair=True`` (a writer
    about to resume appending) also truncates the file to the lines before it. Blank lines are
    skipped. A line that does not parse anywhere else raises `RunDirError` naming file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open("rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    records: list[Any] = []
    good_bytes = 0
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)
        if raw.strip():
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if last:
                    break
                raise RunDirError(f"{path}:{number}: not a JSON record ({exc}); the file is corrupt "
                                  "(not a torn last line): fix or remove that line") from None
            if last and not raw.endswith(b"\n"):
                break  # complete JSON, but the append that wrote it did not finish
            records.append(record)
        good_bytes += len(raw)
    if good_bytes != sum(len(raw) for raw in lines):
        log.warning("dropping a torn line at the end of %s", path)
        if repair:
            with path.open("r+b") as fh:
                fh.truncate(good_bytes)
                fh.flush()
                os.fsync(fh.fileno())
    return records


# -- the pinned config ---------------------------------------------------------------------------


def load_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The settings a run directory is pinned to (its ``config.json``), or None before the first start."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}); remove it or use another --run-dir") from None
    if not isinstance(stored, dict):
        raise RunDirError(f"{path} does not hold a JSON object; remove it or use another --run-dir")
    return stored


def config_changes(stored: Mapping[str, Any], config: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """``"key: old -> new"`` for every key (but those in `ignore`) whose value differs between the
    stored and the new settings; a key on one side only shows ``'(unset)'`` on the other."""
    skip = set(ignore)
    old = {k: v for k, v in stored.items() if k not in skip}
    new = {k: v for k, v in config.items() if k not in skip}
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def pin_config(run_dir: str | os.PathLike, config: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> dict[str, Any] | None:
    """Pin `run_dir` (created if missing) to the JSON-ready settings `config`.

    On the first start ``config.json`` is written. On a resume the stored settings are compared
    with `config` on every key not in `ignore` (settings a resume may change: where output goes,
    which items run, values derived from others); any difference raises `RunDirError` naming each
    differing key with its old and new value, because resuming would mix results. Otherwise
    ``config.json`` is rewritten with `config` (so ignored keys show the latest call). Returns the
    stored settings, or None on a first start.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stored = load_config(run_dir)
    if stored is not None:
        changed = config_changes(stored, config, ignore)
        if changed:
            raise RunDirError(f"{run_dir} holds a run with other settings ({'; '.join(changed)}); resuming would "
                              "mix results: use another --run-dir, or the same settings")
    write_atomic(run_dir / CONFIG_FILE, json.dumps(dict(config), indent=2))
    return stored


def digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative path and content, sorted):
    the identity of an input or output (a model directory, a data file) across runs."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} is missing")
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# -- stage markers -------------------------------------------------------------------------------


def _marker(run_dir: str | os.PathLike, stage: str) -> Path:
    if not isinstance(stage, str) or not _STAGE_NAME.fullmatch(stage):
        raise RunDirError(f"bad stage name {stage!r}: use letters, digits, '.', '_' and '-'")
    return Path(run_dir) / f"{stage}.done"


def mark_done(run_dir: str | os.PathLike, stage: str, info: Mapping[str, Any] | None = None) -> Path:
    """Record that `stage` of the run in `run_dir` finished: an atomic ``STAGE.done`` file holding
    the stage, the time and `info` (JSON-ready) as JSON. Returns the marker's path."""
    path = _marker(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})}
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def is_done(run_dir: str | os.PathLike, stage: str) -> bool:
    """True when `mark_done(run_dir, stage)` has completed."""
    return _marker(run_dir, stage).is_file()


# -- one writer per run directory ----------------------------------------------------------------


@contextlib.contextmanager
def lock_run_dir(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of `run_dir` (created if missing) for the block; yields the lock file.

    Two processes appending to one run directory interleave and duplicate result rows, so every
    command that owns one takes this first. A second taker fails at once with `RunDirLockedError`
    naming the holder's pid. The lock is an ``flock`` on an open file: the kernel releases it when
    the holder exits or is killed (SIGKILL included), so a lock file left behind never blocks a resume.
    """
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"cannot lock {path}: {exc}") from None
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunDirLockedError(
                f"{directory} is in use by another o1code process (pid {holder}); one writer per run "
                "directory: wait for it to finish or stop it, then run this again (it resumes)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


# -- a problem loop's commit point ---------------------------------------------------------------


class ResultLog:
    """The commit point of a loop over problems (the local evaluation and the Ray driver): each finished
    problem's trajectory records, then its result line (the commit point: a resume skips the problems
    that have one), appended to ``RUN/trajectories.jsonl`` and ``RUN/results.jsonl``; then the caller's
    `on_problem` and a progress bar (tqdm, when `progress`) showing Pass@1 over `rows`.

    `rows` is the caller's list (committed rows are appended to it); `todo` the problems still to play,
    of `total`. Use as a context manager, so that the bar closes."""

    def __init__(self, run_dir: str | os.PathLike, rows: list[dict[str, Any]], *, total: int, todo: int, desc: str,
                 progress: bool = True, on_problem: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.results = Path(run_dir) / "results.jsonl"
        self.trajectories = Path(run_dir) / "trajectories.jsonl"
        self.rows = rows
        self.on_problem = on_problem
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=total - todo, desc=desc, unit="problem")

    def commit(self, row: dict[str, Any], trajectories: Iterable[Any] = ()) -> None:
        """Append `trajectories`, then `row` (the commit point); report it."""
        records = list(trajectories)
        if records:
            append_jsonl(self.trajectories, records)
        append_jsonl(self.results, [row])
        self.rows.append(row)
        if self.on_problem is not None:
            self.on_problem(row)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(pass_at_1=f"{sum(r['passed'] for r in self.rows)}/{len(self.rows)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "ResultLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "CONFIG_FILE", "LOCK_FILE", "ResultLog", "append_jsonl", "atomic_open", "config_changes", "digest", "is_done",
    "load_config", "lock_run_dir", "mark_done", "pin_config", "read_jsonl", "write_atomic", "write_jsonl",
]
