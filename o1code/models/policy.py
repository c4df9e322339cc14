"""Trainable policy: a transformers causal LM (optionally LoRA via peft) plus a scalar value head.

The LM comes from the one HF loader (`o1code.models.hub`), so a policy starts from any model spec
transformers can load, the embedded GGUF ``default`` included (dequantized to float weights).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from torch import nn

from .base import apply_chat_template
from .errors import ModelFileError
from .hub import ensure_pad_token, import_peft, load_model, load_tokenizer, load_trained, lora_config, resolve_dtype
from .spec import transformers_source

log = logging.getLogger(__name__)

Continuation = Union[str, Sequence[int]]


@dataclass
class PolicyConfig:
    """``model``: the base causal LM: a hub id, a local directory, or a spec of `load_causal_lm`
    (``default``, ``hf:ID_OR_PATH``, ``gguf:PATH`` ...). ``lora``: wrap it with peft LoRA
    (``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``; None = all linear layers
    but the output head, `o1code.models.hub.LORA_ALL_LINEAR`).
    ``chat_template``: format prompts exactly as :class:`HFGenerator` does (so log-probs match what was
    sampled). ``device``/``dtype``: None = cuda if available / float32."""

    model: str = ""
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    chat_template: bool = True
    device: str | None = None
    dtype: str | None = None


class Policy(nn.Module):
    """``model`` (causal LM, possibly a peft wrapper), ``tokenizer`` and ``value_head`` (Linear(hidden, 1)).

    All trainable parameters (LoRA adapters or the full LM, plus the value head) are in
    ``self.parameters()`` with ``requires_grad`` set; outputs keep the autograd graph."""

    def __init__(self, config: PolicyConfig, model: Any = None, tokenizer: Any = None,
                 value_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.config = config
        self.device_ = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(config.dtype)
        tokenizer = tokenizer or load_tokenizer(config.model, what="policy model")
        if model is None:
            model = load_model(config.model, dtype=dtype, what="policy model")
            if config.lora:
                model = import_peft().get_peft_model(model, lora_config(
                    config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules))
        ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        self.model = model
        hidden = model.get_input_embeddings().embedding_dim
        self.value_head = value_head or nn.Linear(hidden, 1)
        if value_head is None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.to(self.device_)
        self.value_head.float()  # float32 whatever the backbone's precision: Adam's small steps survive

    # ---------------------------------------------------------------- inputs
    def format_prompt(self, prompt: str) -> str:
        """The text the model is conditioned on for ``prompt`` (same rule as HFGenerator)."""
        return apply_chat_template(self.tokenizer, prompt, self.config.chat_template)

    def _prompt_ids(self, prompt: str) -> list[int]:
        templ = self.config.chat_template and getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(self.format_prompt(prompt), add_special_tokens=not templ)["input_ids"]

    def _batch(self, prompts: Sequence[str], conts: Sequence[Continuation] | None
               ) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        rows, plens, clens = [], [], []
        for i, p in enumerate(prompts):
            pids = self._prompt_ids(p)
            if not pids:
                raise ValueError(f"prompt {i} tokenizes to no tokens; nothing to condition on")
            c = conts[i] if conts is not None else []
            cids = self.tokenizer(c, add_special_tokens=False)["input_ids"] if isinstance(c, str) else list(c)
            rows.append(pids + cids)
            plens.append(len(pids))
            clens.append(len(cids))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device_)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device_)
        return ids, mask, plens, clens

    # ---------------------------------------------------------------- outputs
    def logprobs_and_values(self, prompts: Sequence[str], continuations: Sequence[Continuation]
                            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One batched forward pass. Returns (per-pair 1-D tensors of length len(continuation tokens)
        holding log p(token | prompt, previous tokens), and a (batch,) tensor of values read at each
        prompt's last token). ``continuations`` are strings (tokenized without special tokens) or
        token-id lists (e.g. ``Completion.token_ids``)."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        ids, mask, plens, clens = self._batch(prompts, continuations)
        # The output head only where a continuation token is predicted: full-vocabulary logits over
        # every prompt position (151k x ~1.5k tokens x 4 B per row for the default model, kept again
        # for backward) were most of the RL stage's peak memory. Plain heads only (no softcap/scale).
        head = self.model.get_output_embeddings()
        cfg = getattr(self.model, "config", None)
        sliced = head is not None and not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                         **({"logits_to_keep": 1} if sliced else {}))
        hidden = out.hidden_states[-1]
        lps = []
        for i, (pl, cl) in enumerate(zip(plens, clens)):
            rows = slice(pl - 1, pl - 1 + cl)
            lg = (head(hidden[i, rows]) if sliced else out.logits[i, rows]).float()
            tgt = ids[i, pl : pl + cl]
            lps.append(lg.gather(-1, tgt[:, None]).squeeze(-1) - lg.logsumexp(-1))
        last = hidden[torch.arange(len(plens), device=self.device_), torch.tensor(plens, device=self.device_) - 1]
        return lps, self.value_head(last.to(self.value_head.weight.dtype)).squeeze(-1)

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[Continuation]) -> list[torch.Tensor]:
        """Per-token log-probs of each continuation given its prompt (list of 1-D tensors, with grad)."""
        return self.logprobs_and_values(prompts, continuations)[0]

    def values(self, prompts: Sequence[str]) -> torch.Tensor:
        """Scalar value of each prompt (hidden state of its last token through the value head): shape (batch,)."""
        ids, mask, plens, _ = self._batch(prompts, None)
        hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        last = hidden[torch.arange(len(plens), device=self.device_), torch.tensor(plens, device=self.device_) - 1]
        return self.value_head(last.to(self.value_head.weight.dtype)).squeeze(-1)

    # ---------------------------------------------------------------- persistence / generators
    def save(self, directory: str | Path) -> Path:
        """Write ``policy.json``, ``model/`` (full weights, or only the LoRA adapter), the tokenizer and
        ``value_head.pt`` to ``directory``; return it."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(d / "model")
        self.tokenizer.save_pretrained(d / "model")
        torch.save(self.value_head.state_dict(), d / "value_head.pt")
        (d / "policy.json").write_text(json.dumps(asdict(self.config), indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "Policy":
        """Load a Policy written by :meth:`save` (``overrides`` replace PolicyConfig fields, e.g. device)."""
        d = Path(directory)
        if not (d / "policy.json").is_file():
            raise ModelFileError(f"no saved Policy in {d} (policy.json missing)")
        cfg = PolicyConfig(**{**json.loads((d / "policy.json").read_text()), **overrides})
        dtype = resolve_dtype(cfg.dtype)
        model, tok = load_trained(d / "model", cfg.model, lora=cfg.lora, dtype=dtype, what="saved policy")
        head = nn.Linear(model.get_input_embeddings().embedding_dim, 1)
        head.load_state_dict(torch.load(d / "value_head.pt", map_location="cpu"))
        return cls(cfg, model=model, tokenizer=tok, value_head=head)

    def generation_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain causal-LM weights (LoRA merged into a copy) that load into an ``hf`` generator."""
        if hasattr(self.model, "merge_and_unload"):
            return copy.deepcopy(self.model).merge_and_unload().state_dict()
        return self.model.state_dict()

    def push_to(self, generator: Any) -> None:
        """Copy the current (merged) LM weights into ``generator`` (an HFGenerator) in place."""
        if not hasattr(generator, "load_state_dict"):
            raise TypeError(f"{type(generator).__name__} cannot receive weights; use an hf generator")
        with torch.no_grad():
            generator.load_state_dict(self.generation_state_dict())

    def to_generator(self, **hf_options: Any) -> Any:
        """A new HFGenerator holding a copy of the current (merged) weights."""
        from .hf import HFConfig, HFGenerator

        model = copy.deepcopy(self.model)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        src, gguf_file = transformers_source(self.config.model)  # where the weights came from (a spec)
        opts = {"chat_template": self.config.chat_template, "device": str(self.device_), "gguf_file": gguf_file,
                **hf_options}
        return HFGenerator(HFConfig(model=src, **opts), model=model, tokenizer=copy.deepcopy(self.tokenizer))
