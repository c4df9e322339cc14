"""Policy SFT on correct reasoning paths (o1-Coder Algorithm 1, step 3; the paper's Eq. 2).

From MCTS trajectory files of a **train-split** collection (`o1code prm collect`, or ``o1code eval
--agent mcts --split train``), or the ``results.jsonl`` of train-split ``o1code eval --agent sample``
runs (rejection-sampling fine-tuning: each row's episode is one path), keep the distinct paths whose
final code passed (``keep="dataset"``: every test of the problem, ``eval_passed``; on the train split
the data set's tests are training signal, not judging tests of an evaluation; ``keep="reward"``: the
collection's reward tests only, the visible test by default, as a user without hidden tests would),
at most ``max_paths_per_problem`` per problem (the search's answer first, then the higher reward and
mean step value), deduplicated by their step texts.

One example per path, exactly what the policy sees and writes in a `CodeEnv` episode:

- **prompt**: the env's observation prompt with no steps (`o1code.data.formats.build_prompt`: the
  instructions, the worked examples, the question with ``show_tests``, ``### Solution`` and the first
  step's header; with ``prompt_style="instruct"`` the model's chat template rendered around it, the
  steps inside the assistant turn). Raw text, no chat template applied on top: the same convention
  as the step generators of ``o1code eval`` (`o1code.pipeline.evaluate.load_step_generator`) and the
  `Policy` written here;
- **completion**: the path's steps in the step format (`o1code.data.formats.format_steps`), from where
  the prompt ends, through the last step's ``<Step_End>``, then EOS. Because the prompt of step k in
  an episode is the prompt plus the first k-1 steps, the causal-LM loss on this completion is the
  loss of every step given the ones before it (``S^{1:m} ∘ C'``), and the prompt is masked (TRL's
  prompt-completion format, ``completion_only_loss``).

Mode, ``show_tests`` and the dataset must be those of the collection: they are read from the pinned
``config.json`` beside each trajectory file (an ``o1code eval`` run directory) when there is one;
settings given in the config that contradict it are refused, and so are records of any split but train.

Layout of the run directory::

    RUN/config.json      the pinned `PolicySFTConfig`
    RUN/examples.jsonl   the training examples (task_id, prompt, completion)
    RUN/train/           trainer checkpoints (a rerun resumes from the newest) and TensorBoard logs (runs/)
    RUN/adapter/         the LoRA adapter alone (lora=True): peft's files and, on a GGUF base, adapter.gguf
                         for llama.cpp: the generator spec ``MODEL+lora:RUN/adapter`` on either backend
    RUN/final/           the model, LoRA merged: ``hf:RUN/final`` (a generator spec, or ``Policy``'s
                         ``PolicyConfig(model="RUN/final")``), and ``Policy.load("RUN/final")``: the
                         same weights as a `Policy` (a fresh LoRA adapter over them and a zero value
                         head, ready for PPO; its policy.json names RUN/final by absolute path)
    RUN/summary.json     counts and the first/last training loss
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from o1code.data import Problem, load_dataset
from o1code.data.formats import MODES, SHOW_TESTS, STEP_END, build_prompt, build_prompt_prefix, format_steps
from o1code.data.prompts import PROMPT_STYLES
from o1code.data.trajectories import TrajectoryRecord, in_problem_order, read_trajectories
from o1code.models import chat_template_of
from o1code.runs import load_config, pin_config, write_atomic, write_jsonl
from o1code.training.common import (last_checkpoint, load_for_training, loss_span, peft_config, save_adapter,
                                    save_merged, trainer_args)
from o1code.training.errors import TrainingError

log = logging.getLogger(__name__)

#: The only split whose trajectories policy SFT learns from.
TRAIN_SPLIT = "train"
#: Which tests make a path correct (`PolicySFTConfig.keep`).
KEEP = ("dataset", "reward")


@dataclass
class PolicySFTConfig:
    """Every setting of `train_sft` (``o1code sft``).

    Attributes:
        trajectories: Trajectory files (``trajectories.jsonl``) of train-split MCTS collections.
        run_dir: Output directory (see the module docstring); re-using it resumes.
        model: The base policy: any model spec of the HF loader (``default``, ``hf:DIR``, a hub id ...).
        dataset: Benchmark whose train split the trajectories come from, when no collection config says.
        mode: Reasoning format (pseudocode, vanilla, direct); None: the collection's.
        show_tests: Tests shown in the prompt (none, first, all); None: the collection's, else first.
        examples: Include the worked examples in a fewshot prompt (as CodeEnv and o1code eval do; an
            instruct prompt has none, as theirs).
        prompt_style: fewshot or instruct (the model's chat template, `o1code.data.prompts`); None: the
            collection's (fewshot when it does not say).
        max_paths_per_problem: Keep at most this many distinct correct paths per problem.
        keep: Which tests make a path correct: dataset (every test of the train problem) or reward (the
            collection's reward tests, e.g. the visible test: rejection sampling without hidden tests).
        epochs: Passes over the examples (ignored when max_steps > 0).
        max_steps: Optimizer steps (> 0 overrides epochs).
        learning_rate: Optimizer step size.
        batch_size: Examples per forward pass (micro-batch).
        grad_accum: Micro-batches per optimizer step.
        max_length: Longest tokenized example (prompt + completion); longer examples are dropped, not cut.
        warmup_ratio: Warmup as a share of the optimizer steps.
        weight_decay: AdamW's weight decay.
        lr_scheduler: Learning-rate schedule (a transformers scheduler name: cosine, linear, constant ...).
        logging_steps: TensorBoard scalars every this many optimizer steps.
        save_steps: A checkpoint every this many optimizer steps.
        save_total_limit: Checkpoints kept (older ones are deleted).
        seed: Seeds data order and training.
        lora: Train LoRA adapters (merged into the saved model); False trains every weight.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA settings (targets None: all linear layers
            but the output head).
        device: cpu or cuda (None: cuda when available).
        dtype: Backbone precision, float32 or bfloat16 (None: float32); the LoRA adapters stay float32.
            On CPUs with AVX512-BF16 bfloat16 trains ~2x faster (bench/bench_precision.py); the merged
            model is saved in this precision.
    """

    trajectories: list[str] = field(default_factory=list)
    run_dir: str = "runs/sft"
    model: str = "default"
    dataset: str = "mbpp"
    mode: str | None = None
    show_tests: str | None = None
    examples: bool = True
    prompt_style: str | None = None
    max_paths_per_problem: int = 2
    keep: str = "dataset"
    epochs: float = 2.0
    max_steps: int = 0
    learning_rate: float = 1e-4
    batch_size: int = 1
    grad_accum: int = 4
    max_length: int = 2048
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    seed: int = 0
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None
    device: str | None = None
    dtype: str | None = None

    def validate(self) -> "PolicySFTConfig":
        """Return self after checking every range; raises `TrainingError`."""
        if self.mode is not None and self.mode not in MODES:
            raise TrainingError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.show_tests is not None and self.show_tests not in SHOW_TESTS:
            raise TrainingError(f"unknown show_tests {self.show_tests!r}; choose one of {', '.join(SHOW_TESTS)}")
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise TrainingError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")
        if self.keep not in KEEP:
            raise TrainingError(f"unknown keep {self.keep!r}; choose one of {', '.join(KEEP)}")
        if self.max_paths_per_problem < 1:
            raise TrainingError("max_paths_per_problem must be >= 1")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.lora_r < 1:
            raise TrainingError("learning_rate must be > 0; batch_size, grad_accum and lora_r >= 1")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise TrainingError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.max_length < 16 or self.max_steps < 0 or self.epochs <= 0:
            raise TrainingError("max_length must be >= 16, max_steps >= 0 and epochs > 0")
        return self


@dataclass(frozen=True)
class CollectionSettings:
    """What the prompts of a trajectory file were built from: the pinned ``config.json`` of the
    ``o1code eval`` run directory holding it, or all None when there is none."""

    source: str
    mode: str | None = None
    show_tests: str | None = None
    max_steps: int | None = None
    dataset: str | None = None
    sanitized: bool | None = None
    split: str | None = None
    tests: str | None = None
    prompt_style: str | None = None


def collection_settings(trajectories: str | Path) -> CollectionSettings:
    """The `CollectionSettings` of a trajectory file, read from ``config.json`` beside it."""
    stored = load_config(Path(trajectories).parent) or {}
    if "mode" not in stored or "show_tests" not in stored:  # not an evaluation run's config
        return CollectionSettings(source=str(trajectories))
    return CollectionSettings(
        source=str(Path(trajectories).parent / "config.json"), mode=stored.get("mode"),
        show_tests=stored.get("show_tests"), max_steps=stored.get("max_steps"), dataset=stored.get("dataset"),
        sanitized=stored.get("sanitized"), split=stored.get("split"), tests=stored.get("tests"),
        prompt_style=stored.get("prompt_style") or "fewshot")  # unset: a run from before the key, fewshot


def _agreed(name: str, given: Any, found: Iterable[tuple[str, Any]], default: Any) -> Any:
    """The one value of a setting: `given` (the config's) and every collection's (None: unknown) must agree."""
    values = {v: src for src, v in found if v is not None}
    if len(values) > 1:
        raise TrainingError(f"the trajectory files disagree on {name}: "
                            + "; ".join(f"{v!r} in {src}" for v, src in values.items()))
    if values:
        (value, src), = values.items()
        if given is not None and given != value:
            raise TrainingError(f"{name}={given!r} but the trajectories were collected with {name}={value!r} "
                                f"({src}): the SFT prompt must be the one the collection used")
        return value
    return default if given is None else given


def check_train_split(records: Sequence[TrajectoryRecord], problems: Mapping[str, Problem], source: str) -> None:
    """Raise `TrainingError` unless every record is of a train-split problem: its own ``split`` (when
    recorded) is train and its task is one of `problems`, all of which are train problems."""
    other = sorted({f"{r.task_id} ({r.split})" for r in records if r.split not in (None, TRAIN_SPLIT)})
    if other:
        raise TrainingError(f"{source}: records of split other than train ({', '.join(other[:5])}): policy SFT "
                            "learns from train-split collections only")
    bad = sorted({p.task_id for p in problems.values() if p.split != TRAIN_SPLIT})
    if bad:
        raise TrainingError(f"problems outside the train split given to SFT: {', '.join(bad[:5])}")
    unknown = sorted({r.task_id for r in records} - set(problems))
    if unknown:
        raise TrainingError(f"{source}: records of problems not in the train split: {', '.join(unknown[:5])}")


def _rank(indexed: tuple[int, TrajectoryRecord]) -> tuple:
    i, r = indexed
    mean_value = sum(s.value for s in r.steps) / len(r.steps) if r.steps else 0.0
    return (not r.answer, -r.reward, -mean_value, len(r.steps), i)


def correct_paths(records: Sequence[TrajectoryRecord], max_paths_per_problem: int,
                  keep: str = "dataset") -> list[TrajectoryRecord]:
    """The distinct paths (by step texts) whose code passed every test of the problem (``eval_passed``;
    `keep` ``"reward"``: passed the reward tests, ``verdict == "passed"``), at most
    `max_paths_per_problem` per problem, ranked: the search's answer, then higher reward, higher
    mean step value, fewer steps, file order. Returned grouped by problem in first-seen order."""
    by_task: dict[str, list[tuple[int, TrajectoryRecord]]] = {}
    for i, r in enumerate(records):
        if r.code is not None and r.steps and (r.eval_passed if keep == "dataset" else r.verdict == "passed"):
            by_task.setdefault(r.task_id, []).append((i, r))
    kept: list[TrajectoryRecord] = []
    for cands in by_task.values():
        seen: set[tuple[str, ...]] = set()
        for _, r in sorted(cands, key=_rank):
            key = tuple(t.strip() for t in r.texts)
            if key in seen:
                continue
            seen.add(key)
            kept.append(r)
            if len(seen) == max_paths_per_problem:
                break
    return kept


def sft_example(problem: Problem, steps: Sequence[str], mode: str, show_tests: str = "first",
                max_steps: int | None = None, examples: bool = True, prompt_style: str = "fewshot",
                chat_template: str | None = None) -> dict[str, str]:
    """``{"task_id", "prompt", "completion"}`` of one path: the prompt is `CodeEnv`'s first observation
    prompt (`build_prompt` with no steps, so it ends with the first step's header; ``instruct``: inside
    the assistant turn of `chat_template`); the completion is the rest of the episode's text after it:
    the steps (`format_steps`) through the last `STEP_END`. Raises `TrainingError` when the steps do
    not continue that prompt (e.g. the forced last step of a direct-mode path lacks its title, which
    `CodeEnv` always writes)."""
    shots = examples if prompt_style == "fewshot" else None  # instruct: the env's default (none)
    prefix = build_prompt_prefix(problem, mode, show_tests, shots, prompt_style, chat_template)
    prompt = build_prompt(problem, mode, (), 1 if mode == "direct" else max_steps, prefix=prefix)
    full = prefix + format_steps(steps).rstrip("\n")
    if not full.startswith(prompt) or not full.endswith(STEP_END):
        raise TrainingError(f"{problem.task_id}: the path's steps do not continue the env's prompt "
                            f"(mode {mode!r}): not a trajectory of this mode")
    return {"task_id": problem.task_id, "prompt": prompt, "completion": full[len(prompt):]}


def build_sft_examples(records: Sequence[TrajectoryRecord], problems: Sequence[Problem], mode: str,
                       show_tests: str = "first", max_steps: int | None = None, examples: bool = True,
                       max_paths_per_problem: int = 2, source: str = "trajectories", prompt_style: str = "fewshot",
                       chat_template: str | None = None, keep: str = "dataset") -> list[dict[str, str]]:
    """The SFT examples (`sft_example`) of the correct paths (`correct_paths`, by `keep`) of `records`, after
    `check_train_split` and a check that every record has `mode`. Returns [] when no path passed."""
    by_id = {p.task_id: p for p in problems}
    check_train_split(records, by_id, source)
    modes = sorted({r.mode for r in records if r.mode and r.mode != mode})
    if modes:
        raise TrainingError(f"{source}: records of mode {', '.join(modes)}, not {mode!r}: give the collection's "
                            "mode (one mode per SFT run)")
    return [sft_example(by_id[r.task_id], r.texts, mode, show_tests, max_steps, examples, prompt_style, chat_template)
            for r in correct_paths(records, max_paths_per_problem, keep)]


# ---------------------------------------------------------------- training
@dataclass(frozen=True)
class PolicySFTResult:
    """What `train_sft` did: ``final_dir`` (``hf:final_dir`` and ``Policy.load(final_dir)`` both load
    it), the numbers of examples trained on, problems they cover, records read and examples dropped for
    length, the first/last logged training loss (None when training had already finished), and seconds."""

    final_dir: Path
    examples: int
    problems: int
    records: int
    dropped_long: int
    loss: tuple[float, float] | None
    seconds: float


def _resolve(cfg: PolicySFTConfig, problems: Sequence[Problem] | None
             ) -> tuple[list[TrajectoryRecord], list[Problem], dict[str, Any]]:
    if not cfg.trajectories:
        raise TrainingError("no trajectory file given (--trajectories FILE[,FILE])")
    records: list[TrajectoryRecord] = []
    found: list[CollectionSettings] = []
    for path in cfg.trajectories:
        if not Path(path).is_file():
            raise TrainingError(f"no trajectory file {path!r} (write one with `o1code prm collect`)")
        settings = collection_settings(path)
        if settings.split is not None and settings.split != TRAIN_SPLIT:
            raise TrainingError(f"{path} was collected on the {settings.split!r} split ({settings.source}): policy "
                                "SFT learns from train-split collections only")
        found.append(settings)
        records.extend(in_problem_order(read_trajectories(path)))
    if not records:
        raise TrainingError(f"no trajectory records in {', '.join(cfg.trajectories)}")
    record_modes = {r.mode for r in records if r.mode}
    mode = _agreed("mode", cfg.mode, [(s.source, s.mode) for s in found],
                   next(iter(record_modes)) if len(record_modes) == 1 else None)
    if mode is None:
        raise TrainingError(f"the records mix modes {sorted(record_modes)}: give --mode")
    resolved = {
        "mode": mode,
        "show_tests": _agreed("show_tests", cfg.show_tests, [(s.source, s.show_tests) for s in found], "first"),
        "max_steps": _agreed("max_steps", None, [(s.source, s.max_steps) for s in found], None),
        "dataset": _agreed("dataset", None, [(s.source, s.dataset) for s in found], cfg.dataset),
        "sanitized": _agreed("sanitized", None, [(s.source, s.sanitized) for s in found], False),
        "prompt_style": _agreed("prompt_style", cfg.prompt_style, [(s.source, s.prompt_style) for s in found],
                                "fewshot"),
    }
    if problems is None:
        problems = load_dataset(resolved["dataset"], TRAIN_SPLIT, sanitized=resolved["sanitized"])
    return records, list(problems), resolved


def _drop_long(tok: Any, rows: list[dict[str, str]], max_length: int) -> list[dict[str, str]]:
    eos = tok.eos_token or ""
    keep = [r for r in rows if len(tok(r["prompt"] + r["completion"] + eos)["input_ids"]) <= max_length]
    if len(keep) < len(rows):
        log.warning("sft: %d of %d examples are longer than max_length=%d tokens and are dropped (cutting them "
                    "would teach steps without their code)", len(rows) - len(keep), len(rows), max_length)
    return keep


def _save_policy(final: Path, cfg: PolicySFTConfig) -> None:
    """Make ``final`` (a merged model directory) load as a `Policy` too: a fresh LoRA adapter (its
    update starts at zero, so the policy equals the merged model) and a zero value head."""
    from o1code.models.policy import Policy, PolicyConfig

    policy = Policy(PolicyConfig(model=str(final.resolve()), lora=True, lora_r=cfg.lora_r,
                                 lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 lora_target_modules=cfg.lora_targets, chat_template=False))
    policy.save(final)  # policy.json is written last: its presence marks a finished run


def train_sft(config: PolicySFTConfig, problems: Sequence[Problem] | None = None) -> PolicySFTResult:
    """Fine-tune ``config.model`` on the correct paths of ``config.trajectories`` (see the module
    docstring); resume from the newest checkpoint of ``RUN/train``; return a `PolicySFTResult`.

    `problems` replaces the data set's train split as the problems the records refer to (all must be
    train problems). Raises `TrainingError` for records of another split, settings that contradict the
    collection, no correct path, or a model that cannot be loaded."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg = config.validate()
    t0 = time.perf_counter()
    records, problems, settings = _resolve(cfg, problems)
    style = settings.pop("prompt_style")
    build = functools.partial(build_sft_examples, records, problems, settings["mode"], settings["show_tests"],
                              settings["max_steps"], cfg.examples, cfg.max_paths_per_problem,
                              source=", ".join(cfg.trajectories), prompt_style=style, keep=cfg.keep)
    rows = build()  # checked before the model loads; instruct prompts are rebuilt with its chat template
    if not rows:
        raise TrainingError(f"no path in {', '.join(cfg.trajectories)} passed its problem's tests: nothing to "
                            "fine-tune on (collect on more problems or with more rollouts)")
    run = Path(cfg.run_dir)
    if style != "fewshot":  # absent means fewshot, as in runs pinned before the key existed
        settings["prompt_style"] = style
    pin_config(run, {**dataclasses.asdict(cfg), **{f"collection_{k}": v for k, v in settings.items()}},
               ignore=("run_dir", "logging_steps", "save_steps", "save_total_limit", "device"))
    final = run / "final"
    n_problems = len({r["task_id"] for r in rows})
    if (final / "policy.json").is_file():
        log.info("sft: already finished (%s)", final)
        return PolicySFTResult(final, len(rows), n_problems, len(records), 0, None, time.perf_counter() - t0)

    torch.manual_seed(cfg.seed)
    model, tok = load_for_training(cfg.model, cfg.dtype)
    if style == "instruct":
        rows = build(chat_template=chat_template_of(tok))
    kept = _drop_long(tok, rows, cfg.max_length)
    if not kept:
        raise TrainingError(f"every example is longer than max_length={cfg.max_length} tokens: raise max_length")
    write_jsonl(run / "examples.jsonl", kept)
    log.info("sft: %d examples (%d problems) from %d records; mode %s, show_tests %s, prompt %s", len(kept),
             len({r["task_id"] for r in kept}), len(records), settings["mode"], settings["show_tests"], style)
    stage = run / "train"
    args = SFTConfig(**trainer_args(cfg, stage, cfg.epochs, cfg.max_steps), completion_only_loss=True,
                     packing=False, use_cpu=cfg.device == "cpu")
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in kept])
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=peft_config(cfg),
                         train_dataset=dataset)
    trainer.train(resume_from_checkpoint=last_checkpoint(stage))
    loss = loss_span(trainer.state.log_history)
    if cfg.lora:
        save_adapter(trainer.model, cfg.model, run / "adapter")
    save_merged(trainer.model, tok, final)
    del trainer, model
    _save_policy(final, cfg)
    result = PolicySFTResult(final, len(kept), len({r["task_id"] for r in kept}), len(records),
                             len(rows) - len(kept), loss, time.perf_counter() - t0)
    write_atomic(run / "summary.json", json.dumps({**dataclasses.asdict(result), "final_dir": str(final)}, indent=2))
    log.info("sft: done in %.0f s; model in %s (loss %s)", result.seconds, final, loss)
    return result


__all__ = ["KEEP", "CollectionSettings", "PolicySFTConfig", "PolicySFTResult", "TRAIN_SPLIT", "build_sft_examples",
           "check_train_split", "collection_settings", "correct_paths", "sft_example", "train_sft"]
