"""Math-Shepherd step labels (`o1code prm shepherd`) on a scripted policy whose plan decides how often
its code is right: a plan's label must be the share of completions from it that pass."""

import random
import re

import pytest
from scripted_policy import BAD_PLAN, GOOD_PLAN, PlanPolicy

from o1code.data import load_dataset
from o1code.models import Completion
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.prm_shepherd import ShepherdConfig, shepherd, step_labels
from o1code.runs import read_jsonl


class CoinPlans(PlanPolicy):
    """A seeded coin picks the plan; after the good plan the code is right half the time (seeded), after
    the bad one never. So the good plan's true value is 0.5, the bad plan's 0."""

    def __init__(self, problems, crash_after=None):
        super().__init__(problems)
        self.calls = 0
        self.crash_after = crash_after

    def on_call(self, entry):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt("killed")

    def good_plan(self, prompt, i, params):
        return random.Random(params.seed + i).random() < 0.5

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        for prompt, comps in zip(prompts, out):
            if GOOD_PLAN in prompt.rsplit("### Solution\n", 1)[1] and random.Random(params.seed).random() < 0.5:
                entry = re.findall(r"The function must be named `([^`]+)`", prompt)[-1]
                comps[0] = Completion(text=f" Code of a slip (Action 3)\n```python\ndef {entry}(*args):\n    return 0\n```",
                                      token_ids=[1] * 4, finish_reason="stop")
        return out


def cfg(tmp_path, **kw):
    return ShepherdConfig(**{"model": "scripted", "split": "train", "limit": 4, "paths": 4, "completions": 6,
                             "max_steps": 3, "run_dir": str(tmp_path / "shepherd"), **kw})


def test_a_step_is_labelled_by_the_share_of_completions_from_it_that_pass(tmp_path):
    train = load_dataset("mbpp", "train")
    summary = shepherd(cfg(tmp_path), generator=CoinPlans(train))
    records = read_jsonl(tmp_path / "shepherd" / "labels.jsonl")
    assert summary["problems"] == 4 and len(records) == 4
    assert summary["episodes"] == sum(len(r["paths"]) + 6 * len(r["prefixes"]) for r in records)
    good = [v for r in records for p in r["prefixes"] if p["steps"] == [GOOD_PLAN] for v in p["passed"]]
    bad = [v for r in records for p in r["prefixes"] if p["steps"] == [BAD_PLAN] for v in p["passed"]]
    assert good and bad and not any(bad)
    assert 0 < sum(good) < len(good)  # right half the time: some completions pass, some fail
    for rec in records:
        soft, hard = step_labels(rec, "soft"), step_labels(rec, "hard")
        for p in rec["prefixes"]:
            assert soft[tuple(p["steps"])] == sum(p["passed"]) / 6
            assert hard[tuple(p["steps"])] == float(any(p["passed"]))
        for path in rec["paths"]:  # a full answer is labelled by its own pass
            assert soft[tuple(path["steps"])] == float(path["passed"])

    rows = read_jsonl(summary["rows"])
    assert {r["split"] for r in rows} == {"train"} and {r["source"] for r in rows} == {"shepherd"}
    points = [r for r in rows if r["kind"] == "point"]
    labelled = [((r["task_id"], *r["steps"][:j + 1]), v) for r in points for j, v in enumerate(r["labels"])
                if v is not None]
    assert len(labelled) == len(dict(labelled))  # every node labelled once
    pairs = [r for r in rows if r["kind"] == "pair"]
    assert pairs and summary["pair_rows"] == len(pairs)
    for p in pairs:  # the better sibling wins: a plan with passing completions over the bad plan, code over a slip
        assert p["lose"] == BAD_PLAN or "slip" in p["lose"]
        assert p["win"] == GOOD_PLAN or "Code of the good" in p["win"]


class CheatingSlips(CoinPlans):
    """CoinPlans whose slip after the good plan returns the visible test's answer: it passes the shown
    test and fails the hidden ones."""

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        for prompt, comps in zip(prompts, out):
            if "slip" in comps[0].text:
                entry = re.findall(r"The function must be named `([^`]+)`", prompt)[-1]
                p = self.by_entry[entry]  # the reference first: its helpers (a class the test builds) stay
                answer = p.tests[0].split("==")[-1].strip()
                comps[0] = Completion(text=f" Code of a slip (Action 3)\n```python\n{p.reference}\n\n"
                                           f"def {entry}(*args):\n    return {answer}\n```", token_ids=[1] * 4,
                                      finish_reason="stop")
        return out


