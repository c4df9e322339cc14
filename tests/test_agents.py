"""o1code.agents and o1code.pipeline.evaluate on a deterministic scripted generator."""

import json
import re

import pytest

from o1code.agents import LLMAgent, MCTSAgent, MCTSConfig, hard_label, trajectory_records
from o1code.data import get_problem
from o1code.data.trajectories import TrajectoryRecord, pairwise_examples, read_trajectories
from o1code.envs import CodeEnv
from o1code.models import Completion
from o1code.pipeline import EvalConfig, PipelineError, run_eval, summarise
from o1code.pipeline.evaluate import markdown_table
from o1code.rewards import ProcessRewardBase
from o1code.sandboxes import LocalSandbox

TASK = "mbpp/11"
GOOD = "```python\n" + get_problem(TASK).reference + "\n```"
BAD = "```python\ndef remove_Occ(s, ch):\n    return s\n```"
HALF = "```python\ndef remove_Occ(s, ch):\n    return 'heo' if s == 'hello' else s\n```"  # passes 1 of 3


class ScriptedGenerator:
    """Returns, for a prompt at step depth d, the n next options of `script[d]` in a fixed cycle.

    Deterministic: the same prompt and seed give the same completions. Counts its calls.
    """

    def __init__(self, script):
        self.script = script
        self.calls = 0
        self.prompts = []

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            self.calls += 1
            self.prompts.append(prompt)
            solution = prompt.rsplit("### Solution\n", 1)[1]
            depth = len(re.findall(r"^### Step \d+:", solution, flags=re.M)) - 1
            options = self.script[min(depth, len(self.script) - 1)]
            out.append([
                Completion(text=options[(params.seed + i) % len(options)], token_ids=[1] * 5, finish_reason="stop")
                for i in range(params.n)
            ])
        return out


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=1) as sb:
        yield sb


def env_for(sandbox, mode="pseudocode", max_steps=3):
    # Search mechanics are tested on graded (1/3, 2/3 ...) rewards: the three dataset tests.
    return CodeEnv(mode=mode, task_ids=[TASK, "mbpp/12"], max_steps=max_steps, sandbox=sandbox, tests="dataset")


def search(sandbox, script, **cfg):
    env = env_for(sandbox)
    env.reset(options={"task_id": TASK})
    gen = ScriptedGenerator(script)
    agent = MCTSAgent(gen, MCTSConfig(**cfg))
    return agent.search(env), gen, env


def test_values_are_means_of_backed_up_rewards(sandbox):
    script = [[" Plan A (Action 1)", " Plan B (Action 1)"], [GOOD, BAD, HALF]]
    result, gen, _ = search(sandbox, script, rollouts=8, children=2, keep_best_terminal=False)
    root = result.root
    assert root.visits == result.rollouts
    for node in root.walk():
        if node.children:
            # every visit of a node passes to exactly one child, terminals included
            assert node.visits == sum(c.visits for c in node.children) + (node is root and 0)
            assert node.total == pytest.approx(sum(c.total for c in node.children))
    for leaf in result.terminals:
        assert leaf.value == pytest.approx(leaf.reward)  # a terminal's value is its own reward
    # expansions happen once per node: never re-run a finished step's generation
    assert gen.calls == sum(1 for n in root.walk() if n.expanded)


def test_keep_best_terminal_and_hard_labels(sandbox):
    script = [[" Plan (Action 1)"], [BAD, GOOD, HALF]]
    result, _, _ = search(sandbox, script, rollouts=3, children=3)
    (plan,) = result.root.children
    assert len(plan.children) == 1 and plan.children[0].passed  # only the best terminal is kept
    assert plan.sampled == 3 and plan.sampled_terminal == 3 and plan.sampled_passing == 1
    assert hard_label(result.root) == hard_label(plan) == 1
    assert result.aspr == pytest.approx(1 / 3)
    assert result.code_samples == 3 and result.oracle_pass  # the dropped samples still count
    assert result.answer is plan.children[0] and result.answer.info["eval"]["all_passed"]
    assert result.answer.eval.all_passed and result.answer.eval.total == 3  # the typed reading of it


def test_no_correct_path_gives_no_aspr_and_hard_zero(sandbox):
    script = [[" Plan (Action 1)"], [BAD, HALF]]
    result, _, _ = search(sandbox, script, rollouts=4, children=2)
    assert result.aspr is None and hard_label(result.root) == 0
    assert result.answer.reward == pytest.approx(1 / 3)


