"""Training the process reward model (`o1code.models.prm`) on step-labelled rows from MCTS trees.

Two kinds of rows (built by `o1code.training.prm_data` from trajectory files):

- **point** ``{"question", "steps", "labels"}``: a root-to-leaf path and one label per step in [0, 1]
  (soft: the node's Q/N; hard: 1 when a terminal below the node passes every test), ``None`` for a
  step labelled on another row (each tree node is labelled once). Loss: binary cross-entropy of
  ``sigmoid(z)`` against the label, averaged over the labelled steps (the paper's Eq. 3);
- **pair** ``{"question", "prefix", "win", "lose"}``: two sibling steps whose values differ by at
  least a margin. Loss: Bradley-Terry ``-log sigmoid(z_win - z_lose)`` on the unnormalised log-odds
  (Eq. 4).

``objective`` picks point, pair or both (the mean of the two losses). The loop is transformers'
`Trainer` (checkpoints every ``save_steps`` under ``RUN/train``, resume from the newest, TensorBoard
scalars in ``RUN/train/runs``, a progress bar) with the PRM's loss; the held-out slice (whole train
problems, seeded) is scored after every epoch: AUC, accuracy and log-loss of the step scores against
hard labels, pair accuracy. The checkpoint is chosen on that slice (``select``: the epoch with the best
sibling-pair accuracy by default, the ranking best-of-N selection needs), never on validation or test
rows, which are refused here; the chosen PRM (adapters) goes to ``RUN/final``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from o1code.runs import pin_config, write_atomic
from o1code.training.common import last_checkpoint, loss_span, trainer_args
from o1code.training.errors import TrainingError

log = logging.getLogger(__name__)

OBJECTIVES = ("point", "pair", "both")
SELECT = ("pair_accuracy", "auc", "last")


@dataclass
class PRMTrainConfig:
    """Every setting of ``o1code prm train``. The LoRA defaults are the authors' (r 8, alpha 32,
    dropout 0.1), and so are lr 1e-4, cosine schedule, weight decay 0.01, 3 epochs."""

    model: str = field(default="default", metadata={"help": "backbone: any model spec (default: the embedded GGUF)"})
    data: str = field(default="", metadata={"help": "rows files (JSONL, comma-separated) from "
                                              "`o1code prm collect` or `prm shepherd`", "metavar": "FILE[,FILE]"})
    run_dir: str = field(default="runs/prm", metadata={"help": "checkpoints, TensorBoard logs and the final PRM"})
    objective: str = field(default="point", metadata={"help": "point (BCE), pair (Bradley-Terry) or both"})
    epochs: float = 3.0
    max_steps: int = field(default=0, metadata={"help": "optimizer steps (> 0 overrides epochs)"})
    learning_rate: float = 1e-4
    batch_size: int = 1
    grad_accum: int = 4
    max_length: int = 1024
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    lr_scheduler: str = "cosine"
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    heldout_fraction: float = field(default=0.2, metadata={"help": "share of the train problems held out, for "
                                                           "the metrics and the choice of checkpoint"})
    select: str = field(default="pair_accuracy", metadata={
        "help": "the held-out figure that chooses the epoch whose PRM is kept: pair_accuracy (sibling steps "
                "ordered right; auc where the held-out rows have no pairs), auc, or last (the last epoch)"})
    problems_fraction: float = field(default=1.0, metadata={
        "help": "train on a seeded share of the training problems (a data-size curve: 0.25, 0.5, 1); the "
                "held-out problems are the same at every share"})
    seed: int = 0
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] | None = None
    device: str | None = None
    dtype: str | None = field(default=None, metadata={
        "help": "backbone precision: float32 or bfloat16 (None: bfloat16 on CUDA, float32 on CPU); the LoRA "
                "adapters stay float32. On CPUs with AVX512-BF16 (bench/bench_precision.py) bfloat16 trains "
                "~2x faster"})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise TrainingError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0 <= self.heldout_fraction < 1:
            raise TrainingError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction!r}")
        if self.select not in SELECT:
            raise TrainingError(f"select must be one of {', '.join(SELECT)}, got {self.select!r}")
        if not 0 < self.problems_fraction <= 1:
            raise TrainingError(f"problems_fraction must be in (0, 1], got {self.problems_fraction!r}")


# ---------------------------------------------------------------- losses and metrics
def row_losses(prm: Any, rows: Sequence[dict]) -> Any:
    """The mean loss of `rows` (point and pair rows mixed) under `prm`, with autograd."""
    import torch
    import torch.nn.functional as F

    losses = []
    points = [r for r in rows if r["kind"] == "point"]
    if points:
        for r, z in zip(points, prm.step_logodds([(r["question"], r["steps"]) for r in points])):
            keep = [j for j, v in enumerate(r["labels"]) if v is not None]
            if keep:
                target = torch.tensor([float(r["labels"][j]) for j in keep], device=z.device)
                losses.append(F.binary_cross_entropy_with_logits(z[keep], target))
    pairs = [r for r in rows if r["kind"] == "pair"]
    if pairs:
        seqs = [(r["question"], [*r["prefix"], r[side]]) for r in pairs for side in ("win", "lose")]
        z = [t[-1] for t in prm.step_logodds(seqs)]
        for i in range(len(pairs)):
            losses.append(-F.logsigmoid(z[2 * i] - z[2 * i + 1]))
    if not losses:
        return torch.zeros((), requires_grad=True)
    return torch.stack(losses).mean()


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (the probability that a random positive outscores a random negative,
    ties counting one half); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(y for _, y in ranked[i:j]) * (i + j + 1) / 2
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def evaluate_rows(prm: Any, rows: Sequence[dict], batch_size: int = 4) -> dict[str, Any]:
    """Held-out metrics of `prm` on `rows`: for the labelled steps of point rows, ``auc``,
    ``accuracy`` (score >= 0.5 against label >= 0.5) and ``logloss`` against the hard reading of
    the label (>= 0.5), with ``steps`` counted; for pair rows, ``pair_accuracy`` (P(win) > P(lose))
    and ``pairs``. Keys of an absent kind are omitted."""
    out: dict[str, Any] = {}
    points = [r for r in rows if r["kind"] == "point"]
    if points:
        scores, labels = [], []
        for r, s in zip(points, prm.score_batch([(r["question"], r["steps"]) for r in points], batch_size)):
            for j, v in enumerate(r["labels"]):
                if v is not None:
                    scores.append(s[j])
                    labels.append(int(v >= 0.5))
        eps = 1e-6
        out.update(steps=len(scores), auc=auc(scores, labels),
                   accuracy=sum((s >= 0.5) == bool(y) for s, y in zip(scores, labels)) / max(1, len(scores)),
                   logloss=-sum(math.log(max(eps, s if y else 1 - s)) for s, y in zip(scores, labels))
                   / max(1, len(scores)))
    pairs = [r for r in rows if r["kind"] == "pair"]
    if pairs:
        seqs = [(r["question"], [*r["prefix"], r[side]]) for r in pairs for side in ("win", "lose")]
        last = [s[-1] for s in prm.score_batch(seqs, batch_size)]
        out.update(pairs=len(pairs),
                   pair_accuracy=sum(last[2 * i] > last[2 * i + 1] for i in range(len(pairs))) / len(pairs))
    return out


def split_heldout(rows: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)``: whole problems (``task_id``) held out, a seeded `fraction` of them."""
    tasks = sorted({r["task_id"] for r in rows})
    random.Random(seed).shuffle(tasks)
    held = set(tasks[:round(len(tasks) * fraction)])
    return [r for r in rows if r["task_id"] not in held], [r for r in rows if r["task_id"] in held]


