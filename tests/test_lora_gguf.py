"""LoRA hot swap: a policy's peft adapters written as a llama.cpp adapter GGUF (o1code.models.lora_gguf) and
set on a LlamaCppGenerator on the GGUF the policy was dequantized from. llama.cpp then samples the policy
transformers computes: the same greedy tokens (up to near-ties of the two engines' numerics: llama.cpp
multiplies quantized weights with 8-bit-quantized activations, transformers the dequantized weights in
float32) and close log-probs; a zero adapter is the base exactly; swapping never reuses a stale cache.
The trained adapters shipped under experiments/results load on both backends and agree."""

import json
from pathlib import Path

import pytest
from test_models_llamacpp import SMOL, needs_default, needs_llamacpp, needs_smol

from o1code.models import ExportError, ModelError, ModelFileError, SamplingParams, load_generator

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gguf")

PROMPTS = ["What is 2+2?", "Write a python function that adds two numbers.", "Name three colors.",
           "Write a function that reverses a string.", "What is the capital of France?", "def fib(n):"]
GREEDY = SamplingParams(temperature=0, max_tokens=24)
#: A token where transformers' top two log-probs are closer than this is a tie between the engines:
#: SmolLM2's log-probs differ by up to ~0.3 per token (the base alone, no adapter), so the gap between
#: two tokens by up to ~0.6, and greedy texts part at such ties (the base alone: 1 prompt in 6 at 24
#: tokens). The default model's differ ten times less.
TIE = 0.5


def _policy(path):
    from o1code.models.policy import Policy, PolicyConfig

    return Policy(PolicyConfig(model=f"gguf:{path}", lora=True, device="cpu"))


def _randomize(policy, seed, scale):
    """Random LoRA A (as peft initializes it) and B (scaled by `scale`), from `seed` alone: an adapter
    that changes the greedy text."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_A" in name:
                p.uniform_(-p.shape[1] ** -0.5, p.shape[1] ** -0.5, generator=g)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _zero(policy):
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.zero_()


def compare(gen, model, prompts, params=GREEDY, prompt_ids=None):
    """llama.cpp's greedy completions against the transformers `model` on the same tokens (teacher-forced,
    so one forward pass); `prompt_ids` (a trainer's tokenizer) must give llama.cpp's prompt tokens.
    Returns (completions, |log-prob difference| per token, positions where llama.cpp's token is not
    transformers' argmax as (prompt, position, transformers' top-2 margin), texts equal)."""
    outs = gen.generate(prompts, params)
    diffs, misses, equal = [], [], 0
    for i, (p, o) in enumerate(zip(prompts, outs)):
        c = o[0]
        ptoks = gen.llm.tokenize(gen.format_prompt(p).encode(), add_bos=True, special=True)
        if prompt_ids is not None:
            assert ptoks == prompt_ids(p)  # the trainer conditions on the same tokens
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ptoks + c.token_ids])).logits[0, len(ptoks) - 1:-1]
        lp = logits.float().log_softmax(-1)
        diffs.append((lp[torch.arange(len(c.token_ids)), c.token_ids] - torch.tensor(c.logprobs)).abs())
        top2 = lp.topk(2).values
        bad = [(i, k, float(top2[k, 0] - top2[k, 1])) for k in range(len(c.token_ids))
               if int(lp[k].argmax()) != c.token_ids[k]]
        misses += bad
        equal += not bad
    return outs, torch.cat(diffs), misses, equal


@pytest.fixture(scope="module")
def smol_policy():
    return _policy(SMOL)


@pytest.fixture(scope="module")
def smol_gen():
    gen = load_generator(f"llamacpp:{SMOL}", n_ctx=1024)
    yield gen
    gen.close()


@needs_llamacpp
@needs_smol
def test_lora_gguf_file_format(smol_policy, tmp_path):
    """What llama.cpp's own converter writes: adapter metadata, a lora_a/lora_b pair per adapted matrix
    in the shapes llama.cpp checks, llama's q/k rows of B permuted; the state-dict form writes the same."""
    import numpy as np
    from peft import get_peft_model_state_dict

    from o1code.models.gguf_export import _to_gguf_rows, read_gguf
    from o1code.models.lora_gguf import write_lora_gguf

    _randomize(smol_policy, 0, 0.02)
    path = write_lora_gguf(smol_policy, SMOL, tmp_path / "a.gguf")
    r = read_gguf(path)
    meta = {k: r.fields[k].contents() for k in ("general.type", "general.architecture", "adapter.type",
                                                "adapter.lora.alpha")}
    assert meta == {"general.type": "adapter", "general.architecture": "llama", "adapter.type": "lora",
                    "adapter.lora.alpha": 16.0}
    t = {x.name: x for x in r.tensors}
    assert len(t) == 2 * 30 * 7  # q k v o gate up down in each of 30 blocks
    a, b = t["blk.3.attn_k.weight.lora_a"], t["blk.3.attn_k.weight.lora_b"]
    assert [int(d) for d in a.shape] == [576, 8] and [int(d) for d in b.shape] == [8, 192]  # ggml order
    k_proj = smol_policy.model.base_model.model.model.layers[3].self_attn.k_proj
    assert np.array_equal(a.data, k_proj.lora_A["default"].weight.detach().numpy())
    assert np.array_equal(b.data, _to_gguf_rows(k_proj.lora_B["default"].weight.detach(), 3).numpy())
    assert not np.array_equal(b.data, k_proj.lora_B["default"].weight.detach().numpy())
    v = smol_policy.model.base_model.model.model.layers[3].self_attn.v_proj
    assert np.array_equal(t["blk.3.attn_v.weight.lora_b"].data, v.lora_B["default"].weight.detach().numpy())
    again = write_lora_gguf(get_peft_model_state_dict(smol_policy.model), SMOL, tmp_path / "b.gguf", alpha=16)
    assert again.read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))

    with pytest.raises(ExportError, match="alpha"):
        write_lora_gguf(get_peft_model_state_dict(smol_policy.model), SMOL, tmp_path / "c.gguf")
    bad = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 100),
           "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(576, 8)}
    with pytest.raises(ExportError, match="do not fit"):
        write_lora_gguf(bad, SMOL, tmp_path / "d.gguf", alpha=16)
    with pytest.raises(ExportError, match="no active LoRA"):
        write_lora_gguf(torch.nn.Linear(2, 2), SMOL, tmp_path / "e.gguf")


