"""Policy SFT (o1code.training.sft): examples from correct train-split paths, exactly the env's prompt and
step format; the tiny model learns them, and the output loads as a Policy and as an hf:DIR generator."""

import json

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")

from o1code.data import load_dataset  # noqa: E402
from o1code.data.trajectories import StepRecord, TrajectoryRecord  # noqa: E402
from o1code.envs import CodeEnv  # noqa: E402
from o1code.runs import write_jsonl  # noqa: E402
from o1code.training.errors import TrainingError  # noqa: E402
from o1code.training.sft import (PolicySFTConfig, build_sft_examples, correct_paths,  # noqa: E402
                                 train_sft)

TRAIN = load_dataset("mbpp", "train")[:3]


def _path(problem, plan, passed=True, answer=False, reward=None, split="train", code=None):
    code = code or problem.reference
    steps = (StepRecord(f" {plan} (Action 1)\nCall the function on the inputs.", 0.5, 2),
             StepRecord(f" Generate the Python code (Action 3)\n```python\n{code}\n```", 1.0 if passed else 0.0, 1))
    return TrajectoryRecord(task_id=problem.task_id, mode="pseudocode", steps=steps, code=code,
                            verdict="passed" if passed else "failed", reward=reward if reward is not None else
                            float(passed), eval_passed=passed, answer=answer, split=split, reward_tests="dataset")


def _records():
    a, b, c = TRAIN
    return [
        _path(a, "Plan one"), _path(a, "Plan two", answer=True), _path(a, "Plan one"),  # a duplicate
        _path(a, "Plan three"), _path(a, "Plan bad", passed=False, code="def f(): pass"),
        _path(b, "Plan for b"), _path(c, "Plan for c", passed=False, code="def g(): pass"),
    ]


def test_examples_are_the_envs_prompt_and_steps():
    rows = build_sft_examples(_records(), TRAIN, "pseudocode", "first", max_steps=4, examples=False,
                              max_paths_per_problem=2)
    a, b, _ = TRAIN
    assert [r["task_id"] for r in rows] == [a.task_id, a.task_id, b.task_id]  # c has no correct path
    assert "Plan two" in rows[0]["completion"] and "Plan one" in rows[1]["completion"]  # the answer first
    assert not any("Plan three" in r["completion"] or "Plan bad" in r["completion"] for r in rows)
    # the prompt is CodeEnv's first observation; the completion replays the episode's text step by step
    env = CodeEnv(mode="pseudocode", problems=TRAIN, max_steps=4, show_tests="first", examples=False)
    obs, _ = env.reset(options={"task_id": a.task_id})
    assert rows[0]["prompt"] == obs["prompt"] and obs["prompt"].endswith("### Step 1:")
    obs, *_ = env.step(_records()[1].steps[0].text)
    assert (rows[0]["prompt"] + rows[0]["completion"]).startswith(obs["prompt"])
    assert rows[0]["completion"].endswith("<Step_End>") and rows[0]["completion"].count("<Step_End>") == 2
    env.close()
    assert len(correct_paths(_records(), 5)) == 4  # three distinct for a, one for b


def test_direct_mode_completion_continues_the_final_header():
    p = TRAIN[0]
    rec = TrajectoryRecord(task_id=p.task_id, mode="direct", code=p.reference, eval_passed=True, split="train",
                           steps=(StepRecord(f" Write the Python code\n```python\n{p.reference}\n```", 1.0, 1),))
    (row,) = build_sft_examples([rec], TRAIN, "direct", "first", examples=False)
    obs, _ = CodeEnv(mode="direct", problems=TRAIN, examples=False).reset(options={"task_id": p.task_id})
    assert row["prompt"] == obs["prompt"] and row["completion"].startswith("```python\n")


