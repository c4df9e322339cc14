"""Run directories (`o1code.runs`): atomic writes, the torn-last-line rule, pinned configs, stage markers."""

import json
import logging
import signal
import subprocess
import sys
import textwrap

import pytest

from o1code import O1CodeError
from o1code.errors import RunDirError
from o1code.runs import (append_jsonl, atomic_open, is_done, load_config, mark_done, pin_config, read_jsonl,
                         write_atomic, write_jsonl)


def test_write_atomic_text_and_bytes(tmp_path):
    path = tmp_path / "a.json"
    write_atomic(path, '{"x": "é"}')
    assert path.read_text(encoding="utf-8") == '{"x": "é"}'
    write_atomic(path, b"raw")
    assert path.read_bytes() == b"raw"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_write_atomic_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.md"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_append_and_read_jsonl(tmp_path):
    path = tmp_path / "r.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, [{"a": 1}, {"b": "ü"}])
    append_jsonl(path, [])
    append_jsonl(path, [{"c": None}])
    assert read_jsonl(path) == [{"a": 1}, {"b": "ü"}, {"c": None}]
    write_jsonl(path, [{"a": 1}])
    assert path.read_text() == '{"a": 1}\n'


@pytest.mark.parametrize("tail", ['{"task_id": "tor', '{"task_id": "complete but no newline"}', "{broken}\n"])
def test_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog, tail):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, [{"task_id": "a"}, {"task_id": "b"}])
    good = path.read_bytes()
    with path.open("a") as fh:
        fh.write(tail)
    with caplog.at_level(logging.WARNING, logger="o1code.runs"):
        assert read_jsonl(path) == [{"task_id": "a"}, {"task_id": "b"}]
    assert "torn line" in caplog.text
    assert path.read_bytes() == good + tail.encode()  # reading alone leaves the file as it is
    assert read_jsonl(path, repair=True) == [{"task_id": "a"}, {"task_id": "b"}]
    assert path.read_bytes() == good  # a resuming writer cuts it ...
    append_jsonl(path, [{"task_id": "c"}])  # ... so the next append starts on a clean line
    assert [r["task_id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_a_bad_line_before_the_last_is_corruption(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(RunDirError, match=r"results.jsonl:2: not a JSON record"):
        read_jsonl(path, repair=True)
    assert path.read_text() == '{"a": 1}\nnot json\n{"b": 2}\n'  # nothing dropped silently


WRITER = textwrap.dedent("""
    import sys
    from o1code.runs import append_jsonl
    path = sys.argv[1]
    i = 0
    while True:
        append_jsonl(path, [{"i": i, "pad": "x" * 5000}, {"i": i + 1, "pad": "y" * 5000}])
        i += 2
        if i == 20:
            print("ready", flush=True)
""")


def test_kill_between_and_during_appends_loses_no_finished_record(tmp_path):
    path = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    records = read_jsonl(path, repair=True)
    assert len(records) >= 20
    assert [r["i"] for r in records] == list(range(len(records)))  # a prefix, in order, none torn
    assert path.read_bytes().endswith(b"\n")
    append_jsonl(path, [{"i": len(records)}])
    assert [r["i"] for r in read_jsonl(path)] == list(range(len(records) + 1))


def test_pinned_config_refuses_a_resume_with_other_settings(tmp_path):
    run = tmp_path / "run"
    first = {"agent": "mcts", "rollouts": 8, "limit": 10, "oracle": False}
    assert pin_config(run, first, ignore={"limit", "oracle"}) is None
    assert load_config(run) == first
    # ignored keys may change, and the file then shows the latest call
    assert pin_config(run, {**first, "limit": 20}, ignore={"limit", "oracle"}) == first
    assert load_config(run)["limit"] == 20
    with pytest.raises(RunDirError) as info:
        pin_config(run, {**first, "rollouts": 12, "children": 2}, ignore={"limit", "oracle"})
    message = str(info.value)
    assert "rollouts: 8 -> 12" in message and "children: '(unset)' -> 2" in message
    assert "agent" not in message and "other settings" in message
    assert isinstance(info.value, O1CodeError) and isinstance(info.value, ValueError)
    assert load_config(run)["rollouts"] == 8  # a refused resume leaves the pinned config alone


def test_pinned_config_that_is_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match="config.json is not valid JSON"):
        pin_config(tmp_path, {"a": 1})


def test_stage_markers(tmp_path):
    assert not is_done(tmp_path, "sft")
    path = mark_done(tmp_path, "sft", {"steps": 3})
    assert is_done(tmp_path, "sft") and not is_done(tmp_path, "prm")
    record = json.loads(path.read_text())
    assert record["stage"] == "sft" and record["steps"] == 3 and "finished" in record
    assert path.name == "sft.done"
    mark_done(tmp_path / "new", "iter-1.prm")  # the run directory is created
    assert is_done(tmp_path / "new", "iter-1.prm")
    for bad in ("", "../escape", "a/b", ".hidden"):
        with pytest.raises(RunDirError, match="bad stage name"):
            mark_done(tmp_path, bad)


def test_runs_imports_only_the_standard_library_and_errors():
    import o1code.runs

    imports = [line for line in open(o1code.runs.__file__).read().splitlines() if line.startswith(("import ", "from "))]
    assert [line.split(" import ")[0] for line in imports if "o1code" in line] == ["from o1code.errors"]