@needs_llamacpp
@needs_smol
def test_lora_llamacpp_matches_transformers_smollm2(smol_policy, smol_gen, tmp_path):
    from o1code.models.lora_gguf import write_lora_gguf

    smol_gen.set_adapter(None)
    base = smol_gen.generate(PROMPTS, GREEDY)
    _randomize(smol_policy, 0, 0.1)  # large enough that a wrong q/k row order or scale breaks the bounds
    smol_gen.set_adapter(write_lora_gguf(smol_policy, SMOL, tmp_path / "a.gguf"))
    outs, diff, misses, equal = compare(smol_gen, smol_policy.model, PROMPTS, prompt_ids=smol_policy._prompt_ids)
    print(f"SmolLM2 + LoRA: |log-prob diff| mean {diff.mean():.4f} max {diff.max():.4f} over {len(diff)} tokens; "
          f"greedy text equal on {equal}/{len(PROMPTS)} prompts; argmax misses {misses}")
    assert sum(a[0].text != b[0].text for a, b in zip(outs, base)) >= 2  # the adapter matters
    # a different token only at a near-tie (the texts then part: measured 2 of 6 equal over 24 tokens)
    assert all(margin < TIE for _, _, margin in misses)
    # measured: mean 0.040, max 0.29; B rows of q/k left unpermuted: 0.134, 0.87; 0.8x the scale: 0.095, 1.27
    assert float(diff.mean()) < 0.06 and float(diff.max()) < 0.6