def test_labels_come_from_the_chosen_tests(tmp_path):
    """--tests visible labels by the shown test: the good plan, whose slips pass it, is labelled 1.0,
    where the dataset tests give it the share of right code; each path keeps its dataset verdict."""
    train = load_dataset("mbpp", "train")
    by = {t: shepherd(cfg(tmp_path / t, tests=t, limit=2), generator=CheatingSlips(train)) for t in ("visible", "dataset")}
    labels = {t: [step_labels(r) for r in read_jsonl(tmp_path / t / "shepherd" / "labels.jsonl")] for t in by}
    good = {t: [lab[(GOOD_PLAN,)] for lab in labels[t] if (GOOD_PLAN,) in lab] for t in by}
    assert good["visible"] and set(good["visible"]) == {1.0}
    assert len(good["dataset"]) == len(good["visible"]) and min(good["dataset"]) < 1.0
    assert by["dataset"]["path_label_agreement"] == 1.0 and by["visible"]["path_label_agreement"] < 1.0
    assert by["visible"]["tests"] == "visible"
    with pytest.raises(PipelineError, match="tests must be"):
        shepherd(cfg(tmp_path / "bad", tests="hidden"), generator=object())


def test_an_interrupted_labelling_resumes_to_the_uninterrupted_result(tmp_path):
    train = load_dataset("mbpp", "train")
    whole = shepherd(cfg(tmp_path / "a"), generator=CoinPlans(train))
    with pytest.raises(KeyboardInterrupt):
        shepherd(cfg(tmp_path / "b"), generator=CoinPlans(train, crash_after=40))
    assert 0 < len(read_jsonl(tmp_path / "b" / "shepherd" / "labels.jsonl")) < 4
    resumed = shepherd(cfg(tmp_path / "b"), generator=CoinPlans(train))
    assert read_jsonl(resumed["rows"]) == read_jsonl(whole["rows"])
    assert {k: v for k, v in resumed.items() if k not in ("rows", "seconds")} == \
        {k: v for k, v in whole.items() if k not in ("rows", "seconds")}


def test_shepherd_refuses_the_test_split_and_other_settings_on_resume(tmp_path):
    with pytest.raises(PipelineError, match="train split"):
        shepherd(cfg(tmp_path, split="test"), generator=object())
    train = load_dataset("mbpp", "train")
    shepherd(ShepherdConfig(model="scripted", limit=1, paths=1, completions=1, max_steps=3,
                            run_dir=str(tmp_path / "shepherd")), generator=CoinPlans(train))
    with pytest.raises(Exception, match="completions"):
        shepherd(cfg(tmp_path), generator=CoinPlans(train))


def test_prm_trains_on_shepherd_rows_and_collect_rows_together(tmp_path):
    """`prm train --data A,B` reads several rows files; a missing one is named."""
    pytest.importorskip("peft")
    from o1code.models.tiny import build_tiny_model
    from o1code.runs import write_jsonl
    from o1code.training.errors import TrainingError
    from o1code.training.prm import PRMTrainConfig, train_prm

    train = load_dataset("mbpp", "train")
    rows = shepherd(cfg(tmp_path, limit=2), generator=CoinPlans(train))["rows"]
    other = tmp_path / "collect.jsonl"
    write_jsonl(other, [{"kind": "point", "task_id": train[5].task_id, "split": "train", "question": "q",
                         "steps": [GOOD_PLAN], "labels": [1.0]}])
    tiny = str(build_tiny_model(tmp_path / "tiny"))
    config = PRMTrainConfig(model=tiny, data=f"{rows},{other}", run_dir=str(tmp_path / "prm"), epochs=1, objective="both",
                            batch_size=4, grad_accum=1, heldout_fraction=0.0, device="cpu", max_length=256)
    res = train_prm(config)
    assert res.train_rows == len(read_jsonl(rows)) + 1
    with pytest.raises(TrainingError, match="nothing.jsonl"):
        train_prm(PRMTrainConfig(model=tiny, data=f"{rows},{tmp_path / 'nothing.jsonl'}", run_dir=str(tmp_path / "p2")))


def test_shepherd_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    from o1code.cli import main

    assert main(["prm", "shepherd", "--split", "test", "--run-dir", str(tmp_path / "s")]) == 2
    assert main(["prm", "shepherd", "--completions", "0", "--run-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("o1code: error:") for line in err)
    assert "train split" in err[0] and "completions" in err[1]


def _protocol_commands():
    """The `o1code ...` command lines of the PRM protocol's comments (continuations joined)."""
    from pathlib import Path

    text = Path("experiments/prm-mbpp-shepherd.toml").read_text()
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    commands, current = [], None
    for line in lines:
        if current is None and not line.startswith("o1code "):
            continue
        current = f"{current} " * (current is not None) + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            commands.append(current)
            current = None
    return commands


@pytest.mark.parametrize("name", ["shepherd", "train", "eval"])
def test_prm_protocol_files_are_valid(name):
    """experiments/prm-mbpp-*.toml (issue 28's protocol): each file's keys are its command's, its values
    pass the command's checks, and it never trains on or chooses with held-out problems."""
    from o1code.cli.config import check_keys, read_toml
    from o1code.pipeline.prm_best_of_n import BestOfNConfig
    from o1code.training.prm import PRMTrainConfig

    cls = {"shepherd": ShepherdConfig, "train": PRMTrainConfig, "eval": BestOfNConfig}[name]
    data = read_toml(f"experiments/prm-mbpp-{name}.toml")
    check_keys(cls, data, name)
    cfg = cls(**data)
    if name == "shepherd":
        cfg.validate()
        assert cfg.split == "train" and cfg.limit == len(load_dataset("mbpp", "train"))
    elif name == "train":
        assert cfg.epochs == 3 and cfg.objective == "both" and cfg.select == "pair_accuracy"
    else:
        assert cfg.split == "validation" and cfg.limit == len(load_dataset("mbpp", "validation")) and cfg.n == 8


def test_prm_protocol_commands_parse():
    import shlex

    from o1code.cli import build_parser

    commands = _protocol_commands()
    assert len(commands) >= 10
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])  # argparse exits on a bad flag


