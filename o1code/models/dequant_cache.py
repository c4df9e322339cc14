"""A disk cache of GGUF files as transformers dequantizes them, so each GGUF is dequantized once.

Loading a GGUF into transformers is slow for reasons that have nothing to do with the weights: it
parses the file's metadata in Python (three times: config, tokenizer, weights) and rebuilds
gguf-py's tensor-name map for every module. The default model takes ~41 s (12 s tokenizer,
29 s weights) on 2 cores; the same model saved as float32 safetensors loads in under a second.
Self-play loads it in every training stage, and so do the tests.

`o1code.models.hub` stores the first load of a local GGUF here (the weights in float32, as
transformers dequantized them, bit for bit, and the tokenizer) and loads later ones from here in
the dtype asked for. An entry is keyed by the transformers version (a new dequantizer is a new entry)
and by the GGUF's content: its sha256 when this process verified it (the default models, see
`o1code.models.default.verified_sha256`, so every clone and every ``$O1CODE_CACHE/models`` copy shares
one entry), else its path, size, mtime and inode (a rewritten file is a new entry; hashing a GGUF to
key it would cost seconds per load). Entries are written
to a temporary name and renamed into place, so a killed writer leaves nothing half-written.

``$O1CODE_DEQUANT_CACHE_GB`` bounds the cache's size (default 8): least recently used entries are
removed past it, a GGUF whose float32 copy could exceed it is never cached (a 7B model), and 0
turns the cache off. It lives in ``$O1CODE_CACHE/dequantized`` (`o1code.caches`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

from o1code.caches import cache_dir

from .default import verified_sha256
from .errors import InvalidParamsError

log = logging.getLogger(__name__)

LIMIT_ENV = "O1CODE_DEQUANT_CACHE_GB"
DEFAULT_LIMIT_GB = 8.0
#: Every GGUF type stores at least 4 bits per weight (Q4_0 is 4.5 with its scales), so float32 is at
#: most 8x the file: the bound used to skip files that could not fit before dequantizing them.
FLOAT32_PER_FILE_BYTE = 8
_FORMAT = "1"  # bump when what an entry holds changes
_USED = ".used"  # touched on every hit: the LRU clock


def cache_root() -> Path:
    """``$O1CODE_CACHE/dequantized`` (default ``~/.cache/o1code/dequantized``)."""
    return cache_dir("dequantized")


def limit_bytes() -> int:
    """The cache's size bound from ``$O1CODE_DEQUANT_CACHE_GB`` (0: off). Raises `InvalidParamsError`
    for a value that is not a non-negative number."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_LIMIT_GB
    except ValueError:
        gb = -1.0
    if not gb >= 0:  # also NaN
        raise InvalidParamsError(f"{LIMIT_ENV}={raw!r}: expected a size in GB (0 turns the cache off)")
    return int(gb * 2**30)


def entry_dir(gguf: Path) -> Path | None:
    """The cache entry of `gguf` (a local file), or None when the cache is off or the file's float32
    copy could exceed the bound."""
    limit = limit_bytes()
    st = gguf.stat()
    if limit == 0 or st.st_size * FLOAT32_PER_FILE_BYTE > limit:
        return None
    import transformers

    def entry(*file_key: str) -> Path:
        key = "\0".join([_FORMAT, *file_key, transformers.__version__])
        return cache_root() / f"{gguf.stem[:48]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    by_file = entry(str(gguf.resolve()), str(st.st_size), str(st.st_mtime_ns), str(st.st_ino))
    sha256 = verified_sha256(gguf)
    if sha256 is None:
        return by_file
    by_content = entry(f"sha256:{sha256}")
    if by_file.is_dir() and not by_content.exists():  # stored before content keys: take it over, once
        try:
            os.rename(by_file, by_content)
        except OSError:
            pass
    return by_content


def lookup(entry: Path, part: str) -> Path | None:
    """``entry/part`` (``"model"`` or ``"tokenizer"``) when it has been stored, marking the entry used."""
    path = entry / part
    if not path.is_dir():
        return None
    try:
        (entry / _USED).touch()
    except OSError:
        pass
    return path


def discard(entry: Path, part: str) -> None:
    """Remove a part that failed to load, so the next load stores it again."""
    shutil.rmtree(entry / part, ignore_errors=True)


def store(entry: Path, part: str, save: Callable[[Path], object]) -> Path | None:
    """Write ``entry/part`` with ``save(directory)`` (e.g. ``model.save_pretrained``) under a temporary
    name, rename it into place, then evict past the bound. Returns the stored part, or None when it
    could not be written (logged: the cache is an optimisation, never a reason to fail a load)."""
    tmp = entry / f".{part}.{uuid.uuid4().hex}.tmp"
    try:
        entry.mkdir(parents=True, exist_ok=True)
        save(tmp)
        try:
            os.rename(tmp, entry / part)
        except OSError:  # another process stored it first: theirs is as good as ours
            if not (entry / part).is_dir():
                raise
        (entry / _USED).touch()
    except Exception as exc:  # disk full, read-only cache, ...: load on without the cache
        log.warning("could not cache the dequantized GGUF in %s: %s", entry, exc)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    evict(keep=entry)
    return entry / part


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _being_written(entry: Path) -> bool:
    # A temporary part younger than an hour: another process is saving into this entry now (one
    # killed mid-save leaves an older one behind, which does not protect the entry forever).
    try:
        return any(p.name.endswith(".tmp") and time.time() - p.stat().st_mtime < 3600 for p in entry.iterdir())
    except OSError:
        return False


def evict(keep: Path | None = None) -> list[Path]:
    """Remove least recently used entries until the cache fits its bound; `keep` (the entry just
    written) goes last, and only when it alone exceeds the bound. Returns the removed entries."""
    root, limit = cache_root(), limit_bytes()
    if not root.is_dir():
        return []

    def last_used(e: Path) -> float:
        try:
            return (e / _USED).stat().st_mtime
        except OSError:
            return 0.0

    entries = sorted((e for e in root.iterdir() if e.is_dir()), key=lambda e: (e == keep, last_used(e)))
    sizes = {e: _size(e) for e in entries}
    total, removed = sum(sizes.values()), []
    for e in entries:
        if total <= limit:
            break
        if e != keep and _being_written(e):
            continue
        shutil.rmtree(e, ignore_errors=True)
        total -= sizes[e]
        removed.append(e)
        log.info("dequantized GGUF cache: removed %s (%.1f GB) to stay under %s=%.1f", e.name,
                 sizes[e] / 2**30, LIMIT_ENV, limit / 2**30)
    return removed
