"""The `o1code` console script: help, problems list/show, errors."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from o1code.agents import MCTSConfig
from o1code.cli import main
from o1code.pipeline import EvalConfig


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


# -- errors: one line on stderr, never a traceback ----------------------------------------------


def test_every_o1code_error_is_one_line_and_exit_2(capsys, tmp_path):
    # TCGError (a RewardError) used to escape main() with a traceback.
    assert main(["tcg", "eval", "--k", "0", "--run-dir", str(tmp_path / "tcg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("o1code: error: ") and "k, n_samples and max_tests must be >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_error_has_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "o1code"
    out = subprocess.run([str(exe), "tcg", "eval", "--k", "0", "--run-dir", str(tmp_path / "tcg")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("o1code: error: ") and "Traceback" not in out.stderr


def test_a_refused_resume_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**asdict(EvalConfig(mode="vanilla")), "oracle": False}))
    rc = main(["eval", "--agent", "greedy", "--mode", "direct", "--limit", "1", "--run-dir", str(tmp_path),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "other settings" in err and "mode: 'vanilla' -> 'direct'" in err and "Traceback" not in err


def test_interrupt_exits_130_with_a_resume_hint(capsys, monkeypatch, tmp_path):
    import o1code.cli.eval

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(o1code.cli.eval, "run_eval", interrupted)
    assert main(["eval", "--limit", "1", "--run-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err


# -- one config story: dataclass defaults, flags, --config files ----------------------------------


def test_eval_flags_come_from_eval_config(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"MCTS rollouts per problem (default: {MCTSConfig.rollouts})" in out
    assert f"(default: {EvalConfig.run_dir})" in out and "--time-budget S" in out
    # EvalConfig re-declares nothing: its search and sampling defaults are MCTSConfig's
    for name in ("rollouts", "children", "exploration", "temperature", "top_p", "top_k", "max_step_tokens",
                 "time_budget_s", "keep_best_terminal"):
        assert getattr(EvalConfig(), name) == getattr(MCTSConfig(), name)


def test_eval_limit_and_tasks_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--limit", "2", "--tasks", "mbpp/11", "--dry-run"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_eval_config_runs_and_flags(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'run_dir = "{tmp_path / "table"}"\nrollouts = 5\ntemperature = 0.5\n'
                   '[[runs]]\nagent = "greedy"\nmode = "direct"\n[[runs]]\nagent = "mcts"\nmode = "pseudocode"\n')
    assert main(["eval", "--config", str(cfg), "--tasks", "mbpp/11,mbpp/12", "--no-sanitized", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-> " + str(tmp_path / "table" / "greedy-direct") in out and out.strip().endswith("-- 2 runs")
    from o1code.cli import build_parser
    from o1code.cli.eval import eval_grid

    args = build_parser().parse_args(["eval", "--config", str(cfg), "--tasks", "mbpp/11, mbpp/12", "--rollouts", "7"])
    assert [(r.agent, r.tasks, r.rollouts, r.temperature, r.children) for r in eval_grid(args)] == [
        ("greedy", ["mbpp/11", "mbpp/12"], 7, 0.5, MCTSConfig.children),
        ("mcts", ["mbpp/11", "mbpp/12"], 7, 0.5, MCTSConfig.children)]


def test_eval_config_file_runs_write_the_combined_report_in_their_parent(capsys, monkeypatch, tmp_path):
    import o1code.cli.eval

    cfg = tmp_path / "c.toml"
    cfg.write_text('limit = 1\nrun_dir = "in-file"\n[[runs]]\nagent = "greedy"\n[[runs]]\nagent = "sample"\n')
    reports = []
    monkeypatch.setattr(o1code.cli.eval, "run_eval", lambda cfg, progress: {"run_dir": cfg.run_dir})
    monkeypatch.setattr(o1code.cli.eval, "markdown_table", lambda summaries: "table")
    monkeypatch.setattr(o1code.cli.eval, "write_report", lambda root, summaries: reports.append((root, summaries)))
    assert main(["eval", "--config", str(cfg), "--run-dir", str(tmp_path / "table")]) == 0
    assert reports == [(tmp_path / "table", [{"run_dir": str(tmp_path / "table" / "greedy")},
                                             {"run_dir": str(tmp_path / "table" / "sample")}])]


def test_unknown_config_key_names_the_valid_ones(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[runs]]\nagent = "greedy"\nrolouts = 3\n')
    assert main(["eval", "--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "[[runs]] #1: unknown config keys: rolouts" in err and "valid keys: agent, mode," in err
    cfg.write_text("limit = 1\nrolouts = 3\n")
    assert main(["demo", "--config", str(cfg)]) == 2
    assert "unknown config keys: rolouts (valid keys: limit, model, rollouts, seed, run_dir)" in capsys.readouterr().err


def test_demo_settings_come_from_demo_config(monkeypatch, tmp_path):
    import o1code.pipeline.demo
    from o1code.pipeline.demo import DemoConfig

    calls = []
    monkeypatch.setattr(o1code.pipeline.demo, "run_demo", lambda **kw: calls.append(kw) or 0)
    assert main(["demo"]) == 0
    cfg = tmp_path / "demo.toml"
    cfg.write_text('rollouts = 2\nmodel = "hf:x"\n')
    assert main(["demo", "--config", str(cfg), "--model", "hf:y", "--limit", "1"]) == 0
    assert calls == [asdict(DemoConfig()), {**asdict(DemoConfig()), "rollouts": 2, "model": "hf:y", "limit": 1}]


def test_dataclass_flag_helper():
    import argparse
    from dataclasses import dataclass, field

    from o1code.cli.config import add_config_flags, config_from_args

    @dataclass
    class Toy:
        """A toy.

        Attributes:
            rate: Ignored: the field's metadata wins.
            ids, name: Documented together,
                over two lines.
            flag: A switch.

        More text.
        """

        rate: float = field(default=0.5, metadata={"help": "a 50% rate"})
        ids: list[int] | None = None
        name: str = field(default="x", metadata={"choices": ("x", "y"), "flags": ("-n", "--the-name")})
        flag: bool = True

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_flags(parser, Toy)
    text = " ".join(parser.format_help().split())
    assert "a 50% rate (default: 0.5)" in text and "Ignored" not in text
    assert "--ids IDS Documented together, over two lines." in text and "A switch. (default: True)" in text
    assert config_from_args(Toy, parser.parse_args([])) == Toy()
    args = parser.parse_args(["--ids", "1,2", "-n", "y", "--no-flag", "--rate", "2"])
    assert config_from_args(Toy, args) == Toy(rate=2.0, ids=[1, 2], name="y", flag=False)


def test_tcg_flags_come_from_the_config_dataclasses(capsys, tmp_path):
    from o1code.pipeline.tcg import TCGEvalConfig, TCGTrainConfig
    from o1code.rewards import TCGConfig

    with pytest.raises(SystemExit):
        main(["tcg", "train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"checkpoint every N steps (default: {TCGTrainConfig.save_steps})" in out
    assert "--lr LEARNING_RATE, --learning-rate LEARNING_RATE" in out and "--full" in out and "--config TOML" in out
    with pytest.raises(SystemExit):
        main(["tcg", "eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {TCGConfig.k})" in out and f"(default: {TCGEvalConfig.run_dir})" in out
    assert "--problems JSONL, --problems-jsonl JSONL" in out and "--cache-dir" not in out
    assert out.count("--timeout-s") == 2  # usage + option: the eval's own, once
    cfg = tmp_path / "tcg.toml"
    cfg.write_text("[tcg]\nkk = 1\n")
    assert main(["tcg", "eval", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("o1code: error: ") and "[tcg]: unknown config keys: kk (valid keys: k," in err