@needs_llamacpp
@needs_smol
def test_lora_adapter_spec_on_both_backends(smol_policy, tmp_path):
    """`save_adapter`'s directory as the generator spec BASE+lora:DIR: llama.cpp sets its adapter.gguf on the
    quantized base and decodes the policy (within the engines' numerics, as above); transformers merges its
    peft files into the float weights and computes the policy's logits."""
    from o1code.training.common import save_adapter

    _randomize(smol_policy, 3, 0.1)
    d = save_adapter(smol_policy.model, f"gguf:{SMOL}", tmp_path / "adapter")
    assert (d / "adapter.gguf").is_file() and (d / "adapter_config.json").is_file()
    gen = load_generator(f"llamacpp:{SMOL}+lora:{d}", n_ctx=1024)
    try:
        assert gen.adapter == d / "adapter.gguf"
        _, diff, misses, _ = compare(gen, smol_policy.model, PROMPTS[:3], prompt_ids=smol_policy._prompt_ids)
    finally:
        gen.close()
    assert all(margin < TIE for _, _, margin in misses) and float(diff.mean()) < 0.06
    hf = load_generator(f"hf:{SMOL}+lora:{d}", device="cpu")
    ids = torch.tensor([smol_policy._prompt_ids(PROMPTS[0])])
    with torch.no_grad():
        got, want = (m(input_ids=ids).logits.log_softmax(-1) for m in (hf.model, smol_policy.model))
    # the shipped adapter is float16: measured max 0.006 on logits of ~20 (float32 adapter: < 1e-4)
    assert torch.allclose(got, want, atol=0.02), float((got - want).abs().max())
    with pytest.raises(ModelFileError, match="adapter.gguf"):
        load_generator(f"llamacpp:{SMOL}+lora:{tmp_path}", n_ctx=1024)


@needs_llamacpp
@needs_smol
def test_lora_zero_adapter_and_swaps(smol_policy, smol_gen, tmp_path):
    """A zero adapter decodes exactly as the base; A -> B -> None each decode as a fresh generator with
    that adapter (seeded samples of the same prompts each time: a stale prefix/KV cache would show)."""
    from o1code.models.lora_gguf import write_lora_gguf

    sampled = SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=5)
    prompts = PROMPTS[:3]
    smol_gen.set_adapter(None)
    base = smol_gen.generate(prompts, sampled)
    _zero(smol_policy)
    smol_gen.set_adapter(write_lora_gguf(smol_policy, SMOL, tmp_path / "zero.gguf"))
    assert smol_gen.adapter == tmp_path / "zero.gguf"
    assert smol_gen.generate(prompts, sampled) == base

    paths = {}
    for name, seed in (("a", 1), ("b", 2)):
        _randomize(smol_policy, seed, 0.02)
        paths[name] = write_lora_gguf(smol_policy, SMOL, tmp_path / f"{name}.gguf")
    want = {None: base}
    for name in ("a", "b"):
        fresh = load_generator(f"llamacpp:{SMOL}", n_ctx=1024)
        fresh.set_adapter(paths[name])
        want[name] = fresh.generate(prompts, sampled)
        fresh.close()
    assert base != want["a"] != want["b"] != base
    for name in ("a", "b", None, "b"):
        smol_gen.set_adapter(paths[name] if name else None)
        assert smol_gen.generate(prompts, sampled) == want[name], name

    with pytest.raises(ModelFileError, match="not found"):
        smol_gen.set_adapter(tmp_path / "missing.gguf")
    with pytest.raises(ModelError, match="cannot load the LoRA adapter"):
        smol_gen.set_adapter(SMOL)  # a model, not an adapter
    assert smol_gen.generate(prompts, sampled) == want["b"]  # a refused adapter leaves the last one set


