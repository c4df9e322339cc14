"""Model specs, parsed in one place (`parse_spec`), and `transformers_source` for whatever loads weights
with transformers (the ``hf`` backend, `Policy`, training). ``load_generator`` (`o1code.models.loader`)
builds a generator from a spec; this module imports no backend, so every backend may import it.

Spec grammar (`parse_spec`)::

    default | default-quality      the embedded GGUF (verified by sha256, see `o1code.models.default`)
    hf:ID_OR_PATH                  a hub id, a local directory, or a .gguf file (transformers)
    gguf:PATH                      a GGUF file through transformers' GGUF loader (dequantized)
    llamacpp:PATH                  a GGUF file through llama.cpp
    vllm:ID                        a hub id or directory through vLLM (the gpu extra)
    openai:URL#MODEL               an OpenAI-compatible server
    SPEC+lora:DIR                  SPEC plus the LoRA adapter saved in DIR (``o1code sft``'s RUN/adapter,
                                   or a shipped result under experiments/results/): llama.cpp loads
                                   DIR/adapter.gguf on the quantized base, transformers merges DIR's peft
                                   adapter into the float weights; other backends are refused

Where weights are loaded from a path rather than a spec (training stages, saved checkpoints), a
bare hub id or directory is accepted too (``parse_spec(text, bare=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidSpecError, ModelFileError

SPEC_HELP = ("expected one of: 'default', 'default-quality', 'hf:ID_OR_PATH', 'gguf:PATH', 'llamacpp:PATH', "
             "'vllm:ID', 'openai:URL#MODEL', each but the last two optionally followed by '+lora:DIR'")

#: The names of the embedded models (`o1code.models.default.CHUNKED_MODELS`).
DEFAULT_NAMES = ("default", "default-quality")
#: Spec kinds written ``KIND:ARG``.
SPEC_KINDS = ("hf", "gguf", "llamacpp", "vllm", "openai")
#: What joins a base spec and a LoRA adapter directory: ``default+lora:DIR``.
LORA_SEP = "+lora:"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: ``"default"`` (`arg` is the embedded model's name, ``default`` or ``default-quality``),
            or one of `SPEC_KINDS`.
        arg: What follows ``KIND:`` (a hub id, a path, or ``URL#MODEL`` for ``openai``).
        text: The spec as written.
        lora: The LoRA adapter directory of a ``SPEC+lora:DIR`` spec (not checked on disk), else None.
    """

    kind: str
    arg: str
    text: str
    lora: str | None = None

    @property
    def openai_endpoint(self) -> tuple[str, str]:
        """``(base URL, model name)`` of an ``openai`` spec."""
        url, _, model = self.arg.partition("#")
        return url, model


def parse_spec(spec: str, *, bare: bool = False) -> ModelSpec:
    """Parse a model spec (the grammar in the module docstring); nothing is loaded or checked on disk.

    With `bare`, text of no known kind is read as ``hf:TEXT`` (a hub id or local directory).
    Raises `InvalidSpecError` saying what is expected.
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidSpecError(f"empty model spec; {SPEC_HELP}")
    if LORA_SEP in spec:
        base, _, lora = spec.rpartition(LORA_SEP)
        if not base or not lora:
            raise InvalidSpecError(f"{spec!r}: write a LoRA spec as 'SPEC+lora:DIR', e.g. 'default+lora:runs/sft/adapter'")
        inner = parse_spec(base, bare=bare)
        if inner.lora is not None:
            raise InvalidSpecError(f"{spec!r}: one LoRA adapter per spec")
        if inner.kind in ("openai", "vllm"):
            raise InvalidSpecError(f"{spec!r}: a LoRA adapter loads on llama.cpp or transformers, not {inner.kind}")
        return ModelSpec(inner.kind, inner.arg, spec, lora)
    kind, sep, arg = spec.partition(":")
    if kind in DEFAULT_NAMES and not arg:
        return ModelSpec("default", kind, spec)
    if bare and kind not in SPEC_KINDS and kind not in DEFAULT_NAMES:
        return ModelSpec("hf", spec, spec)
    if not arg:
        raise InvalidSpecError(f"unknown or incomplete model spec {spec!r}; {SPEC_HELP}")
    if kind not in SPEC_KINDS:
        raise InvalidSpecError(f"unknown model spec {spec!r}; {SPEC_HELP}")
    if kind == "openai":
        url, sep, model = arg.partition("#")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise InvalidSpecError(f"openai spec must be 'openai:http(s)://HOST:PORT/v1#MODEL', got {spec!r}")
    return ModelSpec(kind, arg, spec)


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


def hf_location(model: str) -> tuple[str, str | None]:
    """``(hub id or directory, GGUF file name or None)`` for transformers' ``from_pretrained``.

    A path ending in ``.gguf`` is split into its directory and file name (it must exist); a path
    written as one (``.``, ``/`` or ``~`` first) must exist; anything else is a hub id or directory.
    Raises `ModelFileError`."""
    p = Path(model).expanduser()
    if model.endswith(".gguf"):
        if not p.is_file():
            raise ModelFileError(f"GGUF file not found: {p}")
        return str(p.parent), p.name
    if model.startswith((".", "/", "~")) and not p.exists():
        raise ModelFileError(f"model directory not found: {p}")
    return model, None


def transformers_source(spec: str | ModelSpec) -> tuple[str, str | None]:
    """``(hub id or directory, GGUF file name or None)`` holding the weights of `spec` for transformers.

    `spec` is a spec or a bare hub id / directory (``parse_spec(spec, bare=True)``). ``default`` and
    ``default-quality`` are assembled and verified first (`ensure_model`); ``gguf:`` and ``llamacpp:``
    name a GGUF file; ``vllm:`` a hub id or directory. ``openai:`` has no weights here
    (`InvalidSpecError`). Raises `ModelFileError` for a missing file."""
    s = spec if isinstance(spec, ModelSpec) else parse_spec(spec, bare=True)
    if s.lora is not None:
        raise InvalidSpecError(f"{s.text!r} carries a LoRA adapter, which only a generator applies "
                               "(`load_generator`); train from the base spec, or from a merged model")
    if s.kind == "default":
        from .default import ensure_model

        path = ensure_model(s.arg)
        return str(path.parent), path.name
    if s.kind in ("gguf", "llamacpp"):
        p = Path(_gguf_path(s.arg))
        return str(p.parent), p.name
    if s.kind in ("hf", "vllm"):
        return hf_location(s.arg)
    raise InvalidSpecError(f"{s.text!r} names a server, not weights transformers can load; "
                           "use 'default', 'hf:ID_OR_PATH' or 'gguf:PATH'")
