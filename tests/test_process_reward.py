"""o1code.rewards.process (one process-reward protocol, its adapters) and phi in CodeEnv."""

import pytest

from o1code.data import get_problem
from o1code.data.formats import describe_problem
from o1code.envs import CodeEnv, EnvError, EnvState
from o1code.rewards import (
    PhiConfig,
    PrefixValueFn,
    ProcessReward,
    ProcessRewardBase,
    QuestionScorer,
    RewardError,
    StepRewardFn,
    as_process_reward,
    default_question,
    phi,
    prefix_values,
    step_rewards,
)
from o1code.sandboxes import LocalSandbox

P = get_problem("mbpp/11")
CODE = " Generate the Python code (Action 3)\n```python\n" + P.reference + "\n```"


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=1) as sb:
        yield sb


class ByStep(ProcessRewardBase):
    """Scores a step by its first word: Plan 0.5, Refine 0.8, else 0.1; records its batches."""

    def __init__(self):
        self.batches = []

    def score_last(self, batch):
        self.batches.append([(p.task_id, tuple(s)) for p, s in batch])
        table = {"Plan": 0.5, "Refine": 0.8}
        return [table.get(s[-1].split()[0], 0.1) for _, s in batch]


class TextModel:
    """The shape of o1code.models.prm.ProcessRewardModel: (question text, steps) -> one value per step."""

    def __init__(self):
        self.questions = []

    def score_batch(self, batch, batch_size=8):
        self.questions += [q for q, _ in batch]
        return [[0.1 * (j + 1) for j in range(len(steps))] for _, steps in batch]


# -- the protocol and its adapters ----------------------------------------------------------------


def test_base_derives_each_method_from_the_other():
    prm = ByStep()
    assert isinstance(prm, ProcessReward)
    assert prm.score_batch([(P, ["Plan x", "Refine y", "Code"]), (P, [])]) == [[0.5, 0.8, 0.1], []]
    assert prm.batches == [[("mbpp/11", ("Plan x",)), ("mbpp/11", ("Plan x", "Refine y")),
                            ("mbpp/11", ("Plan x", "Refine y", "Code"))]]  # every prefix, one batch

    class Whole(ProcessRewardBase):
        def score_batch(self, batch):
            return [[float(len(s[: j + 1])) for j in range(len(s))] for _, s in batch]

    assert Whole().score_last([(P, ["a", "b"]), (P, ["a"])]) == [2.0, 1.0]
    assert Whole().score(P, ["a", "b", "c"]) == [1.0, 2.0, 3.0]
    with pytest.raises(NotImplementedError):
        ProcessRewardBase().score_last([(P, ["a"])])
    with pytest.raises(RewardError, match="at least one step"):
        Whole().score_last([(P, [])])
    with pytest.raises(RewardError, match="at least one step"):
        prefix_values(ByStep(), [(P, [])])


def test_old_hooks_through_adapters():
    calls = []
    env_hook = StepRewardFn(lambda p, prev, step: calls.append((p.task_id, prev, step)) or 0.25)
    assert env_hook.score_last([(P, ("a", "b"))]) == [0.25] and calls == [("mbpp/11", ("a",), "b")]
    assert env_hook.score_batch([(P, ["a", "b"])]) == [[0.25, 0.25]]
    assert calls[1:] == [("mbpp/11", (), "a"), ("mbpp/11", ("a",), "b")]
    value_hook = PrefixValueFn(lambda p, steps: len(steps) / 10)
    assert value_hook.score_last([(P, ["a", "b"])]) == [0.2]
    assert step_rewards(value_hook, P, ["a", "b", "c"]) == pytest.approx([0.1, 0.2, 0.3])
    assert step_rewards(value_hook, P, []) == [] and prefix_values(value_hook, []) == []


def test_as_process_reward_picks_the_wrapper():
    assert as_process_reward(None) is None
    prm = ByStep()
    assert as_process_reward(prm) is prm
    assert isinstance(as_process_reward(lambda p, prev, s: 0.0), StepRewardFn)
    assert isinstance(as_process_reward(lambda p, s: 0.0, PrefixValueFn), PrefixValueFn)
    model = TextModel()
    wrapped = as_process_reward(model)
    assert isinstance(wrapped, QuestionScorer) and isinstance(wrapped, ProcessReward)
    assert wrapped.score_last([(P, ["a", "b"])]) == [pytest.approx(0.2)]
    assert model.questions == [default_question(P)]
    with pytest.raises(RewardError, match="not a process reward"):
        as_process_reward(42)


def test_default_question_is_the_problem_as_shown_without_hidden_tests():
    q = default_question(P, "vanilla", "first")
    assert q == describe_problem(P, "first") == default_question(P, "pseudocode", "first")
    assert P.tests[0].strip() in q and P.tests[1].strip() not in q  # the reward tests, never the judging ones


def test_wrong_lengths_are_errors():
    class Short(ProcessRewardBase):
        def score_last(self, batch):
            return [0.5]

    with pytest.raises(RewardError, match="1 values for 2 inputs"):
        prefix_values(Short(), [(P, ["a"]), (P, ["b"])])
    with pytest.raises(RewardError, match="step values"):
        step_rewards(QuestionScorer(type("M", (), {"score_batch": lambda self, b: [[0.5]]})()), P, ["a", "b"])


