"""o1code.envs: the O1Code-* environments, their step semantics, Gymnasium compliance, SB3 bridge."""

import dataclasses
import random
import typing

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import o1code  # noqa: F401  (registers the ids)
from o1code.data import get_problem, load_mbpp
from o1code.data.formats import STEP_END
from o1code.envs import ENV_IDS, CandidateSelection, CodeEnv, EnvError, EvalDict, EvalInfo, Observation, StepInfo
from o1code.sandboxes import LocalSandbox, TestCase

TASKS = ["mbpp/11", "mbpp/12", "mbpp/14"]


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=2) as sb:
        yield sb


def fenced(code):
    return f" Generate the Python code (Action 3)\n```python\n{code}\n```"


HUMANEVAL_TASKS = ["humaneval/0", "humaneval/32", "humaneval/53"]  # 32 and 53 have multi-statement tests


def make(env_id="O1Code-MBPP-v0", sandbox=None, **kw):
    tasks = HUMANEVAL_TASKS if "HumanEval" in env_id else TASKS
    return gym.make(env_id, task_ids=tasks, sandbox=sandbox, **kw)


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_check_env(env_id, sandbox):
    env = make(env_id, sandbox=sandbox)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_make_without_import():
    import subprocess
    import sys

    code = "import gymnasium as gym; e = gym.make('o1code:O1Code-MBPP-Direct-v0'); print(e.unwrapped.mode)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "direct"


def test_pseudocode_episode(sandbox):
    env = make(sandbox=sandbox, max_steps=4)
    obs, info = env.reset(options={"task_id": "mbpp/11"})
    assert obs["step"] == 0 and obs["steps"] == "" and obs["prompt"].endswith("### Step 1:")
    assert "remove_Occ" in obs["problem"] and obs["problem"] in obs["prompt"]

    step1 = " Define the function structure (Action 1)\n```pseudo\nremove_Occ(s, ch)\n```"
    obs, reward, term, trunc, info = env.step(step1 + "\n" + STEP_END)
    assert (reward, term, trunc) == (0.0, False, False)
    assert info["action_type"] == 1 and "action_cut" not in info
    assert obs["step"] == 1 and obs["prompt"].endswith(f"{step1}\n{STEP_END}\n\n### Step 2:")

    obs, reward, term, trunc, info = env.step(" Refine the pseudocode (Action 2)\nfind first, find last")
    assert info["action_type"] == 2 and not term

    ref = get_problem("mbpp/11").reference
    obs, reward, term, trunc, info = env.step(fenced(ref))
    assert term and not trunc and reward == 1.0
    # rewarded by the one visible test; judged by all three
    assert info["action_type"] == 3 and info["verdict"] == "passed" and info["passed"] == info["total"] == 1
    assert info["eval"]["passed"] == info["eval"]["total"] == 3
    assert info["eval"]["all_passed"] and info["code"].strip() == ref.strip()
    with pytest.raises(EnvError, match="finished episode"):
        env.step("more")


def test_truncation_at_max_steps(sandbox):
    env = make(sandbox=sandbox, max_steps=2, truncation_reward=-0.5)
    obs, _ = env.reset(seed=0)
    obs, r, term, trunc, _ = env.step(" Think (Action 1)")
    # The last allowed step's header asks for the code.
    assert obs["prompt"].endswith("### Step 2: Generate the Python code (Action 3)\n")
    obs, r, term, trunc, info = env.step("I still have no code")
    assert (r, term, trunc) == (-0.5, False, True)
    assert "Generate the Python code (Action 3)" in obs["steps"]


def test_last_step_header_is_kept_in_the_trace(sandbox):
    env = make(sandbox=sandbox, max_steps=1)
    env.reset(options={"task_id": "mbpp/11"})
    obs, r, term, _, info = env.step("```python\n" + get_problem("mbpp/11").reference + "\n```")
    assert term and r == 1.0
    assert obs["steps"].startswith("### Step 1: Generate the Python code (Action 3)\n```python")


def test_vanilla_and_direct_modes(sandbox):
    env = make("O1Code-MBPP-Vanilla-v0", sandbox=sandbox)
    obs, _ = env.reset(options={"task_id": "mbpp/12"})
    assert "Action 1" not in obs["prompt"]
    _, r, term, _, info = env.step(" Sort rows by their sums.")
    assert not term and "action_type" not in info
    _, r, term, _, _ = env.step(" Final\n```python\n" + get_problem("mbpp/12").reference + "\n```")
    assert term and r == 1.0

    direct = make("O1Code-MBPP-Direct-v0", sandbox=sandbox)
    obs, _ = direct.reset(options={"task_id": "mbpp/14"})
    assert obs["prompt"].endswith("### Step 1: Write the Python code\n")
    # Unfenced text is the code in direct mode; the episode always ends after one step.
    _, r, term, _, info = direct.step(get_problem("mbpp/14").reference)
    assert term and r == 1.0
    direct.reset(options={"task_id": "mbpp/14"})
    _, r, term, _, info = direct.step("def broken(:\n  pass")
    assert term and r == 0.0 and info["verdict"] == "syntax_error"


