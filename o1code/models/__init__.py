"""o1code.models: one text-generation interface over several backends (llama.cpp, transformers, vLLM,
OpenAI-compatible servers), the offline default model, one HF loader (`load_causal_lm`, used by the hf
backend, `Policy` and training), model specs parsed in one place (`parse_spec`, `o1code.models.spec`),
a trainable Policy, the process reward model (`prm`), and the export of trained weights into GGUF files
(`gguf_export`, `lora_gguf`). Heavy libraries (torch, transformers, llama_cpp, vllm) load on first use."""

from __future__ import annotations

from typing import Any

from .base import Completion, Generator, SamplingParams, chat_template_of
from .default import DEFAULT_MODEL, QUALITY_MODEL, ChunkedModel, assemble, cache_dir, ensure_model, find_parts
from .errors import (ChecksumError, ExportError, InvalidParamsError, InvalidSpecError, MissingExtraError,
                     ModelError, ModelFileError, ServerError)
from .hub import load_causal_lm, lora_config
from .loader import ModelSpec, default_backend, load_generator, parse_spec, transformers_source
from .openai import OpenAIConfig, OpenAIGenerator

_LAZY = {
    "HFConfig": "hf", "HFGenerator": "hf", "LlamaCppConfig": "llamacpp", "LlamaCppGenerator": "llamacpp",
    "VLLMConfig": "vllm", "VLLMGenerator": "vllm", "Policy": "policy", "PolicyConfig": "policy",
    "build_tiny_model": "tiny", "export_gguf": "gguf_export", "export_policy": "gguf_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Completion", "Generator", "SamplingParams", "chat_template_of", "load_generator", "default_backend",
    "ModelSpec", "parse_spec", "transformers_source", "load_causal_lm", "lora_config",
    "ChunkedModel", "DEFAULT_MODEL", "QUALITY_MODEL", "assemble", "cache_dir", "ensure_model", "find_parts",
    "ModelError", "ExportError", "InvalidSpecError", "InvalidParamsError", "MissingExtraError", "ModelFileError",
    "ChecksumError", "ServerError", "OpenAIConfig", "OpenAIGenerator", *_LAZY,
]