# -- phi ------------------------------------------------------------------------------------------


def test_phi_config_numbers():
    # alpha(50) = 0.5: 0.5 * 1 + 0.5 * (0.9^0 * 0.5 + 0.9^1 * 0.8) / 2
    assert PhiConfig(t=50)(1.0, [0.5, 0.8]) == pytest.approx(0.805)
    assert PhiConfig(t=50, exponent_from=1)(1.0, [0.5, 0.8]) == pytest.approx(0.5 + 0.5 * (0.45 + 0.648) / 2)
    assert PhiConfig()(0.0, [0.5, 0.8], t=200) == pytest.approx(0.9 * (0.5 + 0.72) / 2)  # alpha floors at 0.1
    assert PhiConfig(t=200).alpha() == pytest.approx(0.1) and PhiConfig().alpha(30) == pytest.approx(0.7)
    assert PhiConfig(alpha_start=0.6, alpha_decay=0.0)(1.0, [0.0]) == pytest.approx(0.6)
    assert PhiConfig(t=50)(1.0, [0.5, 0.8]) == phi(1.0, [0.5, 0.8], t=50)
    assert PhiConfig()(0.3, []) == 0.3
    assert PhiConfig.coerce(None) is None and PhiConfig.coerce(False) is None
    assert PhiConfig.coerce(True) == PhiConfig() and PhiConfig.coerce({"t": 5}) == PhiConfig(t=5)
    with pytest.raises(RewardError, match="unknown phi settings: beta"):
        PhiConfig.coerce({"beta": 1})
    with pytest.raises(RewardError, match="gamma"):
        PhiConfig(gamma=1.5)


def env(sandbox, **kw):
    return CodeEnv(mode="pseudocode", task_ids=["mbpp/11", "mbpp/12"], max_steps=4, sandbox=sandbox, **kw)


def play(e, steps, options=None):
    e.reset(options={"task_id": "mbpp/11", **(options or {})})
    rewards = []
    for s in steps:
        _, r, term, trunc, info = e.step(s)
        rewards.append(r)
    return rewards, info


def test_env_emits_phi_at_the_terminal_step(sandbox):
    steps = [" Plan (Action 1)", " Refine (Action 2)", CODE]
    rewards, info = play(env(sandbox, process_reward=ByStep()), steps)  # default: no aggregation
    assert rewards == [0.5, 0.8, 1.0] and "outcome_reward" not in info
    prm = ByStep()
    e = env(sandbox, process_reward=prm, phi={"t": 50})
    rewards, info = play(e, steps)
    assert rewards[:2] == [0.5, 0.8] and rewards[2] == pytest.approx(0.805)
    assert info["outcome_reward"] == 1.0 and info["process_rewards"] == [0.5, 0.8]
    assert info["phi_alpha"] == pytest.approx(0.5) and info["eval"]["all_passed"]
    assert len(prm.batches) == 2  # one call per non-terminal step, none at the terminal step
    rewards, info = play(e, steps, options={"phi_t": 200})  # the trainer advances t
    assert rewards[2] == pytest.approx(0.1 + 0.9 * (0.5 + 0.72) / 2) and e.phi_t == 200
    rewards, _ = play(e, [CODE])  # code at once: no process rewards, phi is the outcome
    assert rewards == [1.0]
    with pytest.raises(EnvError, match="needs a process_reward"):
        env(sandbox, phi=True)


def test_phi_after_set_state(sandbox):
    prm = ByStep()
    e = env(sandbox, process_reward=prm, phi={"t": 50})
    e.reset(options={"task_id": "mbpp/11"})
    e.step(" Plan (Action 1)")
    state = e.get_state()
    assert state.process_rewards == (0.5,)
    e.step(" Refine (Action 2)")
    e.set_state(state)  # a search restores states that carry their process rewards ...
    assert e.step(" Refine (Action 2)")[1] == 0.8 and e.step(CODE)[1] == pytest.approx(0.805)
    e.set_state(EnvState("mbpp/11", (" Plan (Action 1)", " Refine (Action 2)"), False))  # ... or not
    prm.batches.clear()
    assert e.step(CODE)[1] == pytest.approx(0.805)
    plan, refine = " Plan (Action 1)", " Refine (Action 2)"
    assert prm.batches == [[("mbpp/11", (plan,)), ("mbpp/11", (plan, refine))]]  # the missing ones, one batch


def test_env_takes_a_question_text_model(sandbox):
    model = TextModel()
    e = env(sandbox, process_reward=model, show_tests="none")
    e.reset(options={"task_id": "mbpp/11"})
    e.step(" Plan (Action 1)")
    _, r, _, _, info = e.step(" Refine (Action 2)")
    assert r == pytest.approx(0.2) and info["process_reward"] == pytest.approx(0.2)
    assert model.questions[-1] == default_question(P, "pseudocode", "none")
