"""vllm backend: needs the gpu extra and a CUDA GPU; skipped otherwise. Offline: it loads the tiny
model built in code (a local directory), never a hub id."""

import importlib.util

import pytest

from o1code.models import SamplingParams, load_generator


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _cuda(),
                    reason="needs vllm (pip install 'o1code[gpu]') and a CUDA GPU")
def test_vllm_generate(tiny_model_dir):
    g = load_generator(f"vllm:{tiny_model_dir}", engine_kwargs={"gpu_memory_utilization": 0.3})
    p = SamplingParams(n=2, max_tokens=16, seed=0)
    outs = g.generate(["Write a python function that adds two numbers."], p)
    assert len(outs[0]) == 2 and all(len(c.logprobs) == len(c.token_ids) for c in outs[0])
    assert outs == g.generate(["Write a python function that adds two numbers."], p)