def test_other_splits_are_refused(tmp_path):
    with pytest.raises(TrainingError, match="train"):
        build_sft_examples([_path(TRAIN[0], "x", split="test")], TRAIN, "pseudocode")
    test_problem = load_dataset("mbpp", "test")[0]
    with pytest.raises(TrainingError, match="not in the train split"):  # an old record (no split) of a test task
        build_sft_examples([_path(test_problem, "x", split=None)], TRAIN, "pseudocode")
    with pytest.raises(TrainingError, match="outside the train split"):
        build_sft_examples([_path(test_problem, "x", split=None)], [test_problem], "pseudocode")
    # a collection's pinned config: its split is checked, and its prompt settings must be kept
    run = tmp_path / "search"
    run.mkdir()
    write_jsonl(run / "trajectories.jsonl", [r.to_dict() for r in _records()])
    (run / "config.json").write_text(json.dumps({"mode": "pseudocode", "show_tests": "all", "split": "validation"}))
    with pytest.raises(TrainingError, match="validation"):
        train_sft(PolicySFTConfig(trajectories=[str(run / "trajectories.jsonl")], run_dir=str(tmp_path / "r")))
    (run / "config.json").write_text(json.dumps({"mode": "pseudocode", "show_tests": "all", "split": "train"}))
    with pytest.raises(TrainingError, match="show_tests"):
        train_sft(PolicySFTConfig(trajectories=[str(run / "trajectories.jsonl")], show_tests="first",
                                  run_dir=str(tmp_path / "r")))


def _result_row(problem, code, reward_passed, passed):
    """A row of `o1code eval --agent sample` in direct mode (results.jsonl): the episode it played."""
    return {"task_id": problem.task_id, "known_bad": False, "passed": passed, "verdict": "passed" if passed else "failed",
            "reward": float(reward_passed), "reward_passed": reward_passed, "samples": 1, "steps": 1, "code": code,
            "trace": [f" Write the Python code\n```python\n{code}\n```"]}


def _sampled_run(run):
    """A train-split sampling run: a passes everything (twice, one path), b's code passes only the visible
    test (special-cased), c fails."""
    a, b, c = TRAIN
    cheat = f"def {b.entry_point}(*args):\n    return {b.tests[0].split('==')[-1].strip()}"
    write_jsonl(run / "results.jsonl", [_result_row(a, a.reference, True, True), _result_row(a, a.reference, True, True),
                                        _result_row(b, cheat, True, False), _result_row(c, "def g(): pass", False, False)])
    (run / "config.json").write_text(json.dumps({"mode": "direct", "show_tests": "first", "split": "train",
                                                 "dataset": "mbpp", "agent": "sample"}))
    return run / "results.jsonl"


def test_rejection_sampling_rows_are_paths(tmp_path):
    """An eval run's results.jsonl reads as paths: keep=reward keeps what passed the reward (visible)
    tests, the cheat included; keep=dataset only what passed every test of the train problem."""
    from o1code.data.trajectories import read_trajectories

    a, b, _ = TRAIN
    records = read_trajectories(_sampled_run(tmp_path))
    assert [(r.verdict, r.eval_passed) for r in records] == [("passed", True)] * 2 + [("passed", False), ("failed", False)]
    reward = build_sft_examples(records, TRAIN, "direct", examples=False, keep="reward")
    assert [r["task_id"] for r in reward] == [a.task_id, b.task_id]  # a's duplicate is one path
    assert [r["task_id"] for r in build_sft_examples(records, TRAIN, "direct", examples=False)] == [a.task_id]
    obs, _ = CodeEnv(mode="direct", problems=TRAIN, examples=False).reset(options={"task_id": b.task_id})
    assert reward[1]["prompt"] == obs["prompt"] and reward[1]["completion"].startswith("```python\ndef ")
    with pytest.raises(TrainingError, match="keep"):
        PolicySFTConfig(keep="hidden").validate()


def test_sft_lora_adapter_loads_as_a_spec(tiny_model_dir, tmp_path):
    """RUN/adapter holds the LoRA alone: the spec hf:BASE+lora:RUN/adapter is the merged RUN/final."""
    import torch

    from o1code.models import load_generator

    (tmp_path / "rs").mkdir()
    results = _sampled_run(tmp_path / "rs")
    run = tmp_path / "sft"
    res = train_sft(PolicySFTConfig(trajectories=[str(results)], run_dir=str(run), model=str(tiny_model_dir),
                                    examples=False, keep="reward", epochs=2, learning_rate=1e-2, batch_size=2,
                                    grad_accum=1, device="cpu", max_length=1024))
    assert res.examples == 2
    assert (run / "adapter" / "adapter_config.json").is_file() and not (run / "adapter" / "adapter.gguf").exists()
    with_lora = load_generator(f"hf:{tiny_model_dir}+lora:{run / 'adapter'}", chat_template=False, device="cpu")
    merged = load_generator(f"hf:{res.final_dir}", chat_template=False, device="cpu")
    base = load_generator(f"hf:{tiny_model_dir}", chat_template=False, device="cpu")
    got, want, start = (g.model.state_dict() for g in (with_lora, merged, base))
    assert set(got) == set(want)
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-4, rtol=1e-3) for k in want)  # float16 adapter
    assert any(not torch.equal(got[k], start[k]) for k in start)  # the adapter changed something
    with pytest.raises(Exception, match="adapter_config.json"):
        load_generator(f"hf:{tiny_model_dir}+lora:{tmp_path}", chat_template=False, device="cpu")