def subsample_problems(rows: Sequence[dict], fraction: float, seed: int) -> list[dict]:
    """The rows of a seeded `fraction` of the problems (at least one). Nested: a smaller share's
    problems are among a larger one's (one shuffle, cut at each share), so a data-size curve adds data."""
    if fraction >= 1:
        return list(rows)
    tasks = sorted({r["task_id"] for r in rows})
    random.Random(f"{seed}/problems").shuffle(tasks)
    keep = set(tasks[:max(1, round(len(tasks) * fraction))])
    return [r for r in rows if r["task_id"] in keep]


def check_train_rows(rows: Sequence[dict]) -> None:
    """Refuse rows from the validation or test split: the checkpoint is chosen on held-out *train*
    problems, and validation/test problems judge the PRM (`o1code prm eval`), so they never train it."""
    bad = sorted({r.get("split") for r in rows} & {"validation", "test"})
    if bad:
        raise TrainingError(f"PRM rows from the {bad[0]} split cannot train the PRM: validation and test "
                            "problems judge it (prm eval --rows); train on rows collected with --split train")


def _select_key(metrics: dict[str, Any], select: str) -> tuple[float, ...]:
    """Larger is better: the `select` figure (pair accuracy falls back to AUC where there are no pairs),
    then AUC, then the negative log-loss, so ties go to the better-calibrated epoch."""
    def num(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) else -math.inf

    first = metrics.get(select) if metrics.get(select) is not None else metrics.get("auc")
    return (num(first), num(metrics.get("auc")), -num(metrics.get("logloss")) if "logloss" in metrics else 0.0)


# ---------------------------------------------------------------- the loop
@dataclass
class PRMTrainResult:
    """``final_dir``: the trained PRM (`ProcessRewardModel.load`); ``metrics``: held-out metrics
    before training and of the PRM kept (`evaluate_rows`); ``loss``: first and last logged training
    loss; ``epochs``: the held-out metrics after each epoch (with ``epoch`` and ``step``); ``chosen``:
    the entry of `epochs` whose PRM is ``final_dir`` (None without a held-out slice)."""

    final_dir: Path
    metrics: dict[str, dict[str, Any]]
    loss: tuple[float, float] | None
    train_rows: int
    heldout_rows: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] | None = None


