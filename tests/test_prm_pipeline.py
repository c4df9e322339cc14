"""PRM end to end on a scripted policy and the tiny model: collect -> rows -> train -> best-of-N."""

import pytest
from scripted_policy import BAD_PLAN, GOOD_PLAN, PlanPolicy

pytest.importorskip("peft")

from o1code.data import load_dataset  # noqa: E402
from o1code.data.trajectories import read_trajectories  # noqa: E402
from o1code.models.tiny import build_tiny_model  # noqa: E402
from o1code.pipeline import EvalConfig, run_eval  # noqa: E402
from o1code.pipeline.errors import PipelineError  # noqa: E402
from o1code.pipeline.prm import PRMCollectConfig, collect  # noqa: E402
from o1code.pipeline.prm_best_of_n import (BestOfNConfig, best_of_n, ranking, select,  # noqa: E402
                                           summarise_best_of_n, trajectory_score)
from o1code.runs import read_jsonl  # noqa: E402
from o1code.training.prm import PRMTrainConfig, train_prm  # noqa: E402


class AlternatingPlans(PlanPolicy):
    """Good and bad plans alternate from call to call, and within a call's n samples."""

    def __init__(self, problems):
        super().__init__(problems)
        self.plans = 0

    def good_plan(self, prompt, i, params):
        self.plans += 1
        return self.plans % 2 == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_collect_refuses_the_test_split(tmp_path):
    with pytest.raises(PipelineError, match="train split"):
        collect(PRMCollectConfig(split="test", run_dir=str(tmp_path)), generator=AlternatingPlans([]))


def test_selectors():
    samples = [{"score": 0.2, "reward_passed": True, "passed": True},
               {"score": 0.9, "reward_passed": False, "passed": False},
               {"score": 0.5, "reward_passed": True, "passed": False}]
    import random

    assert select(samples, "prm", random.Random(0)) is samples[1]
    assert select(samples, "visible+prm", random.Random(0)) is samples[2]
    assert select(samples, "visible+random", random.Random(0)) in (samples[0], samples[2])
    assert trajectory_score([0.9, 0.1, 0.5], "last") == 0.5 and trajectory_score([0.9, 0.1], "min") == 0.1
    assert trajectory_score([], "mean") == 0.0


