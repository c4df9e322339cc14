"""Step-level PPO and GRPO on the tiny model: the reward must rise on a learnable toy env, and a
resumed run must equal an uninterrupted one."""

import gymnasium as gym
import pytest

from o1code.agents.errors import AgentError
from o1code.agents.ppo import PPOConfig, Step, gae, group_advantages, train
from o1code.agents.ppo import Episode
from o1code.models.policy import Policy, PolicyConfig
from o1code.models.tiny import build_tiny_model

TARGET = set("abcdefghijklm")


class LetterEnv(gym.Env):
    """One-step episodes; the reward is the share of the step's characters in a-m: learnable from the
    tokens alone (random tokens score about 0.25), so a wrong sign or ratio cannot make it rise."""

    def reset(self, seed=None, options=None):
        return {"prompt": "Write some letters:", "step": 0}, {"task_id": "toy/1"}

    def step(self, action):
        reward = sum(c in TARGET for c in action) / max(1, len(action))
        return {"prompt": "", "step": 1}, reward, True, False, {"verdict": "passed" if reward > 0.5 else "failed"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def _run(tiny, tmp_path, algo, updates, run="run", **kw):
    policy = Policy(PolicyConfig(model=tiny, device="cpu"))  # full fine-tuning: the reference is a frozen copy
    cfg = PPOConfig(algo=algo, updates=updates, episodes_per_update=8, group_size=4, max_step_tokens=8,
                    learning_rate=1e-2, update_epochs=2, minibatch_size=8, micro_batch=8, kl_coef=0.0,
                    **{"save_every": 100, **kw})
    return train(policy, LetterEnv, cfg, tmp_path / run, progress=False)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_reward_rises(tiny, tmp_path, algo):
    res = _run(tiny, tmp_path, algo, 20)
    rewards = [h["reward"] for h in res.history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.3, rewards
    assert (tmp_path / "run" / "final" / "policy.json").is_file()
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard events
    h = res.history[-1]
    assert {"kl", "entropy", "policy_loss", "value_loss", "clip_frac", "approx_kl", "reward_test_pass",
            "hidden_test_pass", "seconds_per_update", "tokens_per_s", "tis_ratio", "tis_truncated", "engine_kl",
            "seconds/sample", "seconds/score", "seconds/train", "seconds/env", "seconds/sync"} <= set(h)
    # the transformers engine samples with the trainer's weights: its log-probs are the trainer's
    assert h["tis_ratio"] == pytest.approx(1.0, abs=1e-3) and h["engine_kl"] < 1e-5
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Tags()["scalars"]
    assert {"train/tis_ratio", "train/tis_truncated", "train/engine_kl"} <= set(tags)


def test_resume_equals_uninterrupted(tiny, tmp_path):
    straight = _run(tiny, tmp_path, "ppo", 4, run="a")
    _run(tiny, tmp_path, "ppo", 2, run="b", save_every=2)
    resumed = _run(tiny, tmp_path, "ppo", 4, run="b", save_every=2)  # more updates: goes on from update 2
    assert [h["reward"] for h in resumed.history] == [h["reward"] for h in straight.history]
    assert [h["policy_loss"] for h in resumed.history] == pytest.approx([h["policy_loss"] for h in straight.history])
    with pytest.raises(Exception, match="learning_rate"):
        _run(tiny, tmp_path, "ppo", 4, run="b", learning_rate=1e-3)
    # another engine samples other steps: a resume on it is refused, naming the engines
    with pytest.raises(Exception, match="engine: 'transformers' -> 'llamacpp'"):
        _run(tiny, tmp_path, "ppo", 4, run="b", engine="llamacpp")


def test_advantages():
    steps = [Step(0, "p", [1], "a", [0.0], [0.0], None, value=0.5, reward=0.0),
             Step(0, "p", [1], "b", [0.0], [0.0], None, value=0.2, reward=1.0, done=True)]
    gae(steps, gamma=1.0, lam=1.0)
    assert steps[1].advantage == pytest.approx(0.8) and steps[1].ret == pytest.approx(1.0)
    assert steps[0].advantage == pytest.approx(0.5) and steps[0].ret == pytest.approx(1.0)
    eps = [Episode("t", ret=r) for r in (1.0, 0.0, 0.0, 1.0)]
    steps = [Step(i, "p", [1], "x", [0.0], [0.0], None, 0.0) for i in range(4)]
    group_advantages(steps, eps, group_size=2)
    assert steps[0].advantage == pytest.approx(1.0, abs=1e-4) and steps[1].advantage == pytest.approx(-1.0, abs=1e-4)


def test_config_is_checked():
    with pytest.raises(AgentError, match="algo"):
        PPOConfig(algo="a2c")
    with pytest.raises(AgentError, match="group_size"):
        PPOConfig(algo="grpo", episodes_per_update=6, group_size=4)