@pytest.mark.slow
@needs_llamacpp
@needs_default
def test_lora_llamacpp_matches_transformers_default_model(tmp_path):
    """The same on the default model (qwen2: no q/k permutation, q/k/v biases), kept lean."""
    import time

    from o1code.models import ensure_model
    from o1code.models.lora_gguf import write_lora_gguf

    gguf = ensure_model("default")
    policy = _policy(gguf)
    gen = load_generator(f"llamacpp:{gguf}", n_ctx=1024)
    prompts = PROMPTS[:4]
    params = SamplingParams(temperature=0, max_tokens=16)
    try:
        base = gen.generate(prompts, params)
        gen.set_adapter(write_lora_gguf(policy, gguf, tmp_path / "zero.gguf"))  # peft's init: B = 0
        assert gen.generate(prompts, params) == base
        _randomize(policy, 0, 0.03)
        t0 = time.perf_counter()
        path = write_lora_gguf(policy, gguf, tmp_path / "a.gguf")
        gen.set_adapter(path)
        print(f"write_lora_gguf + set_adapter: {time.perf_counter() - t0:.2f} s")
        outs, diff, misses, equal = compare(gen, policy.model, prompts, params, policy._prompt_ids)
        print(f"default model + LoRA: |log-prob diff| mean {diff.mean():.4f} max {diff.max():.4f} over "
              f"{len(diff)} tokens; greedy text equal on {equal}/{len(prompts)} prompts; argmax misses {misses}")
        assert sum(a[0].text != b[0].text for a, b in zip(outs, base)) >= 1
        assert all(margin < TIE for _, _, margin in misses)
        assert equal >= len(prompts) // 2
        # measured: mean 0.010, max 0.088; 0.8x the scale: 0.055, 0.59
        assert float(diff.mean()) < 0.03 and float(diff.max()) < 0.3
    finally:
        gen.close()


#: Trained results shipped in the repository (`experiments/results/<name>/`, issue 27): each a LoRA
#: adapter directory with manifest.json (its files' sha256 and its training data's digest).
RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
SHIPPED = sorted(p.parent for p in RESULTS.glob("*/manifest.json"))


def test_results_are_shipped():
    """The parametrized test below runs once per shipped result; none found would skip it silently."""
    assert SHIPPED, f"no */manifest.json under {RESULTS}"


@needs_llamacpp
@needs_default
@pytest.mark.slow
@pytest.mark.parametrize("result", SHIPPED, ids=lambda p: p.name)
def test_shipped_adapter_on_both_backends(result):
    """A shipped result is what its manifest says, and plays on both backends: its files have the
    manifest's sha256 (a Git LFS pointer or a truncated file fails here, not in an evaluation); its
    run's task list on the bundled data gives the manifest's data digest; ``default+lora:DIR`` on
    llama.cpp and ``gguf:DEFAULT+lora:DIR`` on transformers agree on the adapter's greedy answers to
    MBPP validation prompts (teacher-forced log-probs, as above), and the adapter changes what the
    base model answers."""
    from o1code.data import problems_digest
    from o1code.envs import CodeEnv
    from o1code.models import ensure_model
    from o1code.pipeline.ppo import PPORunConfig, train_problems
    from o1code.runs import digest

    manifest = json.loads((result / "manifest.json").read_text())
    for name, sha256 in manifest["files"].items():
        assert digest(result / name) == sha256, name
    run = json.loads((result / "run.json").read_text())
    assert problems_digest(train_problems(PPORunConfig(**run))) == manifest["train_data_sha256"]

    gguf = ensure_model("default")
    gen = load_generator(f"default+lora:{result}", n_ctx=2048, chat_template=False)
    try:
        env = CodeEnv(mode="direct", split="validation", prompt_style="instruct", chat_template=gen.chat_template)
        prompts = [env.reset(options={"task_id": f"mbpp/{n}"})[0]["prompt"] for n in (511, 560, 590)]
        params = SamplingParams(temperature=0, max_tokens=96)
        hf = load_generator(f"gguf:{gguf}+lora:{result}", device="cpu", chat_template=False)
        outs, diff, misses, equal = compare(gen, hf.model, prompts, params)
        print(f"{result.name}: |log-prob diff| mean {diff.mean():.4f} max {diff.max():.4f} over {len(diff)} "
              f"tokens; greedy text equal on {equal}/{len(prompts)}; argmax misses {misses}")
        assert all(margin < TIE for _, _, margin in misses) and float(diff.mean()) < 0.03
        gen.set_adapter(None)
        base = gen.generate(prompts, params)
    finally:
        gen.close()
    assert any(a[0].text != b[0].text for a, b in zip(outs, base))