def test_ranking_within_problems_and_gain_over_random():
    """Pairs are formed within a problem only; a tie counts half; (correct, visible-only) pairs are a
    subset; the gain over random counts random at its expectation, with a CI over problems."""
    def s(score, passed, visible):
        return {"score": score, "passed": passed, "reward_passed": visible}
    p1 = [s(0.9, True, True), s(0.5, False, True), s(0.9, False, False)]  # wins 1 (visible-only), ties 1
    p2 = [s(0.1, True, True), s(0.8, False, True)]  # loses its one pair, a visible-only one
    p3 = [s(0.7, True, True), s(0.2, True, True)]  # no failing sample: no pair
    r = ranking([p1, p2, p3])
    assert r["pairs"] == 3 and r["pair_accuracy"] == (1 + 0.5 + 0) / 3
    assert r["visible_only_pairs"] == 2 and r["visible_only_accuracy"] == 0.5
    assert (r["pair_problems"], r["visible_only_problems"]) == (2, 2)
    lo, hi = r["pair_accuracy_ci"]
    assert 0 <= lo <= r["pair_accuracy"] <= hi <= 1 and hi - lo > 0.3  # two problems: a wide interval
    assert ranking([p3])["pair_accuracy"] is None and ranking([p3])["pair_accuracy_ci"] is None

    rows = [{"task_id": f"t{i}", "samples": [dict(x, steps=[]) for x in p]} for i, p in enumerate((p1, p2, p3))]
    scores = {f"t{i}": [[x["score"]] for x in p] for i, p in enumerate((p1, p2, p3))}
    summary = summarise_best_of_n(rows, BestOfNConfig(n=3, prm="p"), scores)
    # prm picks: p1 first 0.9 (passes), p2 0.8 (fails), p3 0.7 (passes) = 2/3; random expects 1/3, 1/2, 1
    g = summary["gain"]["prm - random"]
    assert g["diff"] == pytest.approx(2 / 3 - (1 / 3 + 1 / 2 + 1) / 3)
    assert g["ci"][0] <= g["diff"] <= g["ci"][1]
    assert summary["ranking"] == r and "visible+prm - visible+random" in summary["gain"]
    # what any selector could do: random at its expectation, a perfect pick, and where the pick matters
    h = summary["headroom"]
    assert h["random"]["expected"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3) and h["random"]["perfect"] == 1.0
    assert h["visible+random"]["expected"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert h["random"]["mixed_problems"] == h["visible+random"]["mixed_problems"] == 2
    lo, hi = h["random"]["expected_ci"]
    assert lo <= h["random"]["expected"] <= hi
    assert "gain" not in summarise_best_of_n(rows, BestOfNConfig(n=3))  # no PRM scores: random selectors only


def test_collect_labels_by_the_chosen_reward_tests(tmp_path):
    """--tests: the search is rewarded (and so its nodes labelled) by the tests asked for, pinned in the
    search's config; the default stays the dataset tests; an unknown name is refused."""
    import json

    train = load_dataset("mbpp", "train")
    for tests in (None, "visible"):
        run = tmp_path / str(tests)
        collect(PRMCollectConfig(model="scripted", split="train", limit=2, rollouts=2, children=2, max_steps=3,
                                 tests=tests, run_dir=str(run)), generator=AlternatingPlans(train), progress=False)
        assert json.loads((run / "search" / "config.json").read_text())["tests"] == (tests or "dataset")
    with pytest.raises(PipelineError, match="unknown tests"):
        collect(PRMCollectConfig(tests="hidden", run_dir=str(tmp_path / "bad")), generator=object())


def test_prm_end_to_end(tiny, tmp_path):
    train = load_dataset("mbpp", "train")
    counts = collect(PRMCollectConfig(model="scripted", split="train", limit=6, rollouts=4, children=2,
                                      max_steps=3, run_dir=str(tmp_path / "collect")),
                     generator=AlternatingPlans(train), progress=False)
    rows = read_jsonl(counts["rows"])
    assert counts["point_rows"] >= 8 and counts["pair_rows"] >= 4
    assert {r["split"] for r in rows} == {"train"} and {r["task_id"] for r in rows} <= {p.task_id for p in train[:6]}
    points = [r for r in rows if r["kind"] == "point"]
    labelled = [((r["task_id"], *r["steps"][:j + 1]), v) for r in points for j, v in enumerate(r["labels"])
                if v is not None]
    assert len(labelled) == len(dict(labelled))  # every node labelled once
    plan_value = {k[1]: v for k, v in labelled if len(k) == 2}
    assert plan_value[GOOD_PLAN] > plan_value[BAD_PLAN]  # labels come from the search's values
    assert any(sum(v is not None for v in r["labels"]) > 1 for r in points)  # a row trains several steps
    assert all(r["win"].startswith((GOOD_PLAN, " Code of the good")) for r in rows if r["kind"] == "pair")

    res = train_prm(PRMTrainConfig(model=tiny, data=counts["rows"], run_dir=str(tmp_path / "prm"), objective="both",
                                   epochs=8, learning_rate=3e-3, batch_size=4, grad_accum=1, lr_scheduler="constant",
                                   save_steps=1000, heldout_fraction=0.0, device="cpu", max_length=384))
    assert res.loss[1] < res.loss[0]

    valid = load_dataset("mbpp", "validation")
    # sampling first, without a PRM: only the random selectors
    cfg = BestOfNConfig(model="scripted", split="validation", limit=3, n=4, max_steps=3, run_dir=str(tmp_path / "bon"))
    unscored = best_of_n(cfg, generator=AlternatingPlans(valid))
    assert set(unscored["pass_at_1"]) == {"random", "visible+random"} and unscored["oracle_pass_at_n"] == 1.0
    # then the PRM scores the same samples (no sampling: the generator would fail)
    cfg = BestOfNConfig(**{**cfg.__dict__, "prm": str(res.final_dir)})
    summary = best_of_n(cfg, generator=object())
    assert summary["problems"] == 3 and summary["oracle_pass_at_n"] == 1.0
    assert {k: summary["pass_at_1"][k] for k in unscored["pass_at_1"]} == unscored["pass_at_1"]
    assert len(list((tmp_path / "bon" / "scores").glob("*.jsonl"))) == 1
    assert summary["pass_at_1"]["prm"] == 1.0  # the PRM prefers the good plan's code
    assert summary["pass_at_1"]["visible+prm"] == 1.0
    assert summary["ranking"]["pairs"] > 0 and summary["ranking"]["pair_accuracy"] == 1.0
    assert summary["gain"]["prm - random"]["diff"] > 0
    # resuming recomputes the summary from the committed samples without sampling again
    assert best_of_n(cfg, generator=object()) == summary
    assert (tmp_path / "bon" / "summary.md").read_text().count("|") > 10

    # the PRM guides MCTS in `o1code eval --prm`: nodes carry its values, and a good plan outscores a bad one
    ev = EvalConfig(agent="mcts", mode="pseudocode", split="validation", limit=2, rollouts=4, children=2,
                    max_steps=3, prm=str(res.final_dir), run_dir=str(tmp_path / "eval"))
    run_eval(ev, generator=AlternatingPlans(valid), progress=False)
    plans = {}
    for rec in read_trajectories(tmp_path / "eval" / "trajectories.jsonl"):
        plans.setdefault(rec.steps[0].text, set()).add(rec.steps[0].prm)
    assert min(plans[GOOD_PLAN]) > max(plans[BAD_PLAN])
    with pytest.raises(PipelineError, match="agent mcts"):
        EvalConfig(agent="greedy", prm=str(res.final_dir)).validate()


def test_prm_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    from o1code.cli import main

    assert main(["prm", "collect", "--split", "test", "--run-dir", str(tmp_path / "c")]) == 2
    assert main(["prm", "eval", "--prm", str(tmp_path / "none"), "--run-dir", str(tmp_path / "e")]) == 2
    assert main(["prm", "train", "--objective", "listwise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("o1code: error:") for line in err)
    assert "train split" in err[0] and "prm.json" in err[1] and "objective" in err[2]


def test_answer_pairs_rank_a_right_answer_over_one_that_passes_only_the_visible_test(tmp_path):
    """`prm collect --answers`: from an RFT harvest (eval rows on train, visible reward tests), each
    (passes every test, passes only the visible test) pair of answers to one problem is a pair row;
    a run of another mode, or a collection on another split, is refused."""
    import json

    from o1code.pipeline.prm import answer_pair_rows
    from o1code.runs import write_jsonl

    a, b = load_dataset("mbpp", "train")[:2]
    cheat = f"def {a.entry_point}(*args):\n    return {a.tests[0].split('==')[-1].strip()}"

    def episode(code, reward_passed, passed):
        return {"passed": passed, "verdict": "passed" if passed else "failed", "reward": float(reward_passed),
                "reward_passed": reward_passed, "code": code, "trace": [f" Write the Python code\n```python\n{code}\n```"]}

    rows = [{"task_id": a.task_id, **episode(cheat, True, False),  # a --samples row: its samples are answers too
             "sample_episodes": [episode(a.reference, True, True), episode("def f(): pass", False, False)]},
            {"task_id": a.task_id, **episode(a.reference, True, True)},  # the same right answer again: one path
            {"task_id": b.task_id, **episode(b.reference, True, True)}]  # b has no visible-only answer: no pair
    run = tmp_path / "harvest"
    run.mkdir()
    write_jsonl(run / "results.jsonl", rows)
    settings = {"dataset": "mbpp", "split": "train", "tests": "visible", "mode": "direct", "show_tests": "first"}
    (run / "config.json").write_text(json.dumps(settings))
    cfg = PRMCollectConfig(mode="direct", answers=[str(run / "results.jsonl")], run_dir=str(tmp_path / "c"))
    (pair,) = answer_pair_rows(cfg)
    assert pair["task_id"] == a.task_id and pair["prefix"] == [] and pair["split"] == "train"
    assert a.reference in pair["win"] and cheat in pair["lose"] and a.text in pair["question"]
    with pytest.raises(PipelineError, match="mode"):
        answer_pair_rows(PRMCollectConfig(mode="pseudocode", answers=cfg.answers))
    with pytest.raises(PipelineError, match="train split"):
        answer_pair_rows(PRMCollectConfig(mode="direct", split="validation", answers=cfg.answers))
    (run / "config.json").write_text(json.dumps({**settings, "split": "validation"}))
    with pytest.raises(PipelineError, match="split"):  # held-out problems never become training rows
        collect(PRMCollectConfig(mode="direct", answers=cfg.answers, run_dir=str(tmp_path / "c")),
                generator=AlternatingPlans([]))
