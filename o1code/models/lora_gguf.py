"""Write a policy's LoRA adapters as a llama.cpp LoRA adapter GGUF, so that llama.cpp samples from the
live policy without merging or re-quantizing the base model.

The file is what llama.cpp's own converter (``convert_lora_to_gguf.py``) writes: ``general.type =
"adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha``, the base's ``general.architecture``,
and for each adapted matrix ``W`` (GGUF name ``blk.N.attn_q.weight`` ...) a pair ``<name>.lora_a``
(peft's A, numpy shape ``(r, in)``) and ``<name>.lora_b`` (peft's B, ``(out, r)``), in float32.
llama.cpp adds ``scale * alpha / r * B @ (A @ x)`` to ``W @ x``, where ``r`` is each tensor's rank and
``scale`` the one given to `LlamaCppGenerator.set_adapter`. Llama stores its q/k rows permuted
(llama.cpp's rotary layout), so B's rows are permuted like the full weights `gguf_export` writes;
qwen2/qwen3 need no change. A tensor whose peft scaling is not the file's ``alpha / r`` (peft's
``rank_pattern``/``alpha_pattern``, rsLoRA) has the ratio folded into its B.

The base GGUF is read once per file (its tensor names, shapes and head counts; ~2 s for the default
model's 151k-token vocabulary) and cached, so writing the default model's adapters after that takes
a fraction of a second (``bench/bench_models.py --lora``).

    from o1code.models.lora_gguf import write_lora_gguf
    path = write_lora_gguf(policy, base_gguf("default"), "runs/x/adapter.gguf")
    generator.set_adapter(path)   # a LlamaCppGenerator on the same base GGUF
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

from .errors import ExportError
from .gguf_export import GGUFLayout, gguf_layout, read_gguf

log = logging.getLogger(__name__)

# peft's adapter state-dict names: [base_model.model.]<module>.lora_A[.<adapter>].weight
_STATE_NAME = re.compile(r"^(?:.*base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@functools.lru_cache(maxsize=4)
def _cached_layout(path: str, size: int, mtime_ns: int) -> GGUFLayout:
    return gguf_layout(read_gguf(path), path)


def base_layout(base_gguf: str | os.PathLike) -> GGUFLayout:
    """The `GGUFLayout` of `base_gguf`, read once per file version (path, size, mtime) and cached."""
    path = Path(base_gguf).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise ExportError(f"base GGUF {path} cannot be read: {exc}") from exc
    return _cached_layout(str(path), st.st_size, st.st_mtime_ns)


def lora_pairs(adapters: Any, alpha: float | None = None) -> dict[str, tuple[Any, Any, float]]:
    """``{transformers module name: (A, B, scaling)}`` of every LoRA-adapted linear layer in `adapters`:
    a `Policy` or any torch module holding peft LoRA layers (a ``PeftModel``), whose own scaling is used
    (then `alpha` must be None), or a mapping of peft adapter state-dict names (``get_peft_model_state_dict``,
    ``adapter_model.safetensors``) to tensors, scaled ``alpha / r``. A and B are detached float32 CPU
    tensors shaped ``(r, in)`` and ``(out, r)``. Raises `ExportError` for what llama.cpp cannot apply
    (DoRA, LoRA biases, embedding LoRA, merged or several active adapters) and for a missing `alpha`."""
    if isinstance(adapters, Mapping):
        if alpha is None or not alpha > 0:
            raise ExportError(f"an adapter state dict needs its LoRA alpha > 0 (got {alpha!r})")
        parts: dict[str, dict[str, Any]] = {}
        for key, value in adapters.items():
            m = _STATE_NAME.match(key)
            if m is None:
                raise ExportError(f"{key!r} is not a LoRA A/B weight (a peft adapter state-dict name)")
            parts.setdefault(m["module"], {})[m["ab"]] = value
        out = {}
        for module, ab in parts.items():
            if set(ab) != {"A", "B"}:
                raise ExportError(f"{module}: LoRA pair incomplete (has only {sorted(ab)})")
            a, b = (_f32(ab[k]) for k in "AB")
            out[module] = (a, b, float(alpha) / a.shape[0])
        return out
    if alpha is not None:
        raise ExportError("alpha is read from the model's LoRA layers; pass alpha only with a state dict")
    out = {}
    for name, module in adapters.named_modules():
        if not hasattr(module, "lora_A") or not hasattr(module, "scaling"):
            continue
        active = [a for a in getattr(module, "active_adapters", []) if a in module.lora_A]
        if getattr(module, "lora_embedding_A", None) and any(a in module.lora_embedding_A for a in
                                                               module.active_adapters):
            raise ExportError(f"{name}: embedding LoRA cannot be written for llama.cpp")
        if not active:
            continue
        if len(active) > 1:
            raise ExportError(f"{name}: {len(active)} active adapters {active}; llama.cpp's file holds one")
        ad = active[0]
        if getattr(module, "merged", False):
            raise ExportError(f"{name}: the adapter is merged into the base weights; unmerge it first")
        if getattr(module, "use_dora", {}).get(ad) or getattr(module, "lora_bias", {}).get(ad):
            raise ExportError(f"{name}: DoRA / LoRA biases cannot be applied by llama.cpp")
        hf = name.rsplit("base_model.model.", 1)[-1]
        out[hf] = (_f32(module.lora_A[ad].weight), _f32(module.lora_B[ad].weight), float(module.scaling[ad]))
    if not out:
        raise ExportError(f"{type(adapters).__name__} holds no active LoRA adapter (a Policy with lora=True?)")
    return out


def _f32(t: Any) -> Any:
    import torch

    return t.detach().to("cpu", torch.float32)


def write_lora_gguf(adapters: Any, base_gguf: str | os.PathLike, dest: str | os.PathLike,
                    alpha: float | None = None, half: bool = False) -> Path:
    """Write the LoRA adapters of `adapters` to `dest` as a llama.cpp LoRA adapter GGUF for the model
    `base_gguf` (the GGUF file the policy's base was dequantized from, e.g.
    ``gguf_export.base_gguf("default")``); return `dest` as a Path.

    `adapters`: a `Policy` (``lora=True``), a peft model, or a peft adapter state dict with its `alpha`
    (see `lora_pairs`). `half` stores the tensors in float16 (half the file: what is shipped; the hot
    swap keeps float32). Written to a temporary file and renamed, so a reader never sees a torn file.
    Raises `ExportError` for an unsupported architecture (`gguf_export.SUPPORTED_ARCHITECTURES`), a
    module with no tensor in `base_gguf`, or A/B shapes that do not fit the base tensor."""
    import gguf
    import numpy as np

    layout = base_layout(base_gguf)
    pairs = lora_pairs(adapters, alpha)
    first_a, _, first_scaling = next(iter(pairs.values()))
    file_alpha = first_scaling * first_a.shape[0]  # llama.cpp's scale is alpha / r, per tensor r
    tensors: list[tuple[str, Any]] = []
    for module, (a, b, scaling) in sorted(pairs.items()):
        name = layout.gguf_name(f"{module}.weight")
        if name is None or name not in layout.shapes:
            raise ExportError(f"LoRA module {module!r} has no tensor in {base_gguf} (mapped to {name!r})")
        out_dim, in_dim = layout.shapes[name]
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_dim or b.shape != (out_dim, r):
            raise ExportError(f"{module}: LoRA A {tuple(a.shape)} / B {tuple(b.shape)} do not fit {name} "
                              f"(out {out_dim}, in {in_dim}) of {base_gguf}")
        fold = scaling * r / file_alpha
        if fold != 1.0:
            b = b * fold
        ftype = np.float16 if half else np.float32
        tensors.append((f"{name}.lora_a", np.ascontiguousarray(a.numpy(), dtype=ftype)))
        tensors.append((f"{name}.lora_b", np.ascontiguousarray(layout.to_gguf_rows(name, b).numpy(), dtype=ftype)))

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), layout.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(file_alpha))
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("wrote %d LoRA pairs (alpha %g) to %s", len(pairs), file_alpha, dest)
    return dest


__all__ = ["base_layout", "lora_pairs", "write_lora_gguf"]