def test_sft_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    from o1code.cli import main
    from o1code.models import SamplingParams
    import torch

    from o1code.models.policy import Policy, PolicyConfig
    from o1code.pipeline.evaluate import load_step_generator
    from o1code.pipeline.ppo import PPORunConfig, build_policy

    traj = tmp_path / "trajectories.jsonl"
    write_jsonl(traj, [r.to_dict() for r in _records()])
    run = tmp_path / "sft"
    argv = ["sft", "--trajectories", str(traj), "--run-dir", str(run), "--model", str(tiny_model_dir),
            "--no-examples", "--show-tests", "first", "--no-lora", "--epochs", "8", "--learning-rate", "3e-3",
            "--batch-size", "3", "--grad-accum", "1", "--lr-scheduler", "constant", "--save-steps", "5",
            "--device", "cpu", "--max-length", "1024"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["examples"] == 3 and summary["problems"] == 2
    first, last = summary["loss"]
    assert last < 0.85 * first, summary["loss"]
    assert len((run / "examples.jsonl").read_text().splitlines()) == 3
    assert list((run / "train").glob("checkpoint-*")) and list((run / "train" / "runs").iterdir())  # TensorBoard

    final = run / "final"
    policy = Policy.load(final, device="cpu")  # a Policy: LoRA over the merged SFT weights, raw prompts
    assert policy.config.chat_template is False and policy.config.lora
    row = json.loads((run / "examples.jsonl").read_text().splitlines()[0])
    base = Policy(PolicyConfig(model=str(tiny_model_dir), chat_template=False, device="cpu"))
    with torch.no_grad():  # the trained completions are likelier under the SFT policy than under the base
        trained, before = (float(p.logprobs([row["prompt"]], [row["completion"]])[0].mean()) for p in (policy, base))
    assert trained > before + 0.5, (trained, before)
    start = build_policy(PPORunConfig(model=str(final), device="cpu"))  # `o1code ppo --model RUN/final` starts here
    with torch.no_grad():
        assert float(start.logprobs([row["prompt"]], [row["completion"]])[0].mean()) == pytest.approx(trained, abs=1e-4)
    gen = load_step_generator(f"hf:{final}")  # the same weights as a generator spec
    out = gen.generate([row["prompt"]], SamplingParams(temperature=0.0, max_tokens=8))[0][0]
    assert out.token_ids
    assert main(argv) == 0  # finished: a rerun does not train again
    assert "already trained" in capsys.readouterr().out


def test_sft_on_a_bfloat16_backbone(tiny_model_dir, tmp_path):
    """dtype=bfloat16: the backbone trains in bfloat16 with float32 LoRA adapters, the loss still falls,
    and the merged model is saved in bfloat16 (and loads back as a Policy)."""
    import torch

    from o1code.models.policy import Policy

    traj = tmp_path / "trajectories.jsonl"
    write_jsonl(traj, [r.to_dict() for r in _records()])
    cfg = PolicySFTConfig(trajectories=[str(traj)], run_dir=str(tmp_path / "sft"), model=str(tiny_model_dir),
                          examples=False, show_tests="first", epochs=8, learning_rate=1e-2, batch_size=3,
                          grad_accum=1, lr_scheduler="constant", lora_r=8, device="cpu", max_length=1024,
                          dtype="bfloat16")
    res = train_sft(cfg)
    first, last = res.loss
    assert last < first - 0.05, res.loss  # float32 moves it by about as much (0.13 vs 0.15 at these settings)
    saved = json.loads((res.final_dir / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"
    policy = Policy.load(res.final_dir, device="cpu", dtype="bfloat16")
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # adapters and value head
    assert any(p.dtype == torch.bfloat16 for p in policy.model.parameters())
    with pytest.raises(TrainingError, match="dtype"):
        train_sft(PolicySFTConfig(trajectories=[str(traj)], run_dir=str(tmp_path / "x"), dtype="half"))
