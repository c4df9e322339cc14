"""One writer per run directory (`o1code.runs.lock_run_dir`): a second process stops at once naming the
holder's pid, in the library and in every command that owns a run directory; the lock of a process
killed with SIGKILL never blocks a resume."""

import os
import signal
import subprocess
import sys

import pytest

from o1code.cli import main
from o1code.errors import RunDirLockedError
from o1code.runs import LOCK_FILE, lock_run_dir

HOLD = ("import sys, time\nfrom o1code.runs import lock_run_dir\n"
        "with lock_run_dir(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(300)\n")


@pytest.fixture()
def holder(tmp_path):
    """A second process holding the lock of ``tmp_path/run``."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_fails_at_once_naming_the_holder_and_a_killed_holder_blocks_nothing(holder):
    run, proc = holder
    with pytest.raises(RunDirLockedError, match=f"in use by another o1code process \\(pid {proc.pid}\\)"):
        with lock_run_dir(run):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # the file stays; the flock went with it
    with lock_run_dir(run) as path:  # the resume proceeds
        assert path.read_text().strip() == str(os.getpid())
    with lock_run_dir(run):  # released at the end of the block
        pass


@pytest.mark.parametrize("command", [["eval", "--limit", "1"], ["tcg", "train"], ["tcg", "eval"], ["prm", "collect"],
                                     ["prm", "train"], ["prm", "eval"], ["sft"], ["ppo"], ["selfplay"]],
                         ids=" ".join)
def test_every_command_that_owns_a_run_directory_takes_its_lock(holder, command, capsys):
    run, proc = holder
    flag = "--out-dir" if command == ["tcg", "train"] else "--run-dir"
    assert main([*command, flag, str(run)]) == 2
    assert f"pid {proc.pid}" in capsys.readouterr().err
