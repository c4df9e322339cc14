import os
import stat
import sys
from pathlib import Path

import pytest

# llama.cpp's threads wait for each other at every layer: on a machine that is busy with anything
# else, two threads per test generator crawl (one test took 6 minutes instead of seconds under load).
# One thread keeps the suite's time steady; a caller may still set its own.
os.environ.setdefault("O1CODE_LLAMA_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
# Directories that tools create in $HOME on first use (pip, matplotlib, torch, HF caches).
HOME_TOOL_DIRS = {".cache", ".config", ".local", ".triton", ".nv", ".keras"}


def _host_snapshot() -> dict:
    """Size, mode and mtime of host files a sandbox escape would go for, and a few listings."""
    files = {sys.executable, os.path.realpath(sys.executable), "/bin/sh", "/usr/bin/env",
             "/usr/bin/python3", "/etc/passwd", str(REPO / "pyproject.toml")}
    home = Path.home()
    snap: dict = {}
    for f in sorted(files):
        try:
            st = os.stat(f)
        except OSError:
            snap[f] = None
            continue
        snap[f] = (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    for d in (REPO, Path("/usr"), Path("/usr/bin"), Path("/bin"), home):
        try:
            names = set(os.listdir(d))
        except OSError:
            names = None
        if names is not None and d == REPO:
            names -= {".pytest_cache"}
        if names is not None and d == home:
            names -= HOME_TOOL_DIRS
        snap[f"ls {d}"] = names
    for f in sorted(home.glob(".*")):  # dotfiles such as .bashrc and .profile
        if f.is_file():
            st = f.stat()
            snap[str(f)] = (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return snap


@pytest.fixture(scope="session", autouse=True)
def host_unchanged():
    """The whole run leaves the host as it found it: no test, and no code a test ran in a
    sandbox, changed the interpreter, the shell, system directories, the repo or $HOME."""
    before = _host_snapshot()
    yield
    after = _host_snapshot()
    changed = []
    for k in sorted(set(before) | set(after)):
        b, a = before.get(k), after.get(k)
        if b == a:
            continue
        if isinstance(b, set) and isinstance(a, set):
            changed.append(f"{k}: added {sorted(a - b)}, removed {sorted(b - a)}")
        else:
            changed.append(f"{k}: {b} -> {a}")
    assert not changed, "the test run changed the host:\n" + "\n".join(changed)


# --- the unit layer ---------------------------------------------------------------------------

#: The unit layer (``make test-fast``, ``pytest -m unit``): files that need no model but the tiny in-code
#: one, no Ray and at most a one-worker sandbox; their tests not marked slow get the ``unit`` marker.
#: A new file joins when it is as light (the whole layer: under a minute on 2 busy cores, README).
UNIT_FILES = frozenset({
    "test_agents.py", "test_caches.py", "test_cli.py", "test_data.py", "test_grading_imports.py",
    "test_imports.py", "test_models_base.py", "test_process_reward.py", "test_run_lock.py", "test_runs.py",
    "test_sandbox_grading.py", "test_stats.py", "test_trajectories.py",
})


def pytest_ignore_collect(collection_path, config):
    """With ``-m unit``, do not even import the other test files (collecting them all costs ~20 s)."""
    if config.option.markexpr == "unit" and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in UNIT_FILES
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in UNIT_FILES and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.unit)


# --- o1code.models fixtures -------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Directory of a tiny random-weight Qwen2 causal LM + in-code tokenizer (see o1code.models.tiny)."""
    from o1code.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
