"""`o1code ppo` plumbing on the tiny model against the real CodeEnv (learning itself: tests/test_ppo.py),
its settings (PPOConfig's fields forwarded, TOML keys checked, the experiment files), and the trained
policy playing in `o1code eval --agent policy`."""

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from o1code.cli import main
from o1code.cli.config import check_keys, read_toml
from o1code.pipeline.ppo import PPO_FIELDS, PPORunConfig

REPO = Path(__file__).resolve().parents[1]


def test_run_config_forwards_every_ppo_field():
    import subprocess
    import sys

    from o1code.agents.ppo_config import PPOConfig

    ppo = {f.name: f for f in dataclasses.fields(PPOConfig)}
    run = {f.name: f for f in dataclasses.fields(PPORunConfig)}
    assert tuple(ppo) == PPO_FIELDS and set(ppo) <= set(run) and issubclass(PPORunConfig, PPOConfig)
    hints, run_hints = typing.get_type_hints(PPOConfig), typing.get_type_hints(PPORunConfig)
    assert {k: hints[k] for k in ppo} == {k: run_hints[k] for k in ppo}
    # the command line's config layer imports no torch
    code = "import sys, o1code.pipeline.ppo, o1code.cli.ppo; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    cfg = PPORunConfig(algo="grpo", updates=3, kl_coef=0.1, mode="direct", max_steps=6)
    assert cfg.max_steps == 1  # direct mode: one step
    assert cfg.ppo_config() == PPOConfig(**{k: getattr(cfg, k) for k in ppo})
    assert set(cfg.run_settings()) == set(run) - set(ppo)


@pytest.mark.parametrize("name", ["ppo-cpu.toml", "ppo-gpu.toml"])
def test_experiment_files_are_valid(name):
    data = read_toml(REPO / "experiments" / name)
    check_keys(PPORunConfig, data, name)
    cfg = PPORunConfig(**data)
    cfg.ppo_config()  # PPOConfig's own checks
    assert (cfg.device == "cuda") == (name == "ppo-gpu.toml")
    assert cfg.eval_every and cfg.eval_limit and cfg.eval_split == "validation"


def test_grpo_hard_experiment_trains_on_train_problems_and_validates_outside():
    """experiments/grpo-hard-mbpp.toml (issue 27's recipe 3): its task list is train problems, and the
    held-out evaluation is the separate validation run its header gives (none inside the run)."""
    from o1code.pipeline.ppo import train_problems

    data = read_toml(REPO / "experiments" / "grpo-hard-mbpp.toml")
    check_keys(PPORunConfig, data, "grpo-hard-mbpp.toml")
    cfg = PPORunConfig(**data)
    cfg.ppo_config()
    assert len(train_problems(cfg)) == len(cfg.train_tasks) == 72 and cfg.eval_limit == 0
    assert cfg.prompt_style == "instruct" and cfg.tests == "visible" and cfg.mode == "direct"


def test_bad_settings_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('updates = 2\nlearning_rat = 0.1\n')
    assert main(["ppo", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown config keys: learning_rat" in err and "learning_rate" in err
    assert main(["ppo", "--algo", "a2c", "--run-dir", str(tmp_path / "r")]) == 2
    assert main(["ppo", "--eval-split", "train", "--run-dir", str(tmp_path / "r")]) == 2
    assert "held out" in capsys.readouterr().err


def test_ppo_cli_two_updates_then_the_policy_plays_in_eval(tiny_model_dir, tmp_path, capsys):
    pytest.importorskip("peft")
    run = tmp_path / "ppo"
    argv = ["ppo", "--model", str(tiny_model_dir), "--run-dir", str(run), "--mode", "direct", "--train-limit", "2",
            "--updates", "2", "--episodes-per-update", "2", "--max-step-tokens", "6", "--update-epochs", "1",
            "--minibatch-size", "2", "--micro-batch", "2", "--save-every", "1", "--eval-every", "1",
            "--eval-limit", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "Held-out greedy Pass@1" in capsys.readouterr().out
    assert (run / "final" / "policy.json").is_file() and (run / "checkpoint" / "state.pt").is_file()
    assert (run / "curves.png").stat().st_size > 1000 and list((run / "tb").iterdir())
    history = json.loads((run / "history.json").read_text())
    assert [h["update"] for h in history] == [1, 2] and "eval/pass_at_1" in history[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert [e["update"] for e in summary["evals"]] == [0, 1, 2]  # before training, then every update
    assert all(e["problems"] == 1 for e in summary["evals"])
    ev = json.loads((run / "evals" / "update-0002" / "config.json").read_text())
    assert ev["agent"] == "policy" and ev["split"] == "validation" and ev["mode"] == "direct"
    assert json.loads((run / "run.json").read_text())["train_limit"] == 2
    # a changed run setting is refused; more updates resume after the checkpoint
    assert main([*argv, "--train-limit", "3"]) == 2
    assert "train_limit" in capsys.readouterr().err
    assert main([*argv, "--updates", "3"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 3
    assert [e["update"] for e in json.loads((run / "summary.json").read_text())["evals"]] == [0, 1, 2, 3]

    # the trained policy plays in `o1code eval`: greedy decoding through the saved Policy
    out = tmp_path / "eval"
    assert main(["eval", "--agent", "policy", "--model", str(run / "final"), "--mode", "direct", "--split",
                 "validation", "--limit", "2", "--max-step-tokens", "6", "--run-dir", str(out), "--no-progress"]) == 0
    (s,) = json.loads((out / "summary.json").read_text())
    assert s["agent"] == "policy" and s["problems"] == 2 and s["oracle_pass_at_k"] is None
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["steps"] == 1 for r in rows)
    # RUN/adapter is the same policy as a LoRA spec: greedy on BASE+lora:RUN/adapter plays the same code
    assert (run / "adapter" / "adapter_config.json").is_file()
    out2 = tmp_path / "eval-adapter"
    assert main(["eval", "--agent", "greedy", "--model", f"hf:{tiny_model_dir}+lora:{run / 'adapter'}", "--mode",
                 "direct", "--split", "validation", "--limit", "2", "--max-step-tokens", "6", "--run-dir", str(out2),
                 "--no-progress"]) == 0
    rows2 = [json.loads(line) for line in (out2 / "results.jsonl").read_text().splitlines()]
    assert [r["trace"] for r in rows2] == [r["trace"] for r in rows]
    assert main(["eval", "--agent", "policy", "--model", str(tiny_model_dir), "--mode", "direct", "--limit", "1",
                 "--run-dir", str(tmp_path / "e2"), "--no-progress"]) == 2  # not a saved Policy
    assert "--agent greedy" in capsys.readouterr().err  # says what to use for a base model
