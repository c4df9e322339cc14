"""``load_generator(spec)``: one entry point for every backend."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .base import Generator
from .errors import InvalidSpecError, ModelFileError

log = logging.getLogger(__name__)

SPEC_HELP = ("expected one of: 'default', 'default-quality', 'hf:ID_OR_PATH', 'gguf:PATH', 'llamacpp:PATH', "
             "'vllm:ID', 'openai:URL#MODEL'")


def default_backend() -> str:
    """Backend used for ``default`` models: "llamacpp" when llama-cpp-python imports, else "hf".

    Why (0.5B Q4_K_M default model, 2 CPU cores, greedy; bench/bench_models.py): llama.cpp loads in
    ~1 s, peaks at 0.62 GB RSS and decodes ~24 tok/s on an idle machine (12-17 tok/s while other jobs
    shared the cores); transformers' GGUF path dequantizes to float32, so it loads in 35-80 s, peaks at
    3.7 GB RSS and decodes ~11 tok/s idle (1.5-1.9 tok/s under the same contention; 8 prompts batched
    ~1.8x the sequential throughput). hf remains the fallback because it needs no optional extra."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "hf"
    return "llamacpp"


def _gguf_path(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelFileError(f"GGUF file not found: {p}")
    return str(p)


def load_generator(spec: str, **options: Any) -> Generator:
    """Build a Generator from ``spec``; ``options`` are fields of the backend's config dataclass
    (HFConfig, LlamaCppConfig, VLLMConfig, OpenAIConfig), e.g. ``device="cuda"``, ``chat_template=False``.

    Specs: ``default`` / ``default-quality`` (the embedded GGUF, verified by sha256; option
    ``backend="llamacpp"|"hf"`` overrides :func:`default_backend`), ``hf:ID_OR_PATH`` (hub id, local
    directory or ``.gguf`` file), ``gguf:PATH`` (transformers GGUF loader), ``llamacpp:PATH``,
    ``vllm:ID``, ``openai:URL#MODEL``. Raises InvalidSpecError, ModelFileError, MissingExtraError,
    ChecksumError with a message saying what to fix."""
    if not isinstance(spec, str) or not spec:
        raise InvalidSpecError(f"empty model spec; {SPEC_HELP}")
    kind, _, arg = spec.partition(":")
    if kind in ("default", "default-quality") and not arg:
        from .default import ensure_model

        backend = options.pop("backend", None) or default_backend()
        path = str(ensure_model(kind))
        if backend == "llamacpp":
            kind, arg = "llamacpp", path
        elif backend == "hf":
            kind, arg = "gguf", path
        else:
            raise InvalidSpecError(f"unknown backend {backend!r} for {spec!r}; use 'llamacpp' or 'hf'")
    if not arg:
        raise InvalidSpecError(f"unknown or incomplete model spec {spec!r}; {SPEC_HELP}")
    if kind == "hf":
        from .hf import HFConfig, HFGenerator

        return HFGenerator(HFConfig(model=arg, **options))
    if kind == "gguf":
        from .hf import HFConfig, HFGenerator

        return HFGenerator(HFConfig(model=_gguf_path(arg), **options))
    if kind == "llamacpp":
        from .llamacpp import LlamaCppConfig, LlamaCppGenerator

        return LlamaCppGenerator(LlamaCppConfig(path=_gguf_path(arg), **options))
    if kind == "vllm":
        from .vllm import VLLMConfig, VLLMGenerator

        return VLLMGenerator(VLLMConfig(model=arg, **options))
    if kind == "openai":
        from .openai import OpenAIConfig, OpenAIGenerator

        url, sep, model = arg.partition("#")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise InvalidSpecError(f"openai spec must be 'openai:http(s)://HOST:PORT/v1#MODEL', got {spec!r}")
        return OpenAIGenerator(OpenAIConfig(base_url=url, model=model, **options))
    raise InvalidSpecError(f"unknown model spec {spec!r}; {SPEC_HELP}")


