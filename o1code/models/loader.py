"""``load_generator(spec)``: a `Generator` for every backend from a model spec (the grammar: `o1code.models.spec`).

The backends import `o1code.models.spec`, never this module, so that the factory stays the top of the
models package. The spec names are re-exported here for callers that import them from the loader.
"""

from __future__ import annotations

from typing import Any

from .base import Generator
from .errors import InvalidSpecError
from .spec import (DEFAULT_NAMES, SPEC_HELP, SPEC_KINDS, ModelSpec, _gguf_path, default_backend,  # noqa: F401
                   hf_location, parse_spec, transformers_source)


def load_generator(spec: str, **options: Any) -> Generator:
    """Build a Generator from ``spec``; ``options`` are fields of the backend's config dataclass
    (HFConfig, LlamaCppConfig, VLLMConfig, OpenAIConfig), e.g. ``device="cuda"``, ``chat_template=False``.

    Specs: ``default`` / ``default-quality`` (the embedded GGUF, verified by sha256; option
    ``backend="llamacpp"|"hf"`` overrides :func:`default_backend`), ``hf:ID_OR_PATH`` (hub id, local
    directory or ``.gguf`` file), ``gguf:PATH`` (transformers GGUF loader), ``llamacpp:PATH``,
    ``vllm:ID``, ``openai:URL#MODEL``. Raises InvalidSpecError, ModelFileError, MissingExtraError,
    ChecksumError with a message saying what to fix."""
    s = parse_spec(spec)
    kind, arg = s.kind, s.arg
    if kind == "default":
        from .default import ensure_model

        backend = options.pop("backend", None) or default_backend()
        path = str(ensure_model(arg))
        if backend == "llamacpp":
            kind, arg = "llamacpp", path
        elif backend == "hf":
            kind, arg = "gguf", path
        else:
            raise InvalidSpecError(f"unknown backend {backend!r} for {spec!r}; use 'llamacpp' or 'hf'")
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
    from .openai import OpenAIConfig, OpenAIGenerator

    url, model = s.openai_endpoint
    return OpenAIGenerator(OpenAIConfig(base_url=url, model=model, **options))
