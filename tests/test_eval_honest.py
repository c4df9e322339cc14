"""Honest evaluation: reward tests are not judging tests; oracle runs say so; runs resume exactly."""

import ast
import json

import pytest

from o1code.agents import problem_seed
from o1code.data import load_mbpp
from o1code.models import Completion
from o1code.pipeline import EvalConfig, PipelineError, run_eval
from o1code.rewards import DatasetTests, VisibleTests

TASKS = [f"mbpp/{i}" for i in range(11, 19)]


def cheat_for(visible_test: str) -> str:
    """Code that answers exactly the visible test's call and nothing else."""
    call, expected = ast.parse(visible_test).body[0].test.left, ast.parse(visible_test).body[0].test.comparators[0]
    args = ", ".join(ast.unparse(a) for a in call.args)
    return (f"def {call.func.id}(*a, **k):\n    if a == ({args},):\n        return {ast.unparse(expected)}\n"
            "    return None\n")


class CheatingGenerator:
    """A scripted policy that special-cases the visible test shown in the prompt (reward hacking)."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            self.calls += 1
            shown = prompt.rsplit("Your code should pass these tests:\n", 1)[1].split("\n", 1)[0]
            text = "```python\n" + cheat_for(shown) + "```"
            out.append([Completion(text=text, token_ids=[1] * 3, finish_reason="stop")] * params.n)
        return out


def test_visible_and_judging_tests_differ_for_every_mbpp_test_problem():
    same = []
    for p in load_mbpp("test"):
        visible, judging = VisibleTests().tests_for(p), DatasetTests().tests_for(p)
        assert set(visible) <= set(judging) and len(visible) == 1 < len(judging), p.task_id
        if set(visible) == set(judging):
            same.append(p.task_id)
    # The one exception is the data set's: mbpp/37 lists the same assert three times.
    assert same == ["mbpp/37"]


@pytest.mark.parametrize("agent", ["greedy", "mcts"])
def test_planted_cheat_passes_the_reward_and_fails_pass_at_1(agent, tmp_path):
    cfg = EvalConfig(agent=agent, mode="direct", tasks=TASKS, run_dir=str(tmp_path), rollouts=2, children=2)
    summary = run_eval(cfg, generator=CheatingGenerator(), progress=False)
    assert not summary["oracle"] and summary["tests"] == "visible" and summary["show_tests"] == "first"
    assert summary["reward_pass_rate"] == 1.0  # the cheat earns full reward ...
    assert summary["pass_at_1"] == 0.0  # ... and is caught by the hidden tests
    if agent == "mcts":
        assert summary["oracle_pass_at_k"] == 0.0 and summary["k_mean"] >= 1


def test_the_same_cheat_under_the_oracle_reward_is_labelled(tmp_path):
    cfg = EvalConfig(agent="greedy", mode="direct", tasks=TASKS[:2], run_dir=str(tmp_path), tests="dataset")
    summary = run_eval(cfg, generator=CheatingGenerator(), progress=False)
    assert summary["oracle"] and summary["reward_pass_rate"] == 0.0
    assert json.loads((tmp_path / "config.json").read_text())["oracle"] is True
    assert "dataset (ORACLE)" in (tmp_path / "summary.md").read_text()
    assert "**ORACLE:**" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())[0]["oracle"] is True


def test_defaults_are_honest():
    cfg = EvalConfig()
    assert (cfg.tests, cfg.show_tests, cfg.oracle, cfg.time_budget_s) == ("visible", "first", False, None)


def test_resume_refuses_any_changed_setting_and_names_it(tmp_path):
    cfg = EvalConfig(agent="mcts", mode="direct", tasks=TASKS[:1], run_dir=str(tmp_path), rollouts=2, children=2)
    run_eval(cfg, generator=CheatingGenerator(), progress=False)
    for field, value in [("rollouts", 3), ("children", 3), ("temperature", 0.5), ("tests", "dataset"),
                         ("show_tests", "all"), ("model", "other"), ("seed", 1), ("max_step_tokens", 9)]:
        changed = EvalConfig(**{**cfg.__dict__, field: value})
        with pytest.raises(PipelineError, match=field):
            run_eval(changed, generator=CheatingGenerator(), progress=False)
    # Which problems and where the results go may change: that only extends the run.
    more = EvalConfig(**{**cfg.__dict__, "tasks": TASKS[:2]})
    assert run_eval(more, generator=CheatingGenerator(), progress=False)["problems"] == 2


def test_trajectories_of_an_unfinished_problem_are_dropped_on_resume(tmp_path):
    cfg = EvalConfig(agent="mcts", mode="direct", tasks=TASKS[:2], run_dir=str(tmp_path), rollouts=2, children=2)
    run_eval(cfg, generator=CheatingGenerator(), progress=False)
    traj = tmp_path / "trajectories.jsonl"
    before = traj.read_text()
    # A kill between the two writes: mbpp/13's trajectories are on disk, its result line is not.
    with traj.open("a") as fh:
        fh.write(json.dumps({"task_id": "mbpp/13", "steps": []}) + "\n" + '{"task_id": "mbpp/1')
    run_eval(cfg, generator=CheatingGenerator(), progress=False)
    assert traj.read_text() == before


def test_problem_seed_is_stable_and_per_problem():
    assert problem_seed(0, "mbpp/11") == problem_seed(0, "mbpp/11")
    assert len({problem_seed(s, t) for s in (0, 1) for t in ("mbpp/11", "mbpp/12")}) == 4


class StopAfter(Exception):
    pass


def _strip(rows):
    drop = {"seconds", "generate_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("agent", ["sample", "mcts"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(agent, tiny_model_dir, tmp_path):
    from o1code.pipeline.evaluate import load_step_generator

    gen = load_step_generator(f"hf:{tiny_model_dir}")
    common = dict(agent=agent, mode="pseudocode", model="tiny", tasks=TASKS[:2], rollouts=2, children=2,
                  max_steps=2, max_step_tokens=8, temperature=1.0, seed=7)
    whole = EvalConfig(**common, run_dir=str(tmp_path / "whole"))
    run_eval(whole, generator=gen, progress=False)

    parts = EvalConfig(**common, run_dir=str(tmp_path / "parts"))

    def stop(row):
        raise StopAfter

    with pytest.raises(StopAfter):  # killed right after the first problem was committed
        run_eval(parts, generator=gen, progress=False, on_problem=stop)
    # The generator ran other prompts since: nothing of that may leak into the resumed problems.
    run_eval(EvalConfig(**{**common, "tasks": TASKS[3:4]}, run_dir=str(tmp_path / "other")), generator=gen,
             progress=False)
    run_eval(parts, generator=gen, progress=False)

    a, b = tmp_path / "whole", tmp_path / "parts"
    assert _strip(_read(a / "results.jsonl")) == _strip(_read(b / "results.jsonl"))
    if agent == "mcts":
        assert _read(a / "trajectories.jsonl") == _read(b / "trajectories.jsonl")
