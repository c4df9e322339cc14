"""One Hugging Face loader: every causal LM that o1code runs or trains with transformers comes from here.

Used by the ``hf`` generator backend (`HFGenerator`), `Policy` and the training stages
(`o1code.training`), so all of them share

- the spec rules (`o1code.models.spec.transformers_source`): ``default`` / ``default-quality``,
  ``hf:ID_OR_PATH``, ``gguf:PATH``, a bare hub id or directory;
- GGUF dequantisation: transformers reads a GGUF file into ordinary float tensors; the model is then
  unlabelled as quantized (`_drop_gguf_label`), so it trains, merges and saves like any float model;
- the dequantized-GGUF cache (`o1code.models.dequant_cache`): a local GGUF is dequantized once,
  in float32, and later loads (in any dtype) read the stored weights and tokenizer;
- the pad-token rule (`ensure_pad_token`): a tokenizer without a pad token pads with its EOS token;
- the LoRA rule (`lora_config`): adapters on every linear layer except the output head.

```python
model, tok = load_causal_lm("default")            # the embedded GGUF, dequantized to float32
model, tok = load_causal_lm("hf:runs/tcg/final", dtype="bfloat16")
```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from . import dequant_cache
from .errors import MissingExtraError, ModelFileError
from .spec import ModelSpec, transformers_source

log = logging.getLogger(__name__)

#: LoRA targets when none are named: peft's shorthand for every ``nn.Linear`` (and GPT-2 style
#: ``Conv1D``) except the output embedding. One rule for `Policy` and TCG training, chosen over a
#: fixed module list because it needs no per-architecture names (GPT-2's ``c_attn``, Phi's
#: ``fc1``/``dense`` ...); on Qwen2 and Llama models (the default model, SmolLM2, the tiny test
#: model) it selects exactly ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``, the list
#: TCG training used to name, so the adapters and their initialisation are unchanged.
LORA_ALL_LINEAR = "all-linear"


def import_peft() -> Any:
    """The peft module, or `MissingExtraError` saying how to install it."""
    try:
        import peft
    except ImportError as e:
        raise MissingExtraError(f"LoRA needs peft: pip install peft [{e}]") from e
    return peft


def resolve_dtype(dtype: Any, device: str | None = None) -> Any:
    """A torch dtype from a dtype, its name (``"bfloat16"``) or None: None is bfloat16 on a CUDA
    `device`, float32 otherwise."""
    import torch

    if dtype is None:
        return torch.bfloat16 if (device or "").startswith("cuda") else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def ensure_pad_token(tokenizer: Any) -> Any:
    """The pad-token rule: a tokenizer without a pad token pads with its EOS token. Returns it."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_gguf_label(model: Any) -> Any:
    # transformers dequantizes GGUF weights to plain float tensors but still labels the model as
    # GGUF-quantized, which makes Trainer refuse it and save_pretrained write a bogus quantization
    # config; the weights are ordinary float parameters, so drop the label.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _source(spec: str | ModelSpec, gguf_file: str | None) -> tuple[str, dict[str, Any]]:
    src, found = transformers_source(spec) if gguf_file is None else (str(spec), gguf_file)
    return src, ({"gguf_file": found} if found else {})


def _name(spec: str | ModelSpec) -> str:
    return spec.text if isinstance(spec, ModelSpec) else str(spec)


def _load_error(label: str, src: str, exc: Exception) -> ModelFileError:
    """A missing local directory reads as a bad hub id in transformers' words: say which it is."""
    if not Path(src).expanduser().exists() and (src.count("/") != 1 or src.startswith((".", "/", "~"))):
        return ModelFileError(f"cannot load {label}: no directory {src!r} (nor is it a hub id 'namespace/name')")
    return ModelFileError(f"cannot load {label}: {exc}")


def _cache_entry(src: str, kw: dict[str, Any]) -> Path | None:
    """The dequantized-GGUF cache entry (`o1code.models.dequant_cache`) of a local GGUF, else None."""
    if "gguf_file" not in kw:
        return None
    path = Path(src).expanduser() / kw["gguf_file"]
    return dequant_cache.entry_dir(path) if path.is_file() else None


def _from_cache(entry: Path | None, part: str, load: Any) -> Any:
    """``load(directory)`` of a stored part, or None when there is none or it does not load (then it
    is discarded, to be stored again)."""
    cached = dequant_cache.lookup(entry, part) if entry is not None else None
    if cached is None:
        return None
    try:
        return load(cached)
    except Exception as exc:  # e.g. a truncated file: the GGUF is still there
        log.warning("dequantized GGUF cache: %s does not load (%s); dequantizing the GGUF again", cached, exc)
        dequant_cache.discard(entry, part)
        return None


def _tokenizer(src: str, kw: dict[str, Any], trust_remote_code: bool, label: str) -> Any:
    from transformers import AutoTokenizer

    entry = _cache_entry(src, kw)
    tok = _from_cache(entry, "tokenizer", AutoTokenizer.from_pretrained)
    if tok is None:
        try:
            tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **kw)
        except OSError as e:
            raise _load_error(label, src, e) from e
        if entry is not None:
            dequant_cache.store(entry, "tokenizer", tok.save_pretrained)
    return ensure_pad_token(tok)


