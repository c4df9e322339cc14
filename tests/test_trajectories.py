"""o1code.data.trajectories: typed trajectory records, the old JSONL format, PRM examples."""

import json
import subprocess
import sys

import pytest

from o1code.data import DataError
from o1code.data.trajectories import (
    SampleRecord,
    StepRecord,
    TrajectoryRecord,
    in_problem_order,
    pairwise_examples,
    pointwise_examples,
    read_trajectories,
)

# Lines as `trajectory_records` wrote them before node ids and siblings (shortened texts).
OLD = [
    {"task_id": "mbpp/11", "mode": "pseudocode", "steps": [
        {"text": " Plan (Action 1)", "value": 0.75, "visits": 4, "prm": None, "hard": 1},
        {"text": " Code A (Action 3)", "value": 1.0, "visits": 3, "prm": None, "hard": 1}],
     "code": "def f(): pass", "verdict": "passed", "reward": 1.0, "eval_passed": True, "answer": True,
     "model": "default", "seed": 0},
    {"task_id": "mbpp/11", "mode": "pseudocode", "steps": [
        {"text": " Plan (Action 1)", "value": 0.75, "visits": 4, "prm": None, "hard": 1},
        {"text": " Code B (Action 3)", "value": 0.0, "visits": 1, "prm": None, "hard": 0}],
     "code": "def f(): return 1", "verdict": "failed", "reward": 0.0, "eval_passed": False, "answer": False,
     "model": "default", "seed": 0},
]


def new_record():
    plan = StepRecord(" Plan (Action 1)", 0.5, 4, prm=0.7, hard=1, node_id=1, parent_id=0, depth=1, terminal=False,
                      siblings=(SampleRecord(" Other (Action 1)", node_id=2, value=0.0, visits=1, hard=0),
                                SampleRecord(" Unvisited (Action 1)", node_id=3, value=None, visits=0)))
    code = StepRecord(" Code (Action 3)", 1.0, 2, hard=1, node_id=4, parent_id=1, depth=2, terminal=True,
                      siblings=(SampleRecord(" Bad code", node_id=5, kept=False, terminal=True, value=0.25,
                                             reward=0.25, hard=0, verdict="failed", eval_verdict="failed",
                                             eval_passed=False),))
    return TrajectoryRecord("mbpp/11", "pseudocode", (plan, code), code="def f(): pass", verdict="passed",
                            reward=1.0, eval_passed=True, answer=True, model="m", seed=3, eval_verdict="passed",
                            split="train", reward_tests="visible")


def test_old_lines_read_with_none_for_what_they_lack():
    rec = TrajectoryRecord.from_dict(OLD[0])
    assert rec.texts == (" Plan (Action 1)", " Code A (Action 3)") and rec.answer and rec.eval_passed
    assert rec.split is None and rec.eval_verdict is None and rec.reward_tests is None
    assert all(s.node_id is None and s.siblings == () for s in rec.steps)
    d = rec.to_dict()
    assert {k: d[k] for k in OLD[0] if k != "steps"} == {k: v for k, v in OLD[0].items() if k != "steps"}
    assert [{k: s[k] for k in OLD[0]["steps"][0]} for s in d["steps"]] == OLD[0]["steps"]
    older = {k: v for k, v in OLD[1].items() if k != "answer"}
    older["steps"] = [{k: v for k, v in s.items() if k != "hard"} for s in older["steps"]]
    rec = TrajectoryRecord.from_dict(older)
    assert not rec.answer and rec.steps[0].hard is None


def test_round_trip_through_json():
    rec = new_record()
    line = json.dumps(rec.to_dict())
    assert TrajectoryRecord.from_dict(json.loads(line)) == rec
    assert list(rec.to_dict())[:10] == ["task_id", "mode", "steps", "code", "verdict", "reward", "eval_passed",
                                        "answer", "model", "seed"]


def test_read_trajectories_both_formats_and_a_torn_line(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    lines = [json.dumps(d) for d in (*OLD, new_record().to_dict())]
    path.write_text("\n".join(lines) + "\n" + lines[0][:40])  # an interrupted append
    records = read_trajectories(path)
    assert len(records) == 3 and records[2] == new_record()
    assert read_trajectories(tmp_path / "missing.jsonl") == []
    path.write_text(json.dumps({"mode": "x"}) + "\n")
    with pytest.raises(DataError, match="record 1"):
        read_trajectories(path)


def test_pointwise_examples_once_per_node():
    rec = new_record()
    other = TrajectoryRecord("mbpp/11", "pseudocode", (rec.steps[0],), model="m", seed=3)  # shares node 1
    examples = pointwise_examples([rec, other])
    assert [(e.prefix, e.step, e.value, e.hard) for e in examples] == [
        ((), " Plan (Action 1)", 0.5, 1), ((" Plan (Action 1)",), " Code (Action 3)", 1.0, 1)]
    assert examples[0].split == "train" and examples[0].reward_tests == "visible"
    # old records: the same step of two paths is matched by its text prefix
    old = [TrajectoryRecord.from_dict(d) for d in OLD]
    assert [(e.step, e.value) for e in pointwise_examples(old)] == [
        (" Plan (Action 1)", 0.75), (" Code A (Action 3)", 1.0), (" Code B (Action 3)", 0.0)]
    assert len(pointwise_examples(old, min_visits=2)) == 2


def test_pairwise_examples_from_siblings_and_dropped_samples():
    pairs = pairwise_examples([new_record()], margin=0.1)
    got = {(p.prefix, p.chosen, p.rejected, p.chosen_value, p.rejected_value) for p in pairs}
    assert got == {
        ((), " Plan (Action 1)", " Other (Action 1)", 0.5, 0.0),  # the unvisited sibling has no value
        ((" Plan (Action 1)",), " Code (Action 3)", " Bad code", 1.0, 0.25),  # a dropped code sample
    }
    assert [p.chosen for p in pairwise_examples([new_record()], margin=0.6)] == [" Code (Action 3)"]
    # old records have no siblings: steps after the same text prefix pair up across records
    (pair,) = pairwise_examples([TrajectoryRecord.from_dict(d) for d in OLD])
    assert (pair.prefix, pair.chosen, pair.rejected) == ((" Plan (Action 1)",), " Code A (Action 3)",
                                                        " Code B (Action 3)")


def test_data_layer_imports_no_upper_layer():
    code = ("import sys, o1code.data.trajectories; "
            "print(sorted(m for m in sys.modules if m.startswith(('o1code.envs', 'o1code.agents', 'o1code.rewards'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_in_problem_order_groups_a_files_records_as_the_local_run_wrote_them():
    """A search on Ray commits problems in arrival order; SFT and the PRM rows read them in problem order
    (the ids' natural order, or the one given), each problem's records in their file order."""
    recs = [TrajectoryRecord(t, "direct", (s,), seed=i) for i, (t, s) in
            enumerate([("mbpp/10", "a"), ("mbpp/9", "b"), ("mbpp/10", "c"), ("mbpp/100", "d")])]
    assert [(r.task_id, r.steps) for r in in_problem_order(recs)] == [
        ("mbpp/9", ("b",)), ("mbpp/10", ("a",)), ("mbpp/10", ("c",)), ("mbpp/100", ("d",))]
    assert [r.steps for r in in_problem_order(recs, ["mbpp/100", "mbpp/10", "mbpp/9"])] == [("d",), ("a",), ("c",), ("b",)]
