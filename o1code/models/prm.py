"""The process reward model: a causal LM that rates each reasoning step with P(+) at a marker.

Generative, as the authors' code (``src/prm_training``, OpenR / Math-Shepherd style): the question is
the user turn (chat template applied when the tokenizer has one), the steps follow in the policy's
step format (`o1code.data.formats.format_steps`), and after each step comes a marker (``" Rating"``).
The model's next-token logits at the marker's last token, restricted to the two label tokens
(``" +"`` and ``" -"``), give the step's **log-odds** ``z = logit(+) - logit(-)``; its score is
``P(+) = sigmoid(z)``. All steps of a trajectory are rated in one forward pass.

Training (`o1code.training.prm`) fits ``z``: point-wise with binary cross-entropy on soft (Q/N) or
hard labels (the paper's Eq. 3, which equals the authors' 2-way softmax cross-entropy), pair-wise
with Bradley-Terry on the unnormalised ``z`` of two sibling steps (Eq. 4). The backbone is any causal
LM of the one HF loader (`o1code.models.hub`: the embedded GGUF dequantised, a hub id, a directory),
with LoRA adapters by default.

```python
prm = ProcessRewardModel(PRMConfig(model="default"))
prm.score("Write a function ...", ["Step text 1", "Step text 2"])   # -> [P(+) of step 1, of step 2]
```
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from o1code.data.formats import format_steps

from .base import apply_chat_template
from .errors import InvalidParamsError, ModelFileError
from .hub import ensure_pad_token, import_peft, load_model, load_tokenizer, load_trained, lora_config, resolve_dtype

log = logging.getLogger(__name__)

#: (question, steps): what the PRM rates; one score per step.
Trajectory = tuple[str, Sequence[str]]


@dataclass
class PRMConfig:
    """``model``: the backbone, any spec of `o1code.models.hub.load_causal_lm` (``default``: the
    embedded GGUF, dequantised). ``marker``: text appended after each step, at whose last token the
    label is predicted; ``positive``/``negative``: the label texts, whose first tokens must differ.
    ``lora``: train LoRA adapters (r, alpha, dropout as the authors': 8, 32, 0.1; targets None = every
    linear layer but the head). ``max_length``: longer inputs keep their last tokens (the question's
    start is cut first; steps whose marker falls off are scored from what remains). ``device``/``dtype``:
    None = cuda when available / float32 on CPU, bfloat16 on CUDA."""

    model: str = "default"
    marker: str = " Rating"
    positive: str = " +"
    negative: str = " -"
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    chat_template: bool = True
    max_length: int = 2048
    device: str | None = None
    dtype: str | None = None


class ProcessRewardModel(torch.nn.Module):
    """A causal LM (possibly a peft LoRA wrapper) and its tokenizer, rating steps (module docstring).

    Trainable parameters (the adapters, or the whole LM without LoRA) have ``requires_grad`` set;
    `step_logodds` keeps the autograd graph, `score` does not."""

    def __init__(self, config: PRMConfig, model: Any = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.device_ = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(config.dtype, str(self.device_))
        self.tokenizer = ensure_pad_token(tokenizer or load_tokenizer(config.model, what="PRM backbone"))
        if model is None:
            model = load_model(config.model, dtype=dtype, what="PRM backbone")
            if config.lora:
                model = import_peft().get_peft_model(model, lora_config(
                    config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules))
        self.model = model.to(self.device_)
        self.marker_ids = self._ids(config.marker)
        pos, neg = self._ids(config.positive), self._ids(config.negative)
        if not self.marker_ids or not pos or not neg or pos[0] == neg[0]:
            raise InvalidParamsError(f"PRM marker {config.marker!r} must tokenize to >= 1 token and the labels "
                                     f"{config.positive!r} / {config.negative!r} to different first tokens "
                                     f"(got {self.marker_ids}, {pos}, {neg})")
        self.label_ids = (pos[0], neg[0])

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---------------------------------------------------------------- inputs
    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """``(input_ids, marker_positions)``: the question as the user turn, then each step in the
        policy's format followed by the marker; position ``j`` is the index of step j's marker's last
        token (``-1`` for a step cut off by ``max_length``). Segments are tokenized one by one, so a
        step's tokens do not depend on what follows it."""
        ids = self._ids(apply_chat_template(self.tokenizer, question, self.config.chat_template))
        positions = []
        for j, step in enumerate(steps):
            ids += self._ids(format_steps([step], start=j + 1)) + self.marker_ids
            positions.append(len(ids) - 1)
        cut = max(0, len(ids) - self.config.max_length)
        return ids[cut:], [p - cut if p >= cut else -1 for p in positions]

    # ---------------------------------------------------------------- scores
    def step_logodds(self, batch: Sequence[Trajectory]) -> list[torch.Tensor]:
        """Per trajectory, a tensor of each step's log-odds ``logit(+) - logit(-)`` (with autograd;
        0 for a step cut off by ``max_length``). One padded forward pass for the batch."""
        encoded = [self.encode(q, steps) for q, steps in batch]
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, _) in enumerate(encoded):  # right padding: positions stay where encode put them
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        # The LM head only at the markers: over a 150k vocabulary it is ~1/4 of a forward pass.
        wanted = sorted({max(p, 0) for _, positions in encoded for p in positions})
        column = {p: k for k, p in enumerate(wanted)}
        inputs = {"input_ids": input_ids.to(self.device_), "attention_mask": mask.to(self.device_)}
        try:
            logits = self.model(**inputs, logits_to_keep=torch.tensor(wanted, device=self.device_)).logits
        except TypeError:  # a model without logits_to_keep: every position
            logits, column = self.model(**inputs).logits, {p: p for p in wanted}
        pos, neg = self.label_ids
        out = []
        for i, (_, positions) in enumerate(encoded):
            at = torch.tensor([column[max(p, 0)] for p in positions], device=self.device_, dtype=torch.long)
            z = logits[i, at, pos].float() - logits[i, at, neg].float()
            keep = torch.tensor([p >= 0 for p in positions], device=self.device_)
            out.append(torch.where(keep, z, torch.zeros_like(z)))
        return out

    @torch.no_grad()
    def score_batch(self, batch: Sequence[Trajectory], batch_size: int = 8) -> list[list[float]]:
        """P(+) of every step of every trajectory (``batch_size`` trajectories per forward pass)."""
        was_training = self.training
        self.eval()
        try:
            out: list[list[float]] = []
            for i in range(0, len(batch), batch_size):
                out += [torch.sigmoid(z).tolist() for z in self.step_logodds(batch[i:i + batch_size])]
            return out
        finally:
            self.train(was_training)

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """P(+) of each step of one trajectory, in order (empty for no steps)."""
        return self.score_batch([(question, steps)])[0] if steps else []

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``prm.json`` (the config) and the weights (LoRA adapters only, or the full LM) and
        tokenizer to ``directory``; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out / "weights")
        self.tokenizer.save_pretrained(out / "weights")
        (out / "prm.json").write_text(json.dumps(asdict(self.config), indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "ProcessRewardModel":
        """A PRM saved by `save` (``overrides`` replace config fields, e.g. ``device="cpu"``)."""
        d = Path(directory)
        if not (d / "prm.json").is_file():
            raise ModelFileError(f"no PRM in {d} (prm.json missing)")
        known = {f.name for f in fields(PRMConfig)}
        config = PRMConfig(**{k: v for k, v in {**json.loads((d / "prm.json").read_text()), **overrides}.items()
                              if k in known})
        dtype = resolve_dtype(config.dtype, config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, tokenizer = load_trained(d / "weights", config.model, lora=config.lora, dtype=dtype, what="PRM")
        return cls(config, model=model, tokenizer=tokenizer)


__all__ = ["PRMConfig", "ProcessRewardModel", "Trajectory"]
