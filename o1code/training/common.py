"""The plumbing every stage that learns from files shares: TRL trainers over a transformers causal LM,
LoRA via peft, checkpoints that resume, and a merged model saved for inference.

Generic on purpose (TCG SFT/DPO today, policy SFT and the PRM next): a stage's config is any object
with the attributes of `TrainerSettings`; the model comes from the one HF loader
(`o1code.models.hub.load_causal_lm`), so every model spec works as a base, the GGUF ``default``
included (dequantized to float32).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol, Sequence

from o1code.models.errors import ModelFileError
from o1code.training.errors import TrainingError


class TrainerSettings(Protocol):
    """The attributes `trainer_args` and `peft_config` read from a stage's config."""

    learning_rate: float
    batch_size: int
    grad_accum: int
    max_length: int
    warmup_ratio: float
    weight_decay: float
    lr_scheduler: str
    logging_steps: int
    save_steps: int
    save_total_limit: int
    seed: int
    lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: Sequence[str] | str | None


def load_for_training(spec_or_dir: str, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` to train: `spec_or_dir` (a model spec or a directory, e.g. a merged
    stage) via `load_causal_lm` (pad-token rule applied, GGUF dequantized), in `dtype` (a torch dtype
    name; None: float32). Raises `TrainingError` when the weights cannot be loaded."""
    import torch

    from o1code.models.hub import load_causal_lm, resolve_dtype

    try:
        return load_causal_lm(spec_or_dir, dtype=resolve_dtype(dtype or torch.float32), what="model")
    except ModelFileError as exc:  # e.g. a missing directory or GGUF file, or unloadable weights
        msg = str(exc) if str(exc).startswith("cannot load") else f"cannot load model {spec_or_dir!r}: {exc}"
        raise TrainingError(msg) from exc


def peft_config(cfg: TrainerSettings) -> Any:
    """The LoRA config of a stage (`o1code.models.hub.lora_config`: None targets = all linear layers
    but the output head), or None for full fine-tuning (``cfg.lora`` False)."""
    if not cfg.lora:
        return None
    from o1code.models.hub import lora_config

    return lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)


def trainer_args(cfg: TrainerSettings, stage_dir: Path, epochs: float, max_steps: int) -> dict[str, Any]:
    """Keyword arguments shared by TRL's ``SFTConfig`` / ``DPOConfig`` (and the configs to come):
    CPU-friendly (no mixed precision, no workers), TensorBoard logs under ``STAGE/runs/<time>``,
    checkpoints every ``save_steps``; `max_steps` > 0 overrides `epochs`."""
    return dict(
        output_dir=str(stage_dir), learning_rate=cfg.learning_rate, num_train_epochs=epochs,
        max_steps=max_steps if max_steps > 0 else -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        report_to=["tensorboard"], max_length=cfg.max_length,  # TensorBoard: STAGE/runs/<time>
        gradient_checkpointing=False, bf16=False, fp16=False, dataloader_num_workers=0,
        remove_unused_columns=True, disable_tqdm=False,
    )


def conversational(tok: Any, records: list[dict[str, str]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Wrap records as chat turns when the tokenizer has a chat template, so training sees exactly the
    text `HFGenerator` feeds the model at inference (the prompt as a user turn, each of `keys` as the
    assistant's turn); records are returned as they are otherwise."""
    if not getattr(tok, "chat_template", None):
        return records
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             **{k: [{"role": "assistant", "content": r[k]}] for k in keys}} for r in records]


def last_checkpoint(stage_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` directory of a stage (to resume from), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None


def loss_span(history: list[dict]) -> tuple[float, float] | None:
    """The first and last logged training loss of a trainer's ``state.log_history`` (None: none)."""
    losses = [h["loss"] for h in history if "loss" in h]
    return (losses[0], losses[-1]) if losses else None


def _new_dir(dest: Path) -> Path:
    """A temporary directory beside `dest` to write into; `_publish` renames it over `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))


def _publish(tmp: Path, dest: Path) -> Path:
    """Replace `dest` by the finished `tmp` (a reader sees the old directory or the new one, never a torn
    one; o1code.runs.write_atomic covers single files only)."""
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def save_merged(model: Any, tok: Any, dest: Path) -> None:
    """Merge LoRA adapters (when any) and save model + tokenizer to `dest` atomically."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = _new_dir(dest)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _publish(tmp, dest)


def save_adapter(model: Any, base: str, dest: Path) -> Path:
    """Save the LoRA adapter of the peft `model` alone to `dest` (atomically, as `save_merged`): peft's
    files (transformers) and, when `base` (the model spec training started from) is a GGUF, the same
    adapter as a llama.cpp LoRA GGUF (``adapter.gguf``, `o1code.models.lora_gguf`). The generator spec
    ``BASE+lora:DEST`` then loads it on either backend (`o1code.models.loader.attach_lora`). Both are
    stored in float16: the default model's r=8 adapter is 8.4 MiB a file instead of 16.8, small enough
    to commit a trained result (its A and B entries are ~1e-3..1e-1, where float16 keeps 3 digits)."""
    from o1code.models.gguf_export import base_gguf
    from o1code.models.loader import LORA_GGUF_FILE
    from o1code.models.lora_gguf import write_lora_gguf

    gguf = base_gguf(base)
    tmp = _new_dir(dest)
    state = {k: v.half() if "lora_" in k else v for k, v in model.state_dict().items()}
    model.save_pretrained(tmp, state_dict=state)
    if gguf is not None:
        write_lora_gguf(model, gguf, tmp / LORA_GGUF_FILE, half=True)
    return _publish(tmp, dest)


__all__ = ["TrainerSettings", "conversational", "last_checkpoint", "load_for_training", "loss_span", "peft_config",
           "save_adapter", "save_merged", "trainer_args"]
