"""``hf`` backend: transformers ``generate`` (CPU or CUDA), batched with left padding.

Loads a hub id, a local directory, or a GGUF file (transformers dequantizes GGUF to float weights:
~3.8 GB RSS for the 0.5B default model) through the one HF loader, `o1code.models.hub`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from .base import Completion, SamplingParams, apply_chat_template, cut_at_stop
from .errors import ModelError
from .spec import hf_location

log = logging.getLogger(__name__)


@dataclass
class HFConfig:
    """``model``: hub id or local directory (or a ``.gguf`` file path). ``gguf_file``: file name inside
    ``model`` when loading GGUF (set automatically for a ``.gguf`` path). ``device``: "cpu", "cuda", ...
    (None: cuda when available). ``dtype``: torch dtype name (None: float32 on CPU, bfloat16 on CUDA).
    ``chat_template``: wrap each prompt as a user turn when the tokenizer has a template (False: raw
    completion). ``batch_size``: sequences (prompts x n) per ``generate`` call."""

    model: str = ""
    gguf_file: str | None = None
    device: str | None = None
    dtype: str | None = None
    chat_template: bool = True
    batch_size: int = 8
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.model, gguf_file = hf_location(self.model)
        self.gguf_file = gguf_file or self.gguf_file


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for v in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif v:
            ids.update(v)
    return ids


class HFGenerator:
    """Generator over a transformers causal LM. ``generate`` returns per prompt ``params.n``
    Completions with token ids and per-token model log-probs (log-softmax of the raw logits, before
    temperature / top-k / top-p). With ``params.seed`` set, torch's RNG is seeded once per call, so the
    same prompts, params and batch size give the same output."""

    def __init__(self, config: HFConfig, model: Any = None, tokenizer: Any = None) -> None:
        import torch

        from .hub import ensure_pad_token, load_model, load_tokenizer, resolve_dtype

        self.config = config
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        # The directory (or hub id) and GGUF file were resolved by HFConfig: no second spec parse.
        where = {"gguf_file": config.gguf_file or "", "trust_remote_code": config.trust_remote_code,
                 "what": "hf model"}
        if tokenizer is None:
            tokenizer = load_tokenizer(config.model, **where)
        if model is None:
            log.info("loading %s%s with transformers on %s", config.model,
                     f"/{config.gguf_file}" if config.gguf_file else "", self.device)
            model = load_model(config.model, dtype=resolve_dtype(config.dtype, self.device), **where)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        ensure_pad_token(tokenizer)
        self.eos_ids = _eos_ids(self.model, tokenizer)

    def format_prompt(self, prompt: str) -> str:
        """The exact text fed to the model for ``prompt`` (chat template applied when enabled)."""
        return apply_chat_template(self.tokenizer, prompt, self.config.chat_template)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (see :class:`Completion`)."""
        import torch

        if isinstance(prompts, str):
            prompts = [prompts]
        n = 1 if params.greedy else params.n  # greedy: all n completions are identical
        per_chunk = max(1, self.config.batch_size // n)
        dev = self.model.device
        out: list[list[Completion]] = []
        # a seed reseeds a forked RNG, leaving the caller's global torch RNG state untouched
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [],
                                   enabled=params.seed is not None):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for i in range(0, len(prompts), per_chunk):
                out.extend(self._generate_chunk(list(prompts[i : i + per_chunk]), params, n))
        if n != params.n:
            out = [[dataclasses.replace(o[0], token_ids=list(o[0].token_ids), logprobs=list(o[0].logprobs or []))
                    for _ in range(params.n)] for o in out]
        return out

    def _generate_chunk(self, prompts: list[str], params: SamplingParams, n: int) -> list[list[Completion]]:
        import torch
        from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        class Recorder(LogitsProcessor):
            """Keeps the raw log-softmax of the previous step to read off the chosen token's log-prob."""

            def __init__(self) -> None:
                self.prev: torch.Tensor | None = None
                self.steps: list[torch.Tensor] = []

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if self.prev is not None:
                    self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
                self.prev = torch.log_softmax(scores.float(), dim=-1)
                return scores

        rec = Recorder()
        procs: list[Any] = [rec]
        if not params.greedy:
            procs.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                procs.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                procs.append(TopPLogitsWarper(params.top_p))
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_tokens, do_sample=not params.greedy, temperature=1.0, top_p=1.0,
            top_k=None if params.greedy else 0, num_return_sequences=n, eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id, stop_strings=list(params.stop) or None,
            return_dict_in_generate=True,
        )
        texts = [self.format_prompt(p) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.config.chat_template
                             or not getattr(self.tokenizer, "chat_template", None)).to(self.device)
        with torch.inference_mode():
            res = self.model.generate(**enc, generation_config=gen_cfg, tokenizer=self.tokenizer,
                                      logits_processor=LogitsProcessorList(procs))
        seqs = res.sequences[:, enc["input_ids"].shape[1]:]
        if rec.prev is not None and seqs.shape[1] > len(rec.steps):
            rec.steps.append(rec.prev.gather(1, seqs[:, -1:]).squeeze(1))
        lps = torch.stack(rec.steps, 1).tolist() if rec.steps else [[] for _ in range(seqs.shape[0])]
        comps = [self._finish(ids, lp, params.stop) for ids, lp in zip(seqs.tolist(), lps)]
        return [comps[j * n : (j + 1) * n] for j in range(len(prompts))]

    def _finish(self, ids: list[int], lps: list[float], stop: Sequence[str]) -> Completion:
        end, reason = len(ids), "length"
        for k, t in enumerate(ids):
            if t in self.eos_ids:
                end, reason = k + 1, "stop"
                break
        ids = ids[:end]
        decode = lambda x: self.tokenizer.decode(x, skip_special_tokens=True)  # noqa: E731
        text, hit = cut_at_stop(decode(ids), stop)
        if hit:  # shortest prefix of tokens whose text contains a stop string
            lo, hi = 1, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if cut_at_stop(decode(ids[:mid]), stop)[1] else (mid + 1, hi)
            ids, reason = ids[:lo], "stop"
        return Completion(text=text, token_ids=ids, logprobs=lps[: len(ids)], finish_reason=reason)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy weights (e.g. from :meth:`Policy.push_to`) into the generator's model in place.

        Raises ModelError on unexpected keys or missing keys (a tied ``lm_head.weight`` may be absent)."""
        res = self.model.load_state_dict(state_dict, strict=False)
        missing = [k for k in res.missing_keys if k != "lm_head.weight"]
        if missing or res.unexpected_keys:
            raise ModelError(f"weights do not fit the generator model: missing={missing[:5]} "
                             f"unexpected={res.unexpected_keys[:5]}")
