"""o1code.data: bundled MBPP splits, entry points, known-bad tasks, user JSONL and its errors."""

import ast
import json

import pytest

from o1code.data import (
    MBPP_KNOWN_BAD,
    DataError,
    Problem,
    ProblemFormatError,
    derive_entry_point,
    get_problem,
    load_mbpp,
    load_problems,
)


@pytest.mark.parametrize(
    "split,full,sanitized",
    [("prompt", 10, 7), ("test", 500, 257), ("validation", 90, 43), ("train", 374, 120), ("all", 974, 427)],
)
def test_split_sizes(split, full, sanitized):
    assert len(load_mbpp(split)) == full
    assert len(load_mbpp(split, sanitized=True)) == sanitized


def test_split_id_ranges():
    ranges = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
    for split, (lo, hi) in ranges.items():
        ids = [int(p.task_id.split("/")[1]) for p in load_mbpp(split)]
        assert ids == list(range(lo, hi + 1))
        assert all(p.split == split for p in load_mbpp(split))


def _defined_names(code):
    return {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("sanitized", [False, True])
def test_every_test_calls_the_entry_point(sanitized):
    for p in load_mbpp("all", sanitized=sanitized):
        assert p.entry_point in _defined_names(p.reference), p.task_id
        for test in p.tests:
            called = {
                n.func.id for n in ast.walk(ast.parse(test)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            assert p.entry_point in called, (p.task_id, test)


def test_entry_point_may_shadow_a_builtin():
    # MBPP 126 defines and tests its own `sum`.
    assert get_problem("mbpp/126").entry_point == "sum"


def test_known_bad_tasks_are_flagged():
    flagged = {int(p.task_id.split("/")[1]) for p in load_mbpp("all") if p.known_bad}
    assert flagged == set(MBPP_KNOWN_BAD) == {341, 596, 642}
    assert not any(p.known_bad for p in load_mbpp("all", sanitized=True))


def test_problem_fields():
    p = get_problem("11")
    assert p.task_id == "mbpp/11" and p.source == "mbpp" and p.split == "test"
    assert p.entry_point == "remove_Occ" and len(p.tests) == 3 and len(p.challenge_tests) == 2
    assert "\r" not in p.reference
    assert "Node(1)" in get_problem("mbpp/367").setup_code
    s = get_problem("mbpp/2", sanitized=True)
    assert s.source == "mbpp-sanitized" and s.text != get_problem("mbpp/2").text


def test_problems_are_frozen():
    p = get_problem("mbpp/11")
    with pytest.raises(AttributeError):
        p.text = "x"


def test_unknown_split_and_task():
    with pytest.raises(DataError, match="unknown MBPP split 'dev'"):
        load_mbpp("dev")
    with pytest.raises(DataError, match="mbpp/9999"):
        get_problem("mbpp/9999")


def test_derive_entry_point_errors():
    with pytest.raises(DataError, match="no function name"):
        derive_entry_point(["assert f(1) == 2", "assert g(1) == 2"])
    with pytest.raises(DataError, match="not valid Python"):
        derive_entry_point(["assert f(1 == 2"])
    assert derive_entry_point(["assert set(f(1)) == set([2])", "assert f(2) == [3]"]) == "f"


def _write(tmp_path, lines):
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_problems_roundtrip(tmp_path):
    originals = load_mbpp("prompt")[:3]
    path = _write(tmp_path, [json.dumps(p.to_dict()) for p in originals])
    assert load_problems(path) == originals


def test_load_problems_minimal_record(tmp_path):
    rec = {"task_id": "mine/1", "text": "Add two numbers.", "tests": ["assert add(1, 2) == 3"]}
    path = _write(tmp_path, ["", json.dumps(rec)])
    (p,) = load_problems(path)
    assert p == Problem(task_id="mine/1", text="Add two numbers.", entry_point="add",
                        tests=("assert add(1, 2) == 3",), source="problems")


def test_load_problems_missing_file(tmp_path):
    with pytest.raises(DataError, match="problem file not found: .*nope.jsonl"):
        load_problems(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"task_id": "a", "text": "t", "tests": ["assert f(1) == 1"]', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"task_id": "a", "text": "t"}', "missing field 'tests'"),
        ('{"task_id": "a", "text": "t", "tests": []}', "has no tests"),
        ('{"task_id": "a", "text": "t", "tests": [1]}', "list of strings"),
        ('{"task_id": 3, "text": "t", "tests": ["assert f(1) == 1"]}', "'task_id' has type int"),
        ('{"task_id": "a", "text": "t", "tests": ["assert 1 == 1"]}', "no function name"),
        ('{"task_id": "a", "text": "t", "tests": ["assert f(1) == 1"], "entry_point": "1x"}', "identifier"),
    ],
)
def test_load_problems_bad_records_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"task_id": "ok", "text": "t", "tests": ["assert f(1) == 1"]})
    path = _write(tmp_path, [good, line])
    with pytest.raises(ProblemFormatError, match=message) as info:
        load_problems(path)
    assert f"{path}:2" in str(info.value)


def test_load_problems_duplicate_ids(tmp_path):
    rec = json.dumps({"task_id": "a", "text": "t", "tests": ["assert f(1) == 1"]})
    with pytest.raises(ProblemFormatError, match="duplicate task_id 'a'"):
        load_problems(_write(tmp_path, [rec, rec]))