def train_prm(config: PRMTrainConfig, rows: Sequence[dict] | None = None, prm: Any = None) -> PRMTrainResult:
    """Train a PRM on `rows` (default: read ``config.data``) and save it to ``RUN/final``. Resumes from
    the newest checkpoint of ``RUN/train`` when the pinned config matches. `prm`: a model to start
    from (default: a fresh `ProcessRewardModel` on ``config.model`` with LoRA as configured)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from o1code.models.prm import PRMConfig, ProcessRewardModel
    from o1code.runs import read_jsonl

    if rows is None:
        files = [f for f in config.data.split(",") if f]
        missing = [f for f in files if not Path(f).is_file()] or ([] if files else [config.data])
        if missing:
            raise TrainingError(f"no PRM rows file: {missing[0]!r} (write one with `o1code prm collect` "
                                "or `o1code prm shepherd`)")
        rows = [r for f in files for r in read_jsonl(f)]
    rows = [r for r in rows if r["kind"] in (("point", "pair") if config.objective == "both" else (config.objective,))]
    if not rows:
        raise TrainingError(f"no {config.objective} rows to train on")
    check_train_rows(rows)
    run = Path(config.run_dir)
    pin_config(run, asdict(config), ignore=("run_dir", "logging_steps"))
    train, heldout = split_heldout(rows, config.heldout_fraction, config.seed)
    train = subsample_problems(train, config.problems_fraction, config.seed)
    if not train:
        raise TrainingError("every problem was held out: lower heldout_fraction or collect more problems")
    log.info("PRM rows: %d train (%d problems), %d held out (%d problems)", len(train),
             len({r["task_id"] for r in train}), len(heldout), len({r["task_id"] for r in heldout}))
    torch.manual_seed(config.seed)
    if prm is None:
        prm = ProcessRewardModel(PRMConfig(
            model=config.model, lora=config.lora, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout, lora_target_modules=config.lora_targets,
            max_length=config.max_length, device=config.device, dtype=config.dtype))
    metrics = {"before": evaluate_rows(prm, heldout)} if heldout else {}
    # The held-out figures of every epoch so far, and the kept PRM in RUN/best with its own entry
    # (written together, so a resumed run keeps choosing among all the epochs it trained).
    history_path, best = run / "heldout_epochs.json", run / "best"
    epochs: list[dict[str, Any]] = json.loads(history_path.read_text()) if history_path.is_file() else []

    def choose(state: Any) -> None:
        if not heldout or (epochs and epochs[-1]["step"] == state.global_step):
            return
        m = {"epoch": round(state.epoch or 0, 4), "step": state.global_step, **evaluate_rows(prm, heldout)}
        trainer.log({f"heldout/{k}": v for k, v in m.items() if isinstance(v, (int, float)) and k != "step"})
        kept = json.loads((best / "chosen.json").read_text()) if (best / "chosen.json").is_file() else None
        if config.select == "last" or kept is None or _select_key(m, config.select) > _select_key(kept, config.select):
            tmp = run / "best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            prm.save(tmp)
            (tmp / "chosen.json").write_text(json.dumps(m, indent=2))
            shutil.rmtree(best, ignore_errors=True)
            tmp.rename(best)
        epochs.append(m)
        write_atomic(history_path, json.dumps(epochs, indent=2))

    class PRMTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, **kw: Any) -> Any:
            loss = row_losses(prm, inputs["rows"])
            return (loss, None) if return_outputs else loss

    class HeldOut(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            choose(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            choose(state)  # a run cut by max_steps mid-epoch: its last weights are a candidate too

    stage = run / "train"
    args = {k: v for k, v in trainer_args(config, stage, config.epochs, config.max_steps).items() if k != "max_length"}
    args.update(remove_unused_columns=False, use_cpu=prm.device_.type == "cpu")
    trainer = PRMTrainer(model=prm.model, args=TrainingArguments(**args), train_dataset=list(train),
                         data_collator=lambda batch: {"rows": batch}, callbacks=[HeldOut()])
    trainer.train(resume_from_checkpoint=last_checkpoint(stage))
    chosen = None
    if heldout and (best / "chosen.json").is_file():
        chosen = json.loads((best / "chosen.json").read_text())
        final = run / "final"
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(best, final)
        metrics["after"] = {k: v for k, v in chosen.items() if k not in ("epoch", "step")}
        log.info("PRM kept: epoch %s of %d (held-out %s %s)", chosen["epoch"], len(epochs), config.select,
                 chosen.get(config.select))
    else:
        final = prm.save(run / "final")
    result = PRMTrainResult(final_dir=final, metrics=metrics, loss=loss_span(trainer.state.log_history),
                            train_rows=len(train), heldout_rows=len(heldout), epochs=epochs, chosen=chosen)
    write_atomic(run / "metrics.json", json.dumps({**asdict(result), "final_dir": str(final)}, indent=2))
    return result


__all__ = ["OBJECTIVES", "PRMTrainConfig", "PRMTrainResult", "SELECT", "auc", "check_train_rows", "evaluate_rows",
           "row_losses", "split_heldout", "subsample_problems", "train_prm"]