class CountingCalls(CoinPlans):
    """CoinPlans that counts its generate calls and the samples asked for."""

    def __init__(self, problems):
        super().__init__(problems)
        self.generate_calls = 0
        self.samples = 0

    def generate(self, prompts, params):
        self.generate_calls += 1
        self.samples += len(prompts) * params.n
        return super().generate(prompts, params)


def test_lockstep_labels_with_one_call_per_round_and_resumes(tmp_path):
    """--lockstep: the labels keep their meaning (a plan's label is the share of its completions that
    pass: good in (0, 1), bad 0) while the model is called once per round and group size, not once per
    step of each episode; an interrupted run resumes to the uninterrupted one."""
    train = load_dataset("mbpp", "train")
    gen = CountingCalls(train)
    summary = shepherd(cfg(tmp_path / "a", lockstep=True), generator=gen)
    records = read_jsonl(tmp_path / "a" / "shepherd" / "labels.jsonl")
    good = [v for r in records for p in r["prefixes"] if p["steps"] == [GOOD_PLAN] for v in p["passed"]]
    bad = [v for r in records for p in r["prefixes"] if p["steps"] == [BAD_PLAN] for v in p["passed"]]
    assert good and bad and not any(bad) and 0 < sum(good) < len(good)
    assert all(len(p["passed"]) == 6 for r in records for p in r["prefixes"])
    # the scripted episodes are plan then code: every prefix is a plan, every completion one step
    assert {len(p["steps"]) for r in records for p in r["paths"]} == {2}
    steps_played = sum(len(p["steps"]) for r in records for p in r["paths"]) + \
        sum(6 for r in records for p in r["prefixes"])
    assert gen.samples == steps_played  # every step of every episode asked for exactly once
    assert gen.generate_calls <= 4 * 2 * 3 * 2  # problems x (paths, completions) x rounds x group sizes
    assert gen.generate_calls * 5 < steps_played
    assert summary["episodes"] == sum(len(r["paths"]) + 6 * len(r["prefixes"]) for r in records)
    with pytest.raises(KeyboardInterrupt):
        shepherd(cfg(tmp_path / "b", lockstep=True), generator=CoinPlans(train, crash_after=10))
    assert 0 < len(read_jsonl(tmp_path / "b" / "shepherd" / "labels.jsonl")) < 4
    resumed = shepherd(cfg(tmp_path / "b", lockstep=True), generator=CoinPlans(train))
    assert read_jsonl(resumed["rows"]) == read_jsonl(summary["rows"])


def test_best_of_n_lockstep_draws_n_samples_per_round_call(tmp_path):
    """prm eval --lockstep: a problem's n samples are drawn together (one call per round and group size),
    judged as one at a time are, and a rerun resumes without sampling again."""
    from o1code.pipeline.prm_best_of_n import BestOfNConfig, best_of_n

    valid = load_dataset("mbpp", "validation")
    gen = CountingCalls(valid)
    config = BestOfNConfig(model="scripted", split="validation", limit=3, n=6, max_steps=3, lockstep=True,
                           run_dir=str(tmp_path / "bon"))
    summary = best_of_n(config, generator=gen)
    rows = read_jsonl(tmp_path / "bon" / "samples.jsonl")
    assert len(rows) == 3 and all(len(r["samples"]) == 6 for r in rows)
    assert gen.samples == sum(len(s["steps"]) for r in rows for s in r["samples"])
    assert gen.generate_calls <= 3 * 3 * 2 and gen.generate_calls * 4 < gen.samples
    plans = [s["steps"][0] for r in rows for s in r["samples"]]
    assert GOOD_PLAN in plans and BAD_PLAN in plans  # n samples of one prompt differ
    for s in (s for r in rows for s in r["samples"]):  # judged as the one-at-a-time samples are
        assert s["passed"] == (s["steps"][0] == GOOD_PLAN and "slip" not in s["steps"][-1])
    assert best_of_n(config, generator=object()) == summary