@pytest.mark.parametrize(
    "action",
    ["", "\x00\x01garbage", "é" * 10, "emoji \U0001F600 here", None, 12345, "x" * 100_000, STEP_END * 3],
)
def test_any_action_is_legal(action, sandbox):
    for env_id in ENV_IDS:
        env = make(env_id, sandbox=sandbox, max_steps=None if env_id.endswith("Direct-v0") else 3)
        obs, _ = env.reset(seed=1)
        obs, r, term, trunc, info = env.step(action)
        assert isinstance(r, float)
        assert env.observation_space.contains(obs), env_id
    if isinstance(action, str) and len(action) > 8192:
        assert info["action_truncated"] == 100_000
    if isinstance(action, str) and "\U0001F600" in action:
        assert info["action_replaced_chars"]


def test_step_with_several_code_blocks_uses_the_one_defining_the_entry_point(sandbox):
    ref = get_problem("mbpp/11").reference
    action = fenced(ref) + "\nUsage:\n```python\nprint(remove_Occ('hello', 'l'))\n```"
    env = make(sandbox=sandbox)
    env.reset(options={"task_id": "mbpp/11"})
    _, r, term, _, info = env.step(action)
    assert term and r == 1.0 and info["code"].strip() == ref.strip()


def test_model_writing_past_its_step_is_cut(sandbox):
    env = make(sandbox=sandbox)
    env.reset(options={"task_id": "mbpp/11"})
    obs, _, term, _, info = env.step(" Plan (Action 1)\nok\n### Step 2: Generate (Action 3)\n```python\nx\n```")
    assert not term and info["action_cut"] and "### Step 2: Generate" not in obs["steps"]


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\ndef remove_Occ(s, ch):\n    sys.exit(0)\nsys.exit(0)",
        "import os\nos._exit(0)",
        "class Eq(str):\n    def __eq__(self, o): return True\n    __hash__ = str.__hash__\n"
        "def remove_Occ(s, ch):\n    return Eq('x')",
        "def remove_Occ(s, ch):\n    print('PASSED 3/3')\n    return None",
        "import builtins\nbuiltins.__dict__['AssertionError'] = type('X', (Exception,), {})\n"
        "def remove_Occ(s, ch): return 0",
    ],
)
def test_cheating_earns_nothing(cheat, sandbox):
    env = make("O1Code-MBPP-Direct-v0", sandbox=sandbox)
    env.reset(options={"task_id": "mbpp/11"})
    _, r, term, _, info = env.step(f"```python\n{cheat}\n```")
    assert term and r == 0.0 and not info["eval"]["all_passed"], info["verdict"]


def test_reward_forms_and_custom_test_source(sandbox):
    class Two:
        def tests_for(self, problem):
            return [TestCase('remove_Occ("hello","l")', "heo"), TestCase('remove_Occ("aa","a")', "?")]

    env = make("O1Code-MBPP-Direct-v0", sandbox=sandbox, tests=Two(), alpha=0.2)
    env.reset(options={"task_id": "mbpp/11"})
    _, r, _, _, info = env.step(get_problem("mbpp/11").reference)
    assert r == pytest.approx(0.2 + 0.8 * 0.5)
    assert info["total"] == 2 and info["tests"][0] == "assert remove_Occ(\"hello\",\"l\") == 'heo'"
    assert info["eval"] == {"verdict": "passed", "passed": 3, "total": 3, "all_passed": True}
    ev = EvalInfo.from_info(info)
    assert ev == EvalInfo("passed", 3, 3, True) and ev.to_dict() == info["eval"]

    binary = make("O1Code-MBPP-Direct-v0", sandbox=sandbox, tests=Two(), reward="binary", tau_fail=-1.0)
    binary.reset(options={"task_id": "mbpp/11"})
    assert binary.step(get_problem("mbpp/11").reference)[1] == -1.0


def test_typed_results():
    hints = typing.get_type_hints(CodeEnv.step)
    assert hints["return"] == tuple[Observation, float, bool, bool, StepInfo]
    assert typing.get_type_hints(CodeEnv.reset)["return"] == tuple[Observation, StepInfo]
    assert set(typing.get_type_hints(Observation)) == {"prompt", "problem", "steps", "step"}
    assert set(typing.get_type_hints(EvalDict)) == {f.name for f in dataclasses.fields(EvalInfo)}
    assert EvalInfo.from_info({"task_id": "mbpp/11", "step": 1}) is None  # no code, no judging run


def test_process_reward_hook(sandbox):
    seen = []

    def prm(problem, previous, step):
        seen.append((problem.task_id, len(previous), step))
        return 0.25

    env = make(sandbox=sandbox, process_reward=prm)
    env.reset(options={"task_id": "mbpp/12"})
    _, r, _, _, info = env.step(" Plan (Action 1)")
    assert r == 0.25 and info["process_reward"] == 0.25 and seen == [("mbpp/12", 0, " Plan (Action 1)")]


def test_seeded_resets_are_deterministic():
    env = gym.make("O1Code-MBPP-v0")
    a = [env.reset(seed=7)[1]["task_id"]] + [env.reset()[1]["task_id"] for _ in range(4)]
    b = [env.reset(seed=7)[1]["task_id"]] + [env.reset()[1]["task_id"] for _ in range(4)]
    assert a == b and len(set(a)) > 1


