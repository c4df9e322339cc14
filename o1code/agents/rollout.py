"""Rollout engines: what samples the RL stage's steps, apart from the trainer that updates the policy.

The split of every serious RL stack (verl, OpenRLHF, TRL with vLLM): an inference engine samples the
rollouts and reports each token's log-prob under its own numerics; the trainer (`o1code.agents.ppo`)
recomputes the log-probs, corrects for the small mismatch by truncated importance sampling, updates,
and then publishes the new weights to the engine with `sync` before the next rollout. An engine is:

- ``sync(policy)``: make the engine sample from `policy`'s current weights (called before the first
  rollout and after each update);
- ``sample(prompts, n, seed, max_tokens, temperature, top_p)``: for each prompt, ``n`` `Sample` s
  (token ids and per-token log-probs under the engine, before temperature), each cut after the token
  that completes the step delimiter (``STEP_END``) or EOS, seeded;
- ``close()``.

Implementations: `TransformersEngine` (the policy's own LM through ``generate``, batched as wide as
``max_batch``: the fallback everywhere and the GPU default without vLLM); `GeneratorEngine` over a
`LlamaCppGenerator` (the CPU default for a LoRA policy on a GGUF base: `sync` writes the adapters as a
llama.cpp LoRA GGUF and hot-swaps it; the engine's base is the same GGUF the trainer dequantized) or a
`VLLMGenerator` (``gpu`` extra: the adapters saved by peft and loaded as a new ``LoRARequest``).
`make_engine` picks one by name. The reference policy of the KL term (`make_reference`,
`reference_logprobs`) lives here too: the trainer's other scorer besides the policy itself.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from o1code.agents.errors import AgentError
from o1code.data.formats import STEP_END

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One sampled step: its token ids, each token's log-prob under the engine (same length), and the
    version of the weights it was drawn with (the engine's count of `sync` calls; 0 where untracked)."""

    token_ids: list[int]
    logprobs: list[float]
    version: int = 0


def chunks(items: Sequence[Any], size: int | None) -> list[Sequence[Any]]:
    """`items` in order, in pieces of at most `size` (None: one piece)."""
    size = size or max(len(items), 1)
    return [items[i:i + size] for i in range(0, len(items), size)]


class RolloutEngine(Protocol):
    name: str

    def sync(self, policy: Any) -> None: ...

    def sample(self, prompts: Sequence[str], n: int, seed: int, max_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[Sample]]: ...

    def close(self) -> None: ...


class _Recorder:
    """A logits processor that records the log-prob of each sampled token under the raw logits (it
    runs before temperature/top-p): at step t it reads the token chosen at step t-1."""

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None
        self.lps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.lps.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.prev = torch.log_softmax(scores.float(), -1)
        return scores

    def finish(self, last: torch.Tensor) -> torch.Tensor:
        """(batch, new tokens) log-probs, given the last column of generated tokens."""
        if self.prev is not None:
            self.lps.append(self.prev.gather(-1, last[:, None]).squeeze(-1))
        return torch.stack(self.lps, 1) if self.lps else torch.zeros(len(last), 0)