def _model(src: str, kw: dict[str, Any], dtype: Any, trust_remote_code: bool, label: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(dtype)

    def load(source: str | Path, dtype: Any, **kw: Any) -> Any:
        try:
            return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **kw)
        except OSError as e:
            raise _load_error(label, str(source), e) from e

    def cached() -> Any:
        return _from_cache(entry, "model", lambda d: load(d, dtype, use_safetensors=True))

    entry = _cache_entry(src, kw)
    if entry is None:
        model = load(src, dtype, **kw)
        return _drop_gguf_label(model) if "gguf_file" in kw else model
    model = cached()
    if model is None:
        # Dequantized in float32, what the cache keeps, whatever `dtype` is; then, in any other dtype,
        # loaded back from the cache exactly as every later load will be.
        model = _drop_gguf_label(load(src, torch.float32, **kw))
        if dequant_cache.store(entry, "model", model.save_pretrained) is not None and dtype != torch.float32:
            del model
            model = cached()
            if model is None:  # stored but does not load back: dequantize straight to `dtype`
                model = load(src, dtype, **kw)
    model.config._name_or_path = src  # where it came from, not the cache (e.g. in peft's adapter config)
    model = _drop_gguf_label(model)  # the same attributes, from the cache or not
    return model if model.dtype == dtype else model.to(dtype)


def load_tokenizer(spec: str | ModelSpec, *, gguf_file: str | None = None, trust_remote_code: bool = False,
                   what: str = "model") -> Any:
    """The tokenizer of `spec` (see `load_causal_lm`), with the pad-token rule applied."""
    src, kw = _source(spec, gguf_file)
    return _tokenizer(src, kw, trust_remote_code, f"{what} {_name(spec)!r}")


def load_model(spec: str | ModelSpec, *, gguf_file: str | None = None, dtype: Any = None,
               trust_remote_code: bool = False, what: str = "model") -> Any:
    """The causal LM of `spec` (see `load_causal_lm`) in `dtype` (None: float32), on the CPU."""
    src, kw = _source(spec, gguf_file)
    return _model(src, kw, dtype, trust_remote_code, f"{what} {_name(spec)!r}")


def load_causal_lm(spec: str | ModelSpec, *, gguf_file: str | None = None, dtype: Any = None,
                   trust_remote_code: bool = False, what: str = "model") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of `spec`, the model on the CPU, the tokenizer with the pad-token rule.

    `spec`: ``default`` / ``default-quality`` (the embedded GGUF, assembled and verified),
    ``hf:ID_OR_PATH``, ``gguf:PATH``, ``llamacpp:PATH`` (its GGUF file), ``vllm:ID``, or a bare hub
    id, directory or ``.gguf`` path (`o1code.models.spec.transformers_source`). With `gguf_file`
    given, `spec` is not parsed: it is the directory or hub id itself, holding that GGUF file (``""``:
    no GGUF; what `HFConfig` has already resolved). A GGUF is dequantized and unlabelled
    (see the module docstring). `dtype`: a torch dtype or its name (None: float32). `what` names the
    model in error messages. Raises `ModelFileError` (missing or unloadable weights),
    `InvalidSpecError`, `ChecksumError`."""
    src, kw = _source(spec, gguf_file)
    label = f"{what} {_name(spec)!r}"
    return _model(src, kw, dtype, trust_remote_code, label), _tokenizer(src, kw, trust_remote_code, label)


def load_trained(directory: str | Path, base: str | ModelSpec, *, lora: bool, dtype: Any = None,
                 what: str = "model") -> tuple[Any, Any]:
    """``(model, tokenizer)`` saved by ``model.save_pretrained(directory)`` and
    ``tokenizer.save_pretrained(directory)`` (a `Policy`'s or the PRM's weights): with `lora`, the
    `base` model (a spec, loaded as `load_model` does) wrapped with the saved adapters, trainable;
    else the full weights in `directory`. The directory is read as it is, never parsed as a spec."""
    saved = str(directory)
    tok = load_tokenizer(saved, gguf_file="", what=what)
    if lora:
        model = import_peft().PeftModel.from_pretrained(load_model(base, dtype=dtype, what=f"{what} base model"),
                                                        saved, is_trainable=True)
    else:
        model = load_model(saved, gguf_file="", dtype=dtype, what=what)
    return model, tok


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: Sequence[str] | str | None = None) -> Any:
    """A peft ``LoraConfig`` for a causal LM; `target_modules` None (or empty) means `LORA_ALL_LINEAR`."""
    peft = import_peft()
    targets = (target_modules if isinstance(target_modules, str) else list(target_modules)) if target_modules \
        else LORA_ALL_LINEAR
    return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                           task_type="CAUSAL_LM")


__all__ = ["LORA_ALL_LINEAR", "ensure_pad_token", "import_peft", "load_causal_lm", "load_model",
           "load_tokenizer", "load_trained", "lora_config", "resolve_dtype"]
