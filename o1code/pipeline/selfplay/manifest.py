"""Self-play's records on disk: each stage's verified manifest and done-marker, and the clock that sums
a stage's seconds over every attempt."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from o1code.pipeline.errors import PipelineError
from o1code.pipeline.selfplay.config import Stage
from o1code.runs import digest, is_done, mark_done, write_atomic

def _hashes(paths: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    return {k: {"path": str(p), "sha256": digest(Path(p))} for k, p in paths.items()}


def read_manifest(run: Path, stage: Stage) -> dict[str, Any] | None:
    """The manifest of a finished stage, verified (marker, manifest hash, every output's hash); None
    when the stage has not finished. Raises `PipelineError` when a finished stage no longer verifies."""
    d = stage.dir(run)
    if not is_done(d, "stage"):
        return None
    marker = json.loads((d / "stage.done").read_text())
    path = d / "manifest.json"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != marker.get("manifest_sha256"):
        raise PipelineError(f"{path} does not match its done-marker: redo it with --from {stage.key}")
    manifest = json.loads(path.read_text())
    for name, out in manifest["outputs"].items():
        if not Path(out["path"]).exists() or digest(Path(out["path"])) != out["sha256"]:
            raise PipelineError(f"output {name} of stage {stage.key} ({out['path']}) changed since it finished: "
                                f"redo it with --from {stage.key}")
    return manifest


def _finish(run: Path, stage: Stage, config: Any, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
            figures: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    d = stage.dir(run)
    manifest = {"stage": stage.name, "iteration": stage.iteration,
                "config": asdict(config) if dataclasses.is_dataclass(config) else dict(config),
                "inputs": _hashes(inputs), "outputs": _hashes(outputs), "seconds": round(seconds, 2),
                "figures": dict(figures)}
    text = json.dumps(manifest, indent=2, default=str)
    write_atomic(d / "manifest.json", text)
    mark_done(d, "stage", {"manifest_sha256": hashlib.sha256(text.encode()).hexdigest()})  # last
    return manifest


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class StageClock:
    """The seconds a stage has run, summed over every attempt: a daemon thread rewrites
    ``STAGE/elapsed.json`` every `every` seconds, so an attempt killed with SIGKILL loses at most that
    much of its time, and the next attempt starts from what the file says."""

    FILE = "elapsed.json"

    def __init__(self, directory: Path, every: float = 30.0) -> None:
        self.path = directory / self.FILE
        self.before = float(json.loads(self.path.read_text())["seconds"]) if self.path.is_file() else 0.0
        self.every = every
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="selfplay-stage-clock")

    def seconds(self) -> float:
        """Seconds of the earlier attempts plus this one's so far."""
        return self.before + time.perf_counter() - self.started

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"seconds": round(self.seconds(), 1)}))

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self) -> "StageClock":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._write()
