"""``vllm`` backend (optional ``gpu`` extra). vllm is imported only when a VLLMGenerator is built.

`set_adapter` hot-swaps a LoRA adapter (a peft ``save_pretrained`` directory): each call builds a new
``LoRARequest`` with an id of its own, so vLLM never serves a cached adapter under a newer file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from .base import Completion, SamplingParams, apply_chat_template, cut_at_stop
from .errors import MissingExtraError

log = logging.getLogger(__name__)


@dataclass
class VLLMConfig:
    """``model``: hub id or local directory. ``chat_template``: apply the tokenizer's template.
    ``max_lora_rank``: enable LoRA adapters up to this rank (None: no adapters; needed by `set_adapter`).
    ``engine_kwargs``: passed to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``dtype``)."""

    model: str = ""
    chat_template: bool = True
    max_lora_rank: int | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


def engine_args(config: VLLMConfig) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for `config`."""
    lora = {"enable_lora": True, "max_lora_rank": config.max_lora_rank, "max_loras": 1} if config.max_lora_rank else {}
    return {"model": config.model, **lora, **config.engine_kwargs}


def sampling_params(vllm: Any, params: SamplingParams) -> Any:
    """``vllm.SamplingParams`` of `params`: log-probs of the sampled tokens (``logprobs=0``), and the
    token that completes a stop string kept in the output's token ids (``include_stop_str_in_output``),
    as the other backends keep it."""
    return vllm.SamplingParams(
        n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
        max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=params.seed, logprobs=0,
        include_stop_str_in_output=bool(params.stop))


class VLLMGenerator:
    """Generator over an in-process ``vllm.LLM``; Completions carry token ids and the sampled tokens'
    log-probs as vLLM reports them."""

    def __init__(self, config: VLLMConfig, vllm: Any = None) -> None:
        if vllm is None:
            try:
                import vllm
                import vllm.lora.request  # noqa: F401 (LoRARequest, reached as vllm.lora.request)
            except ImportError as e:
                raise MissingExtraError("the vllm backend needs vLLM and a CUDA GPU: pip install 'o1code[gpu]' "
                                        f"[{e}]") from e
        self._vllm = vllm
        self.config = config
        self.llm = vllm.LLM(**engine_args(config))
        self.tokenizer = self.llm.get_tokenizer()
        self.lora: Any = None  # the LoRARequest of the adapter set, if any
        self._lora_id = 0

    def format_prompt(self, prompt: str) -> str:
        return apply_chat_template(self.tokenizer, prompt, self.config.chat_template)

    def set_adapter(self, path: str | None) -> None:
        """Sample from the base plus the peft LoRA adapter directory `path` (None: the base alone)."""
        if path is not None and not self.config.max_lora_rank:
            raise MissingExtraError("set_adapter needs VLLMConfig(max_lora_rank=...) (vLLM's enable_lora)")
        self._lora_id += 1
        self.lora = None if path is None else self._vllm.lora.request.LoRARequest(
            f"adapter-{self._lora_id}", self._lora_id, str(path))

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (see :class:`Completion`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        kw = {"lora_request": self.lora} if self.lora is not None else {}
        results = self.llm.generate([self.format_prompt(p) for p in prompts], sampling_params(self._vllm, params),
                                    use_tqdm=False, **kw)
        out = []
        for r in results:
            comps = []
            for o in r.outputs:
                ids = list(o.token_ids)
                lps = [d[t].logprob for d, t in zip(o.logprobs, ids)] if o.logprobs else None
                text = cut_at_stop(o.text, params.stop)[0]  # the stop string was kept for its token: cut it
                comps.append(Completion(text=text, token_ids=ids, logprobs=lps,
                                        finish_reason="length" if o.finish_reason == "length" else "stop"))
            out.append(comps)
        return out
