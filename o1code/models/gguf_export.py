"""Write trained weights back into the GGUF file they started from, so that a trained policy decodes on
llama.cpp like the model it came from (quantized and batched: greedy decoding 2.6x faster than transformers'
float32 on 2 CPU cores, in a third of the memory).

The base GGUF supplies everything but the trained tensors: its metadata (architecture, tokenizer,
chat template) and every tensor training left alone, copied byte for byte. A tensor counts as trained
when it differs from the base's dequantized tensor at bfloat16 precision, so weights saved in bfloat16
or float32 leave untouched tensors untouched. Trained 2-D tensors are written as Q8_0 (8-bit blocks of
32, close to lossless against the Q4_K_M base), the others as F32.

Names follow gguf's tensor map, the same one transformers uses to load a GGUF. Llama's query and key
projections are stored permuted in GGUF (llama.cpp's rotary layout) and un-permuted by transformers on
load, so they are permuted back here; other architectures that transformers transforms on load are
refused rather than written back wrong.

    from o1code.models.gguf_export import export_policy
    export_policy("runs/selfplay/iter-0/sft/final", "default", "runs/selfplay/iter-0/sft/policy.gguf")
    # then: o1code eval --model llamacpp:runs/selfplay/iter-0/sft/policy.gguf ...
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ExportError

log = logging.getLogger(__name__)

#: GGUF architectures whose tensors transformers loads unchanged, or (llama) only with its q/k rows
#: permuted, so that trained weights can be written back under the same names.
SUPPORTED_ARCHITECTURES = ("qwen2", "qwen3", "llama")


@dataclass(frozen=True)
class ExportResult:
    """What `export_gguf` wrote: the file, the tensors it replaced, and those it copied from the base."""

    path: Path
    replaced: tuple[str, ...]
    copied: int


@functools.cache
def _reader_class() -> Any:
    import gguf
    import numpy as np

    class FastGGUFReader(gguf.GGUFReader):
        """gguf-py's reader with its one accessor of the file, ``_get``, reading views of a plain
        ndarray of the same mapping instead of the np.memmap itself. Every view of a memmap runs
        numpy's Python-level ``__array_finalize__``, and the default model's 151k-token vocabulary
        makes millions of views: 7.1 s per read, 1.9 s without (same fields and tensors)."""

        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self._plain = self.data.view(np.ndarray)
            dt = np.dtype(dtype)
            count = int(count)
            arr = plain[offset:offset + dt.itemsize * count].view(dt)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return FastGGUFReader


def read_gguf(path: str | os.PathLike) -> Any:
    """A `gguf.GGUFReader` of `path` (its ``fields`` and ``tensors``), read about 4x faster than
    gguf-py's own; a gguf-py whose internals the faster one does not fit gets its own reader."""
    import gguf

    try:
        return _reader_class()(str(path))
    except Exception as exc:
        log.debug("fast GGUF reader failed on %s (%s); using gguf-py's", path, exc)
        return gguf.GGUFReader(str(path))


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def _to_gguf_rows(weight: Any, heads: int) -> Any:
    """Llama's q/k projection in GGUF's row order: the inverse of transformers' un-permutation on load
    (each head's rows go from two halves, rotated as pairs by HF, to interleaved pairs)."""
    dim = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, dim, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class GGUFLayout:
    """How a GGUF names and lays out the tensors of the transformers model it loads as: its
    architecture, gguf's HF-to-GGUF tensor-name map, each tensor's numpy shape (``(out, in)`` for a
    matrix, as transformers holds it) and, for llama, the head counts whose q/k rows are permuted."""

    arch: str
    names: Any  # gguf.TensorNameMap
    shapes: Mapping[str, tuple[int, ...]]
    heads: Mapping[str, int]

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF tensor name of transformers parameter `hf_name` (``model.layers.0.self_attn.q_proj.weight``
        -> ``blk.0.attn_q.weight``), or None when the map has none."""
        return self.names.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def to_gguf_rows(self, name: str, rows: Any) -> Any:
        """`rows` (a tensor whose rows are the output rows of GGUF tensor `name`) in the GGUF's row order:
        llama's q/k rows permuted as llama.cpp stores them, every other tensor unchanged."""
        role = name.split(".")[-2]
        return _to_gguf_rows(rows, self.heads[role]) if role in self.heads else rows


