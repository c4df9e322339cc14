"""Training the Test Case Generator (o1-Coder section 2): SFT, then DPO with the paper's negatives.

SFT on (problem, reference) -> test cases built from MBPP train tasks (and any user JSONL), the
prompt masked (TRL prompt-completion format); then DPO against the SFT model with the paper's
negatives (the same inputs with the outputs shuffled so that at least one pair no longer matches;
records: `o1code.training.tcg_data`). LoRA by default; TRL's `SFTTrainer` / `DPOTrainer` and peft do
the work (`o1code.training.common`). Layout of the output directory::

    OUT/sft/            trainer checkpoints + TensorBoard logs of the SFT stage
    OUT/sft/merged/     the SFT model with its adapter merged (the DPO stage's base and reference)
    OUT/dpo/            trainer checkpoints + TensorBoard logs of the DPO stage
    OUT/final/          the trained TCG, loadable with ``load_generator("hf:OUT/final")``
    OUT/config.json     the `TCGTrainConfig` of the run

Re-running with the same OUT skips a finished stage and resumes an unfinished one from its last
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from o1code.data import Problem, load_mbpp, load_problems
from o1code.runs import write_atomic
from o1code.training.common import (
    conversational,
    last_checkpoint,
    load_for_training,
    loss_span,
    peft_config,
    save_merged,
    trainer_args,
)
from o1code.training.errors import TrainingError
from o1code.training.tcg_data import build_tcg_examples

log = logging.getLogger(__name__)


@dataclass
class TCGTrainConfig:
    """Every knob of `train_tcg`.

    Attributes:
        model: ``"default"`` (the offline GGUF, dequantized by transformers), ``"hf:DIR"`` or a local
            directory / hub id.
        out_dir: Output directory (see the module docstring); re-using it resumes.
        split: MBPP split whose tasks make the training data ("" for none).
        extra_jsonl: Extra problems (the `load_problems` schema) added to the data.
        limit: Use at most this many problems (0: all).
        lora: Train LoRA adapters (merged into the saved models); False trains all weights.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA settings (the paper: r = 1 QLoRA on
            all projections; r = 8 is the default here because CPU runs are short). ``lora_targets``
            None: every linear layer but the output head (`o1code.models.hub.LORA_ALL_LINEAR`: on
            the Qwen2 default model, q/k/v/o and gate/up/down projections).
        learning_rate: 5e-4 as in the paper, for both stages.
        beta: DPO's beta (the paper leaves it open; 0.1).
        sft_epochs, dpo_epochs: Epochs per stage (ignored when the matching max_steps > 0).
        sft_max_steps, dpo_max_steps: Optimizer steps per stage (0: use the epochs; -1 skips the stage).
        batch_size: Examples per forward pass (micro-batch).
        grad_accum: Micro-batches per optimizer step.
        max_length: Longest tokenized example (prompt + completion); longer ones are truncated.
        warmup_ratio: Warmup as a share of the optimizer steps.
        weight_decay: AdamW's weight decay.
        lr_scheduler: Learning-rate schedule (a transformers scheduler name: cosine, linear, constant ...).
        logging_steps: TensorBoard scalars every this many optimizer steps.
        save_steps: A checkpoint every this many optimizer steps.
        save_total_limit: Checkpoints kept (older ones are deleted).
        seed: Seeds data shuffling and training.
        show_example: Show the first dataset test in the prompt (must match the TCG used later).
        include_example: Keep the shown test in the SFT/DPO target too (see `build_tcg_examples`).
    """

    model: str = "default"
    out_dir: str = "runs/tcg"
    split: str = "train"
    extra_jsonl: list[str] = field(default_factory=list)
    limit: int = 0
    lora: bool = True
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (the paper: r = 1 QLoRA on all projections)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: tuple[str, ...] | None = None
    learning_rate: float = field(default=5e-4, metadata={"flags": ("--lr", "--learning-rate")})
    beta: float = 0.1
    sft_epochs: float = field(default=1.0, metadata={"help": "SFT epochs (ignored when the SFT steps are > 0)"})
    dpo_epochs: float = field(default=1.0, metadata={"help": "DPO epochs (ignored when the DPO steps are > 0)"})
    sft_max_steps: int = field(default=0, metadata={"flags": ("--sft-steps", "--sft-max-steps"),
                                                    "help": "SFT optimizer steps (0: use the epochs; -1 skips SFT)"})
    dpo_max_steps: int = field(default=0, metadata={"flags": ("--dpo-steps", "--dpo-max-steps"),
                                                    "help": "DPO optimizer steps (0: use the epochs; -1 skips DPO)"})
    batch_size: int = field(default=1, metadata={"help": "micro-batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    max_length: int = 1024
    warmup_ratio: float = field(default=0.0, metadata={"help": "learning-rate warmup, as a share of the steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "weight decay"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "learning-rate schedule (transformers' names)"})
    logging_steps: int = field(default=1, metadata={"help": "log TensorBoard scalars every N steps"})
    save_steps: int = field(default=20, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int = field(default=2, metadata={"help": "keep at most N checkpoints per stage"})
    seed: int = 0
    show_example: bool = True
    include_example: bool = True

    def validate(self) -> "TCGTrainConfig":
        """Return self after checking ranges; raises `TrainingError`."""
        if self.learning_rate <= 0 or self.beta <= 0:
            raise TrainingError("learning_rate and beta must be > 0")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_r < 1 or self.max_length < 16:
            raise TrainingError("batch_size, grad_accum, lora_r must be >= 1 and max_length >= 16")
        if self.sft_max_steps < -1 or self.dpo_max_steps < -1:
            raise TrainingError("max_steps must be -1 (skip), 0 (use epochs) or positive")
        return self


@dataclass(frozen=True)
class TCGTrainResult:
    """What `train_tcg` did: the final model dir (``load_generator("hf:" + str(final_dir))``), the
    record counts, and each stage's first/last logged training loss (None when the stage was skipped
    or already finished)."""

    final_dir: Path
    n_sft: int
    n_dpo: int
    sft_losses: tuple[float, float] | None
    dpo_losses: tuple[float, float] | None
    seconds: float


def train_tcg(config: TCGTrainConfig, problems: Sequence[Problem] | None = None) -> TCGTrainResult:
    """Run SFT then DPO (see the module docstring); return a `TCGTrainResult`.

    `problems` overrides the data (else: `config.split` of MBPP plus `config.extra_jsonl`). Raises
    `TrainingError` when there is no usable training record or the model cannot be loaded.
    """
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    cfg = config.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    if problems is None:
        problems = list(load_mbpp(cfg.split)) if cfg.split else []
        for path in cfg.extra_jsonl:
            problems.extend(load_problems(path))
        problems = [p for p in problems if not p.known_bad]
    if cfg.limit:
        problems = list(problems)[: cfg.limit]
    sft_records, dpo_records = build_tcg_examples(problems, cfg.seed, cfg.show_example, cfg.include_example)
    if not sft_records:
        raise TrainingError("no training record: the problems need a reference and `assert f(...) == literal` tests")
    log.info("tcg train: %d SFT and %d DPO records from %d problems", len(sft_records), len(dpo_records), len(problems))
    torch.manual_seed(cfg.seed)

    sft_dir, merged_dir, dpo_dir, final_dir = out / "sft", out / "sft" / "merged", out / "dpo", out / "final"
    sft_losses = dpo_losses = None

    # ---- SFT: skipped when its merged model exists (the stage finished).
    if cfg.sft_max_steps == -1:
        base_for_dpo = cfg.model
    elif (merged_dir / "config.json").is_file():
        log.info("tcg train: SFT already finished (%s)", merged_dir)
        base_for_dpo = str(merged_dir)
    else:
        model, tok = load_for_training(cfg.model)
        args = SFTConfig(**trainer_args(cfg, sft_dir, cfg.sft_epochs, cfg.sft_max_steps),
                         completion_only_loss=True, packing=False)
        trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=peft_config(cfg),
                             train_dataset=Dataset.from_list(conversational(tok, sft_records, ["completion"])))
        trainer.train(resume_from_checkpoint=last_checkpoint(sft_dir))
        sft_losses = loss_span(trainer.state.log_history)
        save_merged(trainer.model, tok, merged_dir)
        base_for_dpo = str(merged_dir)
        del trainer, model

    # ---- DPO: the SFT model is both the start and the reference (adapter disabled = reference).
    if cfg.dpo_max_steps == -1 or not dpo_records:
        if not dpo_records:
            log.warning("tcg train: no DPO record (every problem's outputs are equal); DPO skipped")
        model, tok = load_for_training(base_for_dpo)
        save_merged(model, tok, final_dir)
    elif (final_dir / "config.json").is_file() and (dpo_dir / "done").is_file():
        log.info("tcg train: DPO already finished (%s)", final_dir)
    else:
        model, tok = load_for_training(base_for_dpo)
        ref = None
        if not cfg.lora:  # full fine-tuning needs an explicit frozen copy as the reference
            ref, _ = load_for_training(base_for_dpo)
        args = DPOConfig(**trainer_args(cfg, dpo_dir, cfg.dpo_epochs, cfg.dpo_max_steps), beta=cfg.beta)
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok,
                             peft_config=peft_config(cfg),
                             train_dataset=Dataset.from_list(conversational(tok, dpo_records, ["chosen", "rejected"])))
        trainer.train(resume_from_checkpoint=last_checkpoint(dpo_dir))
        dpo_losses = loss_span(trainer.state.log_history)
        save_merged(trainer.model, tok, final_dir)
        write_atomic(dpo_dir / "done", "ok\n")
    result = TCGTrainResult(final_dir, len(sft_records), len(dpo_records), sft_losses, dpo_losses,
                            time.perf_counter() - t0)
    log.info("tcg train: done in %.0f s; final model in %s", result.seconds, final_dir)
    return result


__all__ = ["TCGTrainConfig", "TCGTrainResult", "build_tcg_examples", "train_tcg"]