def test_step_limit_terminals_get_zero(sandbox):
    script = [[" Think (Action 1)"], [" More (Action 2)"], [" still no code"]]
    result, _, _ = search(sandbox, script, rollouts=3, children=1)
    assert all(t.reward == 0.0 and t.terminal for t in result.terminals)
    assert all(len(t.state.steps) == 3 for t in result.terminals)


def test_answer_is_best_mean_value_then_visits(sandbox):
    script = [[" Plan A (Action 1)", " Plan B (Action 1)"], [HALF, GOOD]]
    result, _, _ = search(sandbox, script, rollouts=10, children=2, seed=3)
    best = max(result.terminals, key=lambda n: (n.value, n.visits))
    assert result.answer is best and result.answer.passed


def test_budget_in_rollouts_and_time(sandbox):
    script = [[" A (Action 1)", " B (Action 1)", " C (Action 1)"], [" R (Action 2)", " S (Action 2)"], [HALF]]
    result, _, _ = search(sandbox, script, rollouts=4, children=3)
    assert result.rollouts == 4 and result.root.visits == 4
    result, _, _ = search(sandbox, script, rollouts=1000, children=3, time_budget_s=0.0)
    assert result.rollouts == 1


def test_search_is_deterministic_under_a_seed(sandbox):
    script = [[" A (Action 1)", " B (Action 1)", " C (Action 1)"], [GOOD, BAD, HALF]]
    shape = lambda r: [(n.step, n.visits, round(n.total, 6)) for n in r.root.walk()]  # noqa: E731
    a, _, _ = search(sandbox, script, rollouts=6, children=2, seed=5)
    b, _, _ = search(sandbox, script, rollouts=6, children=2, seed=5)
    assert shape(a) == shape(b)


def test_env_is_restored_after_search(sandbox):
    script = [[" Plan (Action 1)"], [GOOD]]
    result, _, env = search(sandbox, script, rollouts=2, children=1)
    assert env.get_state() == result.root.state


def test_trajectory_records(sandbox, tmp_path):
    script = [[" Plan A (Action 1)", " Plan B (Action 1)"], [GOOD, BAD]]
    result, _, _ = search(sandbox, script, rollouts=6, children=2, keep_best_terminal=False)
    records = trajectory_records(result, TASK, "pseudocode", model="scripted", seed=0)
    assert all(isinstance(r, TrajectoryRecord) for r in records)
    assert len(records) == len(result.terminals) and sum(r.answer for r in records) == 1
    for rec in records:
        r = rec.to_dict()
        assert set(r) >= {"task_id", "mode", "steps", "code", "verdict", "reward", "eval_passed", "model", "seed",
                          "answer", "eval_verdict", "split", "reward_tests"}
        assert len(r["steps"]) == 2 and all({"text", "value", "visits", "prm", "hard"} <= set(s) for s in r["steps"])
        assert r["steps"][-1]["hard"] == int(r["verdict"] == "passed")
        assert r["split"] == "test" and r["reward_tests"] == "dataset"
        assert r["eval_verdict"] == ("passed" if r["eval_passed"] else "failed")
        assert TrajectoryRecord.from_dict(json.loads(json.dumps(r))) == rec
        # node ids chain: the first step hangs off the root (0), each next one off the step before
        ids = [s.node_id for s in rec.steps]
        assert [s.parent_id for s in rec.steps] == [0, ids[0]] and [s.depth for s in rec.steps] == [1, 2]
    ids = {n.id for n in result.root.walk()}
    assert len(ids) == sum(1 for _ in result.root.walk()) and 0 in ids  # unique within the search


def test_records_keep_the_samples_keep_best_terminal_drops(sandbox):
    script = [[" Plan (Action 1)"], [BAD, GOOD, HALF]]
    result, _, _ = search(sandbox, script, rollouts=3, children=3)
    (plan,) = result.root.children
    assert len(plan.children) == 1 and len(plan.samples) == 3  # the tree keeps one, the node remembers three
    assert [c.kept for c in plan.samples].count(False) == 2
    (record,) = trajectory_records(result, TASK, "pseudocode")
    last = record.steps[-1]
    assert last.terminal and last.text == plan.children[0].step and last.hard == 1
    siblings = {s.text: s for s in last.siblings}
    assert set(siblings) == {plan.samples[i].step for i in range(3)} - {last.text}
    for s in siblings.values():  # dropped code samples: value = their reward, verdicts kept
        assert not s.kept and s.terminal and s.visits == 0 and s.hard == 0 and s.eval_passed is False
        assert s.value == s.reward and s.verdict == "failed" and s.eval_verdict == "failed"
    assert sorted(s.value for s in siblings.values()) == pytest.approx([0.0, 1 / 3])
    pairs = pairwise_examples([record])
    assert {(p.chosen, p.rejected) for p in pairs} >= {(last.text, t) for t in siblings}


