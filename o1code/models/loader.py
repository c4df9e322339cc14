"""``load_generator(spec)``: a `Generator` for every backend from a model spec (the grammar: `o1code.models.spec`).

The backends import `o1code.models.spec`, never this module, so that the factory stays the top of the
models package. The spec names are re-exported here for callers that import them from the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Generator
from .errors import InvalidSpecError, ModelFileError
from .spec import (DEFAULT_NAMES, LORA_SEP, SPEC_HELP, SPEC_KINDS, ModelSpec, _gguf_path, default_backend,  # noqa: F401
                   hf_location, parse_spec, transformers_source)


def load_generator(spec: str, **options: Any) -> Generator:
    """Build a Generator from ``spec``; ``options`` are fields of the backend's config dataclass
    (HFConfig, LlamaCppConfig, VLLMConfig, OpenAIConfig), e.g. ``device="cuda"``, ``chat_template=False``.

    Specs: ``default`` / ``default-quality`` (the embedded GGUF, verified by sha256; option
    ``backend="llamacpp"|"hf"`` overrides :func:`default_backend`), ``hf:ID_OR_PATH`` (hub id, local
    directory or ``.gguf`` file), ``gguf:PATH`` (transformers GGUF loader), ``llamacpp:PATH``,
    ``vllm:ID``, ``openai:URL#MODEL``. Raises InvalidSpecError, ModelFileError, MissingExtraError,
    ChecksumError with a message saying what to fix. ``SPEC+lora:DIR`` adds the adapter saved in DIR
    (`attach_lora`)."""
    s = parse_spec(spec)
    if s.lora is not None:
        return attach_lora(load_generator(spec.rpartition(LORA_SEP)[0], **options), s.lora)
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


#: The files of a LoRA adapter directory: peft's (transformers) and llama.cpp's.
LORA_PEFT_FILE, LORA_GGUF_FILE = "adapter_config.json", "adapter.gguf"


def attach_lora(generator: Generator, directory: str) -> Generator:
    """`generator` sampling from its base plus the LoRA adapter saved in `directory`; returns it.

    A `LlamaCppGenerator` sets ``DIR/adapter.gguf`` (`o1code.models.lora_gguf.write_lora_gguf`'s file,
    for that GGUF base) on its quantized weights; an `HFGenerator` merges DIR's peft adapter into its
    float weights. Raises `ModelFileError` when DIR lacks that backend's file, `InvalidSpecError` for
    another backend."""
    d = Path(directory).expanduser()
    name = type(generator).__name__
    if name == "LlamaCppGenerator":
        if not (d / LORA_GGUF_FILE).is_file():
            raise ModelFileError(f"no {LORA_GGUF_FILE} in {d}: llama.cpp needs the adapter as a GGUF "
                                 "(o1code sft writes one beside peft's files when the base is a GGUF)")
        generator.set_adapter(str(d / LORA_GGUF_FILE))  # type: ignore[attr-defined]
        return generator
    if name == "HFGenerator":
        if not (d / LORA_PEFT_FILE).is_file():
            raise ModelFileError(f"no {LORA_PEFT_FILE} in {d}: not a peft LoRA adapter directory")
        from .hub import import_peft

        merged = import_peft().PeftModel.from_pretrained(generator.model, str(d)).merge_and_unload()  # type: ignore[attr-defined]
        generator.model = merged.eval()  # type: ignore[attr-defined]
        return generator
    raise InvalidSpecError(f"a LoRA adapter loads on llama.cpp or transformers generators, not {name}")