def cut_step(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many of `ids` the step keeps: up to the token completing ``STEP_END``, or EOS (kept), or
    before the first pad; at least one."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for i, t in enumerate(ids):
        if t in stops:
            return max(i + 1 if t == tokenizer.eos_token_id else i, 1)
        if STEP_END in tokenizer.decode(ids[max(0, i - 8):i + 1]):
            return i + 1
    return max(len(ids), 1)


class TransformersEngine:
    """Samples with the policy's own LM (``generate``, left padding), at most ``max_batch`` sequences per
    call (None: all of them). HF generate is latency-bound: on a GPU the widest batch that fits is the fast one."""

    name = "transformers"

    def __init__(self, max_batch: int | None = None) -> None:
        self.policy: Any = None
        self.max_batch = max_batch

    def sync(self, policy: Any) -> None:
        self.policy = policy  # samples the live weights: nothing to copy

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, seed: int, max_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[Sample]]:
        from transformers import LogitsProcessorList

        policy = self.policy
        if policy is None:
            raise AgentError("sync(policy) before sample()")
        tok = policy.tokenizer
        texts = [policy.format_prompt(p) for p in prompts for _ in range(n)]
        width = self.max_batch or len(texts)
        flat: list[Sample] = []
        for c in range(0, len(texts), width):
            side = tok.padding_side
            tok.padding_side = "left"
            try:
                templ = policy.config.chat_template and getattr(tok, "chat_template", None)
                enc = tok(texts[c:c + width], return_tensors="pt", padding=True,
                          add_special_tokens=not templ).to(policy.device_)
            finally:
                tok.padding_side = side
            torch.manual_seed(seed + c)
            rec = _Recorder()
            out = policy.model.generate(
                **enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=0, repetition_penalty=1.0,
                max_new_tokens=max_tokens, stop_strings=[STEP_END], tokenizer=tok, pad_token_id=tok.pad_token_id,
                logits_processor=LogitsProcessorList([rec]))
            new = out[:, enc["input_ids"].shape[1]:]
            lps = rec.finish(new[:, -1]).tolist() if new.shape[1] else [[] for _ in range(len(new))]
            for ids, lp in zip(new.tolist(), lps):
                k = cut_step(tok, ids)
                flat.append(Sample(ids[:k], lp[:k]))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        self.policy = None


class GeneratorEngine:
    """Samples with an inference `Generator` that hot-swaps LoRA adapters (``set_adapter(path)``):
    `LlamaCppGenerator` (``fmt="gguf"``: adapters written by `write_lora_gguf` against ``base``, the
    GGUF the policy was dequantized from) or `VLLMGenerator` (``fmt="peft"``: ``save_pretrained``).
    Each sync writes a new adapter file under ``workdir`` and drops the previous one. `sample` asks the
    generator ``prompts_per_call`` prompts at a time (None: all in one call)."""

    def __init__(self, name: str, generator: Any, fmt: str, base: str | None = None,
                 workdir: str | Path | None = None, prompts_per_call: int | None = None) -> None:
        self.name, self.generator, self.fmt, self.base = name, generator, fmt, base
        self.prompts_per_call = prompts_per_call  # `sample` asks the generator this many prompts at a time
        self._own = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="o1code-adapter-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.current: Path | None = None

    def sync(self, policy: Any) -> None:
        if not hasattr(policy.model, "peft_config"):
            raise AgentError(f"the {self.name} engine samples LoRA adapters on a fixed base: train with lora=True, "
                             "or use engine='transformers'")
        version = self.version + 1
        path = self.workdir / f"adapter-{version}{'.gguf' if self.fmt == 'gguf' else ''}"
        if self.fmt == "gguf":
            from o1code.models.lora_gguf import write_lora_gguf

            write_lora_gguf(policy, self.base, path)
        else:
            policy.model.save_pretrained(path)
        self.use_adapter(path, version)

    def use_adapter(self, path: Path, version: int) -> None:
        """Sample with the adapter at `path` (written by `sync`, or by a Ray worker from the learner's bytes)
        as adapter `version`; the previous adapter's file is removed."""
        self.generator.set_adapter(str(path))
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True) if self.current.is_dir() else self.current.unlink(True)
        self.current, self.version = path, version

    def sample(self, prompts: Sequence[str], n: int, seed: int, max_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[Sample]]:
        from o1code.models.base import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=(STEP_END,),
                                seed=seed)
        return [[Sample(list(c.token_ids), list(c.logprobs or []), self.version) for c in comps]
                for part in chunks(list(prompts), self.prompts_per_call) for comps in self.generator.generate(part, params)]

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- the trainer's reference policy
def reference_logprobs(policy: Any, reference: Any, prompts: Sequence[str], ids: Sequence[Sequence[int]]
                       ) -> list[torch.Tensor]:
    """Per-token log-probs under the reference policy: `reference` (a frozen LM) swapped in for the
    call, or, when None, the policy's own LM with its LoRA adapters disabled (no copy needed)."""
    if reference is None:
        with policy.model.disable_adapter():
            return policy.logprobs(prompts, ids)
    live, policy.model = policy.model, reference
    try:
        return policy.logprobs(prompts, ids)
    finally:
        policy.model = live