class ConstantPRM(ProcessRewardBase):
    def __init__(self):
        self.batches = []

    def score_last(self, batch):
        self.batches.append([tuple(steps) for _, steps in batch])
        return [0.5 if "Plan A" in steps[-1] else 0.1 for _, steps in batch]


def test_value_fn_takes_a_process_reward_or_the_old_hook(sandbox):
    script = [[" Plan A (Action 1)", " Plan B (Action 1)"], [GOOD, BAD]]
    prm = ConstantPRM()
    env = env_for(sandbox)
    env.reset(options={"task_id": TASK})
    result = MCTSAgent(ScriptedGenerator(script), MCTSConfig(rollouts=4, children=2, value_weight=1.0),
                       value_fn=prm).search(env)
    assert len(prm.batches[0]) == 2  # the two children of the root scored in one call
    assert {c.step: c.prior for c in result.root.children} == {" Plan A (Action 1)": 0.5, " Plan B (Action 1)": 0.1}
    assert all(n.prior is None for n in result.terminals)  # terminals carry the reward instead
    seen = []

    def old_hook(problem, steps):
        seen.append((problem.task_id, steps))
        return 0.5

    env.reset(options={"task_id": TASK})
    legacy = MCTSAgent(ScriptedGenerator(script), MCTSConfig(rollouts=4, children=2, value_weight=1.0),
                       value_fn=old_hook).search(env)
    assert all(c.prior == 0.5 for c in legacy.root.children) and seen[0][0] == TASK
    assert isinstance(seen[0][1], tuple) and len(seen[0][1]) == 1
    records = trajectory_records(legacy, TASK, "pseudocode")
    assert all(r.steps[0].prm == 0.5 for r in records)


def test_mcts_agent_plays_its_answer_through_act(sandbox):
    env = env_for(sandbox)
    obs, info = env.reset(options={"task_id": TASK})
    agent = MCTSAgent(ScriptedGenerator([[" Plan (Action 1)"], [GOOD]]), MCTSConfig(rollouts=2, children=1), env=env)
    while True:
        obs, reward, term, trunc, info = env.step(agent.act(obs, info))
        if term or trunc:
            break
    assert reward == 1.0 and info["eval"]["all_passed"]


def test_llm_agent_plays_greedy_steps(sandbox):
    env = env_for(sandbox, mode="direct", max_steps=1)
    obs, _ = env.reset(options={"task_id": TASK})
    gen = ScriptedGenerator([[GOOD]])
    agent = LLMAgent(gen)
    _, reward, term, _, _ = env.step(agent.act(obs))
    assert term and reward == 1.0 and agent.tokens == 5


def test_summarise_on_hand_computed_rows():
    rows = [
        {"task_id": "a", "passed": True, "tokens": 10, "steps": 2, "seconds": 4.0, "generate_seconds": 3.0, "aspr": 1.0},
        {"task_id": "b", "passed": False, "tokens": 20, "steps": 4, "seconds": 4.0, "generate_seconds": 3.0, "aspr": None},
        {"task_id": "c", "passed": True, "tokens": 30, "steps": 3, "seconds": 2.0, "generate_seconds": 0.0, "aspr": 0.5},
        {"task_id": "x", "passed": False, "known_bad": True, "tokens": 0, "steps": 0, "seconds": 0.0,
         "generate_seconds": 0.0, "aspr": None},
    ]
    s = summarise(rows, EvalConfig(agent="mcts"))
    assert s["pass_at_1"] == pytest.approx(2 / 3) and s["counted"] == 3 and s["known_bad_excluded"] == ["x"]
    assert s["aspr"] == pytest.approx(0.75) and s["aspr_problems"] == 2
    assert s["avg_tokens"] == 15 and s["outside_generation_share"] == pytest.approx(0.4)
    assert summarise(rows, EvalConfig(include_known_bad=True))["pass_at_1"] == pytest.approx(0.5)
    assert "| mcts | pseudocode |" in markdown_table([s])


class FailingAfter(ScriptedGenerator):
    def __init__(self, script, fail_at):
        super().__init__(script)
        self.fail_at = fail_at

    def generate(self, prompts, params):
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().generate(prompts, params)


