"""O1Code tasks as TRL GRPOTrainer rewards (`o1code.integrations.trl`): real MBPP problems, the real sandbox."""

from __future__ import annotations

import logging
import math

import pytest

from o1code.envs import CodeEnv
from o1code.integrations import IntegrationError
from o1code.integrations.trl import JUDGING_NAME, PRM_NAME, O1CodeTask, trace_steps
from o1code.rewards import StepRewardFn
from o1code.sandboxes import LocalSandbox

TASKS = ["mbpp/608", "mbpp/624", "mbpp/634"]  # bell_Number, is_upper, even_Power_Sum (train split)
CHEAT = "```python\ndef bell_Number(n):\n    return 2\n```\n<Step_End>"  # the visible assert's expected value
RIGHT = "```python\ndef is_upper(s):\n    return s.upper()\n```\n<Step_End>\n### Step 2: more"
UNFENCED = "def even_Power_Sum(n):\n    return sum((2 * i) ** 4 for i in range(1, n + 1))\n<Step_End>"
BROKEN = "```python\ndef is_upper(s) return s\n```"


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=2) as sb:
        yield sb


def env_play(env: CodeEnv, task_id: str, steps: list[str]) -> tuple[float, dict]:
    """The env's own episode return (gamma 1) and last info for these step texts."""
    env.reset(options={"task_id": task_id})
    total, info = 0.0, {}
    for step in steps:
        _, reward, terminated, truncated, info = env.step(step)
        total += reward
        if terminated or truncated:
            break
    return total, info


def test_rewards_are_the_envs_and_a_cheat_earns_reward_but_fails_judging(sandbox):
    completions = [CHEAT, RIGHT, UNFENCED, BROKEN]
    ids = ["mbpp/608", "mbpp/624", "mbpp/634", "mbpp/624"]
    metrics: dict[str, float] = {}
    with O1CodeTask(task_ids=TASKS, sandbox=sandbox, examples=False) as task:
        rows = {r["task_id"]: r for r in task.dataset()}
        assert rows["mbpp/608"]["reward_tests"] == ["assert bell_Number(2) == 2"]  # the visible test only
        assert rows["mbpp/608"]["prompt"].endswith("### Step 1: Write the Python code\n")
        tests = [rows[t]["reward_tests"] for t in ids]
        chat = [[{"role": "assistant", "content": c}] for c in completions]  # TRL's conversational shape
        reward = task.reward(chat, task_id=ids, reward_tests=tests, log_metric=metrics.__setitem__)
        judging = task.judging(completions, task_id=ids, reward_tests=tests)
        assert [f.__name__ for f in task.reward_funcs] == ["o1code_visible_tests", JUDGING_NAME]
        assert task.reward_weights == [1.0, 0.0]
        env = CodeEnv(mode="direct", task_ids=TASKS, split="train", sandbox=sandbox, examples=False)
        for c, tid, r, j in zip(completions, ids, reward, judging):
            env_reward, info = env_play(env, tid, [c])
            assert r == env_reward and j == info["eval"]["passed"] / info["eval"]["total"]
    assert reward == [1.0, 1.0, 1.0, 0.0]
    assert judging[0] == pytest.approx(1 / 3) and judging[1:] == [1.0, 1.0, 0.0]  # the cheat fails 2 of 3
    assert metrics["o1code/reward_tests_all_passed"] == 0.75 and metrics["o1code/judging_tests_all_passed"] == 0.5
    assert metrics["o1code/hacking_gap"] == pytest.approx((1 - 1 / 3) / 4)


def test_a_pseudocode_trace_returns_what_the_env_returns_with_a_process_reward(sandbox):
    trace = (" Define the structure (Action 1)\nupper-case the string\n<Step_End>\n\n"
             "### Step 2: Refine (Action 2)\nuse str.upper\n<Step_End>\n\n"
             "### Step 3: Generate the Python code (Action 3)\n```python\ndef is_upper(s):\n    return s.upper()\n```\n"
             "<Step_End>\n\n### Step 4: ignored")
    steps = trace_steps(trace)
    assert len(steps) == 4 and steps[1] == " Refine (Action 2)\nuse str.upper"
    prm = StepRewardFn(lambda problem, previous, step: 0.25 * (len(previous) + 1))
    kw = dict(mode="pseudocode", max_steps=4, task_ids=["mbpp/624"], split="train", examples=False, sandbox=sandbox,
              process_reward=prm, phi={"t": 3})
    with O1CodeTask(**kw) as task:
        assert [f.__name__ for f in task.reward_funcs][-1] == PRM_NAME and task.reward_weights == [1.0, 0.0, 1.0]
        got = [f([trace, ""], task_id=["mbpp/624"] * 2) for f in task.reward_funcs]
        env = CodeEnv(**kw)
        want, _ = env_play(env, "mbpp/624", steps)
        assert got[0][0] + got[2][0] == pytest.approx(want)  # the weighted total is the env's return
        assert got[2][0] == 0.75 and got[1][0] == 1.0  # PRM: steps 1 and 2 (0.25 + 0.5); judged on all tests
        assert [g[1] for g in got] == [0.0, 0.0, 0.0]  # no code at all: the truncation reward, judged 0


def test_oracle_reward_is_labelled_and_bad_input_is_refused(sandbox, caplog):
    with caplog.at_level(logging.WARNING), O1CodeTask(task_ids=TASKS, tests="dataset", sandbox=sandbox) as task:
        assert task.reward.__name__ == "ORACLE_o1code_dataset_tests"
        assert "ORACLE" in caplog.text
        assert task.reward([CHEAT], task_id=["mbpp/608"]) == [pytest.approx(1 / 3)]  # the column is optional
        with pytest.raises(IntegrationError, match="unknown task id"):
            task.reward([CHEAT], task_id=["mbpp/11"])
        with pytest.raises(IntegrationError, match="task_id column"):
            task.reward([CHEAT])
        with pytest.raises(IntegrationError, match="string or a list of chat messages"):
            task.reward([42], task_id=["mbpp/608"])


def test_grpo_trainer_trains_two_steps_on_the_tiny_model_with_o1code_rewards(tiny_model_dir, tmp_path, sandbox):
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with O1CodeTask(task_ids=TASKS, sandbox=sandbox, examples=False) as task:
        args = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                              max_completion_length=24, learning_rate=1e-2, logging_steps=1, report_to=[],
                              save_strategy="no", use_cpu=True, seed=0, reward_weights=task.reward_weights)
        trainer = trl.GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=task.reward_funcs, args=args,
                                  train_dataset=task.dataset())
        trainer.train()
        graded = len(task._graded)
    logs = [h for h in trainer.state.log_history if "rewards/o1code_visible_tests/mean" in h]
    assert len(logs) == 2 and 0 < graded <= 8  # two steps of one prompt x 4 generations, each graded once
    for h in logs:
        for key in ("rewards/o1code_visible_tests/mean", f"rewards/{JUDGING_NAME}/mean", "o1code/hacking_gap",
                    "o1code/judging_tests_all_passed"):
            assert math.isfinite(h[key]) and 0.0 <= abs(h[key]) <= 1.0
    assert trainer.state.global_step == 2