def test_get_and_set_state(sandbox):
    env = make(sandbox=sandbox).unwrapped
    env.reset(options={"task_id": "mbpp/11"})
    env.step(" Plan (Action 1)")
    snap = env.get_state()
    obs_at_snap = env.observation()
    _, r1, term, _, _ = env.step(fenced("def remove_Occ(s, ch): return s"))
    assert term
    env.set_state(snap)
    assert env.observation() == obs_at_snap
    _, r2, term, _, _ = env.step(fenced(get_problem("mbpp/11").reference))
    assert term and (r1, r2) == (0.0, 1.0)
    with pytest.raises(Exception):
        snap.steps = ()  # immutable
    with pytest.raises(EnvError):
        env.set_state(type(snap)("mbpp/999", (), False))


def test_bad_configuration():
    with pytest.raises(Exception, match="unknown mode"):
        CodeEnv(mode="fancy")
    with pytest.raises(EnvError, match="unknown task ids"):
        CodeEnv(task_ids=["mbpp/1"])  # a prompt-split task is not in the test split
    with pytest.raises(EnvError, match="unknown tests"):
        CodeEnv(tests="tcg-not-yet")
    env = CodeEnv(task_ids=TASKS)
    with pytest.raises(EnvError, match="unknown task_id"):
        env.reset(options={"task_id": "mbpp/500"})


def test_render_ansi(sandbox):
    env = make("O1Code-MBPP-Direct-v0", sandbox=sandbox, render_mode="ansi")
    env.reset(options={"task_id": "mbpp/11"})
    env.step("def remove_Occ(s, ch): return s")
    text = env.render()
    assert "mbpp/11" in text and "verdict: failed (0/1 reward tests); dataset tests: failed (0/3)" in text


def test_standard_wrappers(sandbox):
    env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.TimeLimit(make(sandbox=sandbox), max_episode_steps=2))
    env.reset(seed=0)
    env.step(" Plan (Action 1)")
    _, _, term, trunc, info = env.step(" Refine (Action 2)")
    assert trunc and "episode" in info and info["episode"]["l"] == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode):
    envs = gym.make_vec(
        "O1Code-MBPP-Direct-v0",
        num_envs=2,
        vectorization_mode=mode,
        vector_kwargs={"shared_memory": False} if mode == "async" else {},
        task_ids=TASKS,
    )
    try:
        obs, infos = envs.reset(seed=3)
        assert len(obs["prompt"]) == 2
        refs = [get_problem(t).reference for t in infos["task_id"]]
        obs, rewards, term, trunc, infos = envs.step(refs)
        assert list(rewards) == [1.0, 1.0] and all(term)
    finally:
        envs.close()


@pytest.mark.slow
def test_replaying_references_earns_full_reward_on_all_good_tasks(sandbox):
    problems = load_mbpp("all")
    env = CodeEnv(mode="direct", problems=problems, tests="dataset", sandbox=sandbox, timeout_s=10.0)
    failures = []
    for p in problems:
        env.reset(options={"task_id": p.task_id})
        _, r, term, _, info = env.step(p.reference)
        if p.known_bad:
            assert r < 1.0, p.task_id
        elif r != 1.0:
            failures.append((p.task_id, info["verdict"], info["message"]))
    assert not failures
    assert sum(not p.known_bad for p in problems) == 971


class ShuffledProposer:
    """Offers the reference and three wrong programs in a seeded random order."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)

    def propose(self, observation, k):
        p = next(p for p in map(get_problem, TASKS) if p.text in observation["problem"])
        options = [p.reference, f"def {p.entry_point}(*a):\n    return None", "syntax error (", "pass"]
        self.rng.shuffle(options)
        return options[:k]


def test_candidate_selection_with_stable_baselines3(sandbox):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = CandidateSelection(CodeEnv(mode="direct", task_ids=TASKS, sandbox=sandbox), ShuffledProposer(), k=4)
    sb3_check_env(env)
    obs, info = env.reset(seed=0)
    assert obs.shape == (5 * 64,) and len(info["candidates"]) == 4
    index = info["candidates"].index(get_problem(info["task_id"]).reference)
    _, r, term, _, info = env.step(index)
    assert r == 1.0 and term

    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, verbose=0)
    model.learn(total_timesteps=256)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


def test_humaneval_env_rewards_visible_examples_and_judges_all_tests(sandbox):
    from o1code.data import load_dataset

    env = make("O1Code-HumanEval-Direct-v0", sandbox=sandbox)
    for task in HUMANEVAL_TASKS:
        p = next(q for q in load_dataset("humaneval") if q.task_id == task)
        obs, _ = env.reset(options={"task_id": task})
        assert p.entry_point in obs["prompt"]
        _, reward, term, _, info = env.step(p.reference)
        assert term and reward == 1.0 and info["eval"]["all_passed"], (task, info["message"])
        assert info["total"] == len(p.visible()) and info["eval"]["total"] == len(p.tests)
