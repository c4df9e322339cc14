"""``vllm`` backend (optional ``gpu`` extra). vllm is imported only when a VLLMGenerator is built."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from .base import Completion, SamplingParams, apply_chat_template
from .errors import MissingExtraError

log = logging.getLogger(__name__)


@dataclass
class VLLMConfig:
    """``model``: hub id or local directory. ``chat_template``: apply the tokenizer's template.
    ``engine_kwargs``: passed to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``dtype``)."""

    model: str = ""
    chat_template: bool = True
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


class VLLMGenerator:
    """Generator over an in-process ``vllm.LLM``; Completions carry token ids and the sampled tokens'
    log-probs as vLLM reports them."""

    def __init__(self, config: VLLMConfig) -> None:
        try:
            import vllm
        except ImportError as e:
            raise MissingExtraError("the vllm backend needs vLLM and a CUDA GPU: pip install 'o1code[gpu]' "
                                    f"[{e}]") from e
        self._vllm = vllm
        self.config = config
        self.llm = vllm.LLM(model=config.model, **config.engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def format_prompt(self, prompt: str) -> str:
        return apply_chat_template(self.tokenizer, prompt, self.config.chat_template)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (see :class:`Completion`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        sp = self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
            max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=params.seed, logprobs=0,
        )
        results = self.llm.generate([self.format_prompt(p) for p in prompts], sp, use_tqdm=False)
        out = []
        for r in results:
            comps = []
            for o in r.outputs:
                ids = list(o.token_ids)
                lps = [d[t].logprob for d, t in zip(o.logprobs, ids)] if o.logprobs else None
                comps.append(Completion(text=o.text, token_ids=ids, logprobs=lps,
                                        finish_reason="length" if o.finish_reason == "length" else "stop"))
            out.append(comps)
        return out
