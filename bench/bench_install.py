"""Benchmark what a fresh machine's first install spends building llama-cpp-python (prints figures).

llama-cpp-python ships no CPU wheel on PyPI, so a machine without pip's wheel cache compiles it from
its sdist. This times that build for each set of ``CMAKE_ARGS``, with no pip cache, from one sdist
downloaded once, and checks that each wheel it builds plays the default model to the same greedy
text as the binding installed in this venv:

    .venv/bin/python bench/bench_install.py        # no CMAKE_ARGS vs -DLLAVA_BUILD=OFF vs the Makefile's
    .venv/bin/python bench/bench_install.py --variants LLAVA_BUILD=OFF "LLAVA_BUILD=OFF GGML_OPENMP=OFF"

A variant is a space-separated list of CMake definitions without their ``-D`` (``none``: no CMAKE_ARGS;
``makefile``: the Makefile's default, which also skips llama.cpp's common library through
``cmake/llama_cpp_no_common.cmake``).

``--full`` instead times the whole ``make .venv/.installed`` of a fresh clone of this repository
with pip's cache turned off, as a new user's first ``make test`` or ``make demo`` pays it; an empty
``CMAKE_ARGS=`` in the environment replaces the Makefile's default (the "before" of its figure).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Greedy text of the default model through whichever `llama_cpp` is first on sys.path.
PLAY = """
import json, llama_cpp
from o1code.models import SamplingParams, load_generator
gen = load_generator("default", backend="llamacpp")
c = gen.generate(["Write a Python function that merges two sorted lists."],
                 SamplingParams(temperature=0, max_tokens=48))[0][0]
print(json.dumps({"module": llama_cpp.__file__, "text": c.text}))
"""


def fetch_sdist(version: str, dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-cache-dir", "--no-deps",
                    "--no-binary", "llama-cpp-python", "-d", str(dest), f"llama-cpp-python=={version}"], check=True)
    return next(dest.glob("llama_cpp_python-*.tar.gz"))


def play(pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", PLAY], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build(sdist: Path, cmake_args: str, jobs: str, work: Path) -> dict:
    """Build one wheel with no pip cache; return its seconds and size, and what it plays."""
    out = work / "wheel"
    env = dict(os.environ, CMAKE_ARGS=cmake_args, PIP_NO_CACHE_DIR="1")
    if jobs:
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = jobs
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(sdist)],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"seconds": seconds, "error": proc.stderr[-2000:]}
    wheel = next(out.glob("*.whl"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    return {"seconds": seconds, "wheel_mb": wheel.stat().st_size / 2**20, **play(str(target))}


def bench_builds(args: argparse.Namespace) -> None:
    version = args.version or importlib.metadata.version("llama-cpp-python")
    reference = play(None)
    print(f"llama-cpp-python {version}; installed binding: {reference['module']}")
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        t0 = time.perf_counter()
        sdist = fetch_sdist(version, Path(tmp))
        print(f"sdist download: {time.perf_counter() - t0:.1f} s ({sdist.stat().st_size / 2**20:.0f} MB)")
        rows = []
        makefile = f"LLAVA_BUILD=OFF CMAKE_PROJECT_llama.cpp_INCLUDE={ROOT / 'cmake' / 'llama_cpp_no_common.cmake'}"
        variants = ["" if v == "none" else " ".join(f"-D{d}" for d in (makefile if v == "makefile" else v).split())
                    for v in args.variants]
        for jobs in args.jobs.split(","):
            for variant in variants:
                times = []
                for rep in range(args.reps):
                    work = Path(tmp) / f"build-{len(rows)}-{rep}"
                    res = build(sdist, variant, jobs, work)
                    shutil.rmtree(work, ignore_errors=True)
                    if "error" in res:
                        print(f"  CMAKE_ARGS={variant!r} jobs={jobs or 'default'}: FAILED\n{res['error']}")
                        break
                    times.append(res["seconds"])
                    same = res["text"] == reference["text"]
                    print(f"  CMAKE_ARGS={variant!r} jobs={jobs or 'default'} rep {rep}: {res['seconds']:.0f} s, "
                          f"wheel {res['wheel_mb']:.1f} MB, plays {'the same' if same else 'OTHER'} text "
                          f"({res['module']})", flush=True)
                if times:
                    rows.append((variant, jobs, statistics.median(times)))
    base = rows[0][2] if rows else None
    print("\n| CMAKE_ARGS | build jobs | build s (median) | vs first |\n|---|---|---|---|")
    for variant, jobs, sec in rows:
        print(f"| `{variant or '(none)'}` | {jobs or 'default'} | {sec:.0f} | x{base / sec:.2f} |")


def bench_full() -> None:
    """Time `make .venv/.installed` in a fresh clone with pip's cache off: a new user's first install."""
    with tempfile.TemporaryDirectory(prefix="bench-install-full-") as tmp:
        clone = Path(tmp) / "o1code"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, PIP_NO_CACHE_DIR="1")
        env.pop("VIRTUAL_ENV", None)
        t0 = time.perf_counter()
        subprocess.run(["make", ".venv/.installed"], cwd=clone, env=env, check=True)
        print(f"fresh clone, no pip cache: make .venv/.installed took {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["none", "LLAVA_BUILD=OFF", "makefile"],
                    help="CMake definitions (without -D; 'none' for no CMAKE_ARGS) to build with, in order; "
                         "the first is the baseline")
    ap.add_argument("--jobs", default="", help="comma-separated CMAKE_BUILD_PARALLEL_LEVEL values ('' = unset)")
    ap.add_argument("--reps", type=int, default=1, help="builds per variant (median reported)")
    ap.add_argument("--version", help="llama-cpp-python version (default: the one installed here)")
    ap.add_argument("--full", action="store_true", help="time a fresh clone's whole install instead")
    args = ap.parse_args()
    bench_full() if args.full else bench_builds(args)


if __name__ == "__main__":
    main()
