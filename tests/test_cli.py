"""The `o1code` console script: help, problems list/show, errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from o1code.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "problems" in out and "demo" in out


def test_problems_list(capsys):
    assert main(["problems", "list", "--split", "test", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:5]] == [f"mbpp/{i}" for i in range(11, 16)]
    assert lines[-1] == "-- 5 of 500 problems"


def test_problems_show(capsys):
    assert main(["problems", "show", "mbpp/11"]) == 0
    out = capsys.readouterr().out
    assert "remove_Occ" in out and 'assert remove_Occ("hello","l") == "heo"' in out


def test_problems_show_unknown_is_a_clear_error(capsys):
    assert main(["problems", "show", "mbpp/0"]) == 2
    assert "no problem 'mbpp/0'" in capsys.readouterr().err


def test_console_script_installed():
    exe = Path(sys.executable).parent / "o1code"
    out = subprocess.run([str(exe), "problems", "list", "--limit", "1"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mbpp/11")


def test_data_ships_inside_the_package():
    out = subprocess.run(
        [sys.executable, "-c", "from o1code.data import load_mbpp; print(len(load_mbpp('test')))"],
        capture_output=True, text=True, check=True, cwd="/",
    )
    assert out.stdout.strip() == "500"
