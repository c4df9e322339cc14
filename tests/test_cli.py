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


def test_eval_dry_run_lists_the_table1_grid(capsys):
    assert main(["eval", "--config", "experiments/table1.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("-- 8 runs")
    assert "pseudocode  vllm:Qwen/Qwen2.5-Coder-7B-Instruct" in out and "runs/table1/vanilla-" in out


def test_eval_flags_override_the_config_file(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('agent = "greedy"\nmode = "direct"\nlimit = 3\nrun_dir = "x"\n')
    assert main(["eval", "--config", str(cfg), "--mode", "vanilla", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("greedy  vanilla")


def test_eval_bad_config_is_a_clear_error(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('agent = "greedy"\nrolouts = 3\n')
    assert main(["eval", "--config", str(cfg), "--dry-run"]) == 2
    assert "unknown config keys: rolouts" in capsys.readouterr().err
    assert main(["eval", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_eval_unknown_model_spec_is_a_clear_error(capsys, tmp_path):
    assert main(["eval", "--model", "nonsense:thing", "--limit", "1", "--run-dir", str(tmp_path), "--no-progress"]) == 2
    assert "model spec" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo"], ["eval", "--agent", "greedy", "--mode", "direct", "--limit", "1"]])
def test_commands_stop_when_no_sandbox_can_confine(argv, tmp_path, monkeypatch, capsys):
    # bwrap made unusable: the command stops with the sandbox's explanation, before any model
    # loads or any code runs, and without a traceback.
    monkeypatch.setenv("O1CODE_BWRAP", str(tmp_path / "no-bwrap"))
    monkeypatch.delenv("O1CODE_SANDBOX", raising=False)
    monkeypatch.chdir(tmp_path)
    rc = main([*argv, "--model", "hf:/does/not/exist", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no confining sandbox is available" in err and "O1CODE_SANDBOX=unsafe" in err
    assert "Traceback" not in err and "does/not/exist" not in err
    assert not (tmp_path / "run" / "results.jsonl").exists()