def gguf_layout(reader: Any, source: str | os.PathLike = "GGUF") -> GGUFLayout:
    """The `GGUFLayout` of a GGUF read by `read_gguf`; `source` names it in errors. Raises `ExportError`
    for an architecture outside `SUPPORTED_ARCHITECTURES`."""
    import gguf

    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"{source}: architecture {arch!r} cannot be exported (supported: "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)})")
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, int(_field(reader, f"{arch}.block_count")))
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    heads = {"attn_q": int(_field(reader, f"{arch}.attention.head_count")),
             "attn_k": int(_field(reader, f"{arch}.attention.head_count_kv"))} if arch == "llama" else {}
    return GGUFLayout(arch, names, shapes, heads)


def export_gguf(weights: Mapping[str, Any], base: str | os.PathLike, dest: str | os.PathLike) -> ExportResult:
    """Write `dest`: the GGUF file `base` with every tensor of `weights` (a transformers state dict of
    torch tensors, e.g. `Policy.generation_state_dict`) that differs from it. Tensors of `base` without
    a counterpart in `weights` are copied. Written to a temporary file, then renamed (never torn).

    Raises `ExportError` for an unsupported architecture, a name with no tensor in `base` or a shape
    that differs from it."""
    import gguf
    import numpy as np
    import torch
    from gguf.quants import dequantize, quantize

    reader = read_gguf(base)
    layout = gguf_layout(reader, base)
    arch = layout.arch
    tensors = {t.name: t for t in reader.tensors}

    replacements: dict[str, Any] = {}
    for hf_name, value in weights.items():
        name = layout.gguf_name(hf_name)
        if name not in tensors:
            embed = weights.get("model.embed_tokens.weight")
            if hf_name == "lm_head.weight" and embed is not None and torch.equal(value, embed):
                continue  # tied to the token embeddings, which are written as token_embd
            raise ExportError(f"{hf_name!r} has no tensor in {base} (mapped to {name!r})")
        t = tensors[name]
        old = dequantize(t.data, t.tensor_type)
        new = value.detach().cpu()
        if new.ndim == 2:
            new = layout.to_gguf_rows(name, new)
        if tuple(old.shape) != tuple(new.shape):
            raise ExportError(f"{hf_name}: shape {tuple(new.shape)} differs from {name}'s {tuple(old.shape)} in {base}")
        if torch.equal(new.to(torch.bfloat16), torch.from_numpy(np.array(old, dtype=np.float32)).to(torch.bfloat16)):
            continue  # untouched by training (up to the precision it was saved in)
        new = new.float().numpy()
        if new.ndim == 2 and new.shape[1] % 32 == 0:
            replacements[name] = (quantize(new, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0)
        else:
            replacements[name] = (new, gguf.GGMLQuantizationType.F32)

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        alignment = _field(reader, "general.alignment")
        if alignment:
            writer.data_alignment = int(alignment)
        for field in reader.fields.values():  # metadata as is; the writer adds the architecture and GGUF.*
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            writer.add_key_value(field.name, field.contents(), kind,
                                 sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
        data = []
        for t in reader.tensors:
            array, qtype = replacements.get(t.name, (t.data, t.tensor_type))
            writer.add_tensor_info(t.name, array.shape, array.dtype, array.nbytes, raw_dtype=qtype)
            data.append(array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for array in data:
            writer.write_tensor_data(array)
        writer.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # only a failed write leaves it
    log.info("exported %s: %d tensors trained (Q8_0/F32), %d copied from %s", dest, len(replacements),
             len(reader.tensors) - len(replacements), base)
    return ExportResult(dest, tuple(sorted(replacements)), len(reader.tensors) - len(replacements))


def base_gguf(spec: str) -> Path | None:
    """The GGUF file a model spec names (``default``, ``gguf:PATH``, ``llamacpp:PATH``, ``hf:FILE.gguf``),
    or None when its weights are not a GGUF (a hub id or directory)."""
    from .loader import transformers_source

    directory, filename = transformers_source(spec)
    return Path(directory) / filename if filename else None


def export_policy(directory: str | os.PathLike, base: str, dest: str | os.PathLike) -> ExportResult:
    """Export the `Policy` saved in `directory` (``o1code sft``'s or ``o1code ppo``'s RUN/final; its LoRA
    merged) into `dest`, on the GGUF of model spec `base` (the model its training started from).
    Raises `ExportError` when `base` is not a GGUF."""
    from .policy import Policy

    path = base_gguf(base)
    if path is None:
        raise ExportError(f"{base!r} is not a GGUF file: only a policy trained from a GGUF model can be exported")
    policy = Policy.load(directory, device="cpu")
    weights = policy.generation_state_dict()
    del policy
    return export_gguf(weights, path, dest)


__all__ = ["ExportResult", "GGUFLayout", "SUPPORTED_ARCHITECTURES", "base_gguf", "export_gguf", "export_policy",
           "gguf_layout", "read_gguf"]