def test_eval_resumes_where_it_stopped(tmp_path):
    cfg = EvalConfig(agent="greedy", mode="direct", tasks=["mbpp/11", "mbpp/12", "mbpp/14"], run_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, generator=FailingAfter([[GOOD]], fail_at=2), progress=False)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('{"task_id": "torn')  # a write cut short by the interruption
    gen = ScriptedGenerator([[GOOD]])
    summary = run_eval(cfg, generator=gen, progress=False)
    assert gen.calls == 1  # only the unfinished problem ran
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["mbpp/11", "mbpp/12", "mbpp/14"]
    assert summary["problems"] == 3 and summary["pass_at_1"] == pytest.approx(1 / 3)  # GOOD only fits mbpp/11
    for name in ("summary.json", "summary.md", "summary.png", "config.json"):
        assert (tmp_path / name).exists()
    with pytest.raises(PipelineError, match="other settings"):
        run_eval(EvalConfig(agent="greedy", mode="vanilla", run_dir=str(tmp_path)), generator=gen, progress=False)


def test_eval_mcts_writes_trajectories(tmp_path):
    cfg = EvalConfig(agent="mcts", mode="pseudocode", tasks=["mbpp/11"], run_dir=str(tmp_path), rollouts=3,
                     children=2, max_steps=3, tests="dataset")
    summary = run_eval(cfg, generator=ScriptedGenerator([[" Plan (Action 1)"], [GOOD, BAD]]), progress=False)
    assert summary["pass_at_1"] == 1.0 and summary["aspr"] == pytest.approx(0.5)
    lines = (tmp_path / "trajectories.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["task_id"] == "mbpp/11" for line in lines)
    records = read_trajectories(tmp_path / "trajectories.jsonl")
    assert len(records) == len(lines) and all(s.node_id is not None for r in records for s in r.steps)


def test_eval_config_errors():
    with pytest.raises(PipelineError, match="unknown agent"):
        EvalConfig(agent="beam").validate()
    with pytest.raises(PipelineError, match="unknown config keys: bogus"):
        EvalConfig.from_dict({"bogus": 1})
    with pytest.raises(PipelineError, match="not in split"):
        from o1code.pipeline.evaluate import select_problems

        select_problems(EvalConfig(tasks=["mbpp/1"]))


def test_prm_leaf_backs_up_the_value_and_saves_model_calls(sandbox):
    """With prm_leaf a rollout ends at the first node the PRM scores (its value backed up, one model call
    per rollout); a search whose leaf values reached no terminal plays one rollout out; without a PRM the
    option changes nothing."""
    script = [[" Plan A (Action 1)", " Plan B (Action 1)"], [GOOD, BAD]]
    env = env_for(sandbox)
    env.reset(options={"task_id": TASK})
    gen = ScriptedGenerator(script)
    one = MCTSAgent(gen, MCTSConfig(rollouts=1, children=2, prm_leaf=True), value_fn=ConstantPRM()).search(env)
    # the one rollout stopped at a plan (value 0.5 or 0.1 backed up), then one more played out to code
    assert one.rollouts == 2 and one.calls == gen.calls == 2 and one.answer is not None
    assert one.root.visits == 2 and one.root.total == pytest.approx(max(c.total for c in one.root.children)
                                                                     + min(c.total for c in one.root.children))
    deep = [script[0], [" Plan A in detail (Action 2)", " Plan B in detail (Action 2)"], [GOOD, BAD, HALF]]
    env.reset(options={"task_id": TASK})
    leaf = MCTSAgent(ScriptedGenerator(deep), MCTSConfig(rollouts=6, children=2, prm_leaf=True),
                     value_fn=ConstantPRM()).search(env)
    env.reset(options={"task_id": TASK})
    full = MCTSAgent(ScriptedGenerator(deep), MCTSConfig(rollouts=6, children=2), value_fn=ConstantPRM()).search(env)
    assert leaf.calls < full.calls and leaf.answer is not None
    assert all(c.value in (0.1, 0.5) for c in leaf.root.children if c.visits == 1)  # a PRM value, backed up
    env.reset(options={"task_id": TASK})
    plain = MCTSAgent(ScriptedGenerator(script), MCTSConfig(rollouts=4, children=2, prm_leaf=True)).search(env)
    env.reset(options={"task_id": TASK})
    assert plain.calls == MCTSAgent(ScriptedGenerator(script), MCTSConfig(rollouts=4, children=2)).search(env).calls
    with pytest.raises(PipelineError, match="prm_leaf"):
        EvalConfig(agent="mcts", prm_leaf=True).validate()