def make_reference(policy: Any) -> Any:
    """None when the policy trains LoRA adapters (disabling them gives the reference for free), else a
    frozen copy of its LM as it is now."""
    import copy

    if hasattr(policy.model, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy.model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def sample_each(engine: RolloutEngine, prompts: Sequence[str], seed: int, max_tokens: int, temperature: float,
                top_p: float) -> list[Sample]:
    """One sample per prompt; equal prompts (a GRPO group's first step) are asked for together as ``n``
    samples of one prompt, so the engine evaluates each prompt once. One engine call per group size."""
    where: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        where.setdefault(p, []).append(i)
    out: list[Sample | None] = [None] * len(prompts)
    for n in sorted({len(v) for v in where.values()}):
        batch = [p for p, v in where.items() if len(v) == n]
        for p, samples in zip(batch, engine.sample(batch, n, seed + 7919 * n, max_tokens, temperature, top_p)):
            for i, s in zip(where[p], samples):
                out[i] = s
    return out  # type: ignore[return-value]


def gguf_base(policy: Any) -> str | None:
    """The GGUF file `policy`'s base weights were dequantized from, or None (a hub model or directory)."""
    from o1code.models.loader import transformers_source

    try:
        src, name = transformers_source(policy.config.model)
    except Exception:  # a directory of merged weights, an unknown spec: not a GGUF base
        return None
    return str(Path(src) / name) if name else None


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def resolve_engine(name: str, policy: Any) -> str:
    """The engine ``auto`` means for a LoRA `policy`: on the CPU, ``llamacpp`` for a GGUF base with
    llama-cpp-python installed; on a GPU, ``vllm`` for a hub or directory base with vLLM installed;
    else (and for full fine-tuning) ``transformers``. Other names are returned as given."""
    if name != "auto":
        return name
    if not hasattr(policy.model, "peft_config"):
        return "transformers"
    gguf = gguf_base(policy)
    if str(getattr(policy, "device_", "cpu")).startswith("cpu"):
        return "llamacpp" if gguf and installed("llama_cpp") else "transformers"
    return "vllm" if not gguf and installed("vllm") else "transformers"


def make_engine(name: str, policy: Any, workdir: str | Path | None = None, prompts_per_call: int | None = None,
                **options: Any) -> RolloutEngine:
    """The engine `name` (``auto`` resolved by `resolve_engine`) for `policy`, synced to it. `options`:
    the backend config's fields (e.g. ``n_ctx`` for llama.cpp, ``engine_kwargs`` for vLLM) or
    ``max_batch`` for transformers; `prompts_per_call`: see `GeneratorEngine`."""
    name = resolve_engine(name, policy)
    if name == "transformers":
        engine: RolloutEngine = TransformersEngine(**options)
    elif name == "llamacpp":
        from o1code.models.llamacpp import LlamaCppConfig, LlamaCppGenerator

        base = gguf_base(policy)
        if base is None:
            raise AgentError(f"the llamacpp engine needs a policy on a GGUF base; {policy.config.model!r} is not one")
        gen = LlamaCppGenerator(LlamaCppConfig(**{"path": base, "chat_template": policy.config.chat_template,
                                                  "n_ctx": 8192, **options}))
        engine = GeneratorEngine("llamacpp", gen, "gguf", base=base, workdir=workdir, prompts_per_call=prompts_per_call)
    elif name == "vllm":
        from o1code.models.loader import transformers_source
        from o1code.models.vllm import VLLMConfig, VLLMGenerator

        src, gguf = transformers_source(policy.config.model)
        if gguf:
            raise AgentError("the vllm engine needs a hub id or directory base, not a GGUF file: train an hf: model")
        gen = VLLMGenerator(VLLMConfig(**{"model": src, "chat_template": policy.config.chat_template,
                                          "max_lora_rank": policy.config.lora_r, **options}))
        engine = GeneratorEngine("vllm", gen, "peft", workdir=workdir, prompts_per_call=prompts_per_call)
    else:
        raise AgentError(f"unknown engine {name!r}; choose auto, transformers, llamacpp or vllm")
    engine.sync(policy)
    log.info("rollouts on the %s engine", engine.name)
    return engine


__all__ = ["GeneratorEngine", "RolloutEngine", "Sample", "TransformersEngine", "chunks", "cut_step", "gguf_base", "make_engine", "make_reference", "reference_logprobs",
           "resolve_engine", "sample_each"]
