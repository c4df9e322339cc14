"""Training and evaluating the Test Case Generator (o1-Coder section 2).

Training (`train_tcg`): SFT on (problem, reference) -> test cases built from MBPP train tasks (and any
user JSONL), the prompt masked (TRL prompt-completion format); then DPO against the SFT model with
the paper's negatives (the same inputs with the outputs shuffled so that at least one pair no longer
matches). LoRA by default; TRL's `SFTTrainer` / `DPOTrainer` and peft do the work. Layout of the
output directory::

    OUT/sft/            trainer checkpoints + TensorBoard logs of the SFT stage
    OUT/sft/merged/     the SFT model with its adapter merged (the DPO stage's base and reference)
    OUT/dpo/            trainer checkpoints + TensorBoard logs of the DPO stage
    OUT/final/          the trained TCG, loadable with ``load_generator("hf:OUT/final")``
    OUT/config.json     the `TCGTrainConfig` of the run

Re-running with the same OUT skips a finished stage and resumes an unfinished one from its last
checkpoint.

Evaluation (`run_tcg_eval`): per problem, one `results.jsonl` row (written as it finishes, so an
interrupted run resumes), then ``summary.json``, ``summary.md`` and ``summary.png`` with
(a) the paper's figure: the model's own expected outputs that match the reference's, headlined
    without the model's copy of the example test shown in its prompt (a copy matches trivially;
    the figure with it is a second line);
(b) input validity; (c) problems with at least k kept tests;
(d) discrimination, reported apart for two categories of wrong solutions: solutions a model really
    wrote (by default 4 samples per problem from the TCG's own model, prompted with the statement and
    the visible test only) and AST mutants of the reference; each kept only when it fails the hidden
    tests (all dataset tests), so the judging tests reject all of them by selection and that is no
    figure. Per category: the share the generated tests reject, the share the visible test alone
    rejects, and the key figure, the share the generated tests catch while the visible test passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from o1code.data import Problem, load_mbpp, load_problems
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import write_atomic
from o1code.rewards.mutants import mutants as make_mutants
from o1code.rewards.tcg import (
    TCGConfig,
    TestCaseGenerator,
    build_prompt,
    cases_from_asserts,
    format_completion,
    parse_assert,
    shown_example_call,
)

log = logging.getLogger(__name__)

# ============================================================================ training data


def _case_list(problem: Problem, show_example: bool, include_example: bool) -> list[tuple[str, str]]:
    """(call, output literal) pairs for a problem's SFT target: its parseable dataset asserts; without
    `include_example`, minus the one shown as the prompt's example when others remain."""
    pairs = [(c, repr(v)) for c, v in cases_from_asserts(problem)]
    if show_example and not include_example and problem.visible() and len(pairs) > 1:
        shown = parse_assert(problem.visible()[0], problem.entry_point)  # what build_prompt shows
        if shown is not None:
            rest = [p for p in pairs if p[0] != shown[0]]
            pairs = rest or pairs
    return pairs


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A permutation with no fixed point (n >= 2), drawn uniformly by rejection."""
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def build_tcg_examples(problems: Sequence[Problem], seed: int = 0, show_example: bool = True,
                       include_example: bool = True) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Build the SFT and DPO records from problems with a reference and parseable asserts.

    Returns ``(sft, dpo)``. An SFT record is ``{"prompt", "completion"}`` (the prompt is `build_prompt`
    with k = the number of cases, the completion the ```case blocks). A DPO record is
    ``{"prompt", "chosen", "rejected"}``: chosen is the SFT completion, rejected pairs the same inputs
    with the outputs deranged (every pair mismatched when the values allow; problems whose outputs are
    all equal give no DPO record, since no shuffle can make a wrong pair). Records are shuffled with `seed`.
    `include_example`: the target also holds the test shown in the prompt (MBPP has 3 tests, so the
    model then learns to write the 3 cases inference asks for; without it targets have 2).
    """
    rng = random.Random(seed)
    sft: list[dict[str, str]] = []
    dpo: list[dict[str, str]] = []
    for p in problems:
        if not p.reference or not p.entry_point:
            continue
        pairs = _case_list(p, show_example, include_example)
        if not pairs:
            continue
        prompt = build_prompt(p, len(pairs), show_example=show_example)
        chosen = format_completion(pairs)
        sft.append({"prompt": prompt, "completion": chosen})
        outputs = [o for _, o in pairs]
        if len(set(outputs)) < 2:
            continue
        for _ in range(20):  # a derangement can still pair equal outputs: retry for a real mismatch
            perm = _derangement(len(pairs), rng)
            shuffled = [outputs[j] for j in perm]
            if any(a != b for a, b in zip(shuffled, outputs)):
                break
        dpo.append({"prompt": prompt, "chosen": chosen,
                    "rejected": format_completion([(c, o) for (c, _), o in zip(pairs, shuffled)])})
    rng.shuffle(sft)
    rng.shuffle(dpo)
    return sft, dpo


# ============================================================================ training


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
            all projections; r = 8 is the default here because CPU runs are short).
        learning_rate: 5e-4 as in the paper, for both stages.
        beta: DPO's beta (the paper leaves it open; 0.1).
        sft_epochs, dpo_epochs: Epochs per stage (ignored when the matching max_steps > 0).
        sft_max_steps, dpo_max_steps: Optimizer steps per stage (0: use the epochs; -1 skips the stage).
        batch_size, grad_accum: Micro-batch size and gradient accumulation.
        max_length: Longest tokenized example (prompt + completion); longer ones are truncated.
        warmup_ratio, weight_decay, lr_scheduler: Optimizer schedule (warmup as a share of the steps).
        logging_steps, save_steps, save_total_limit: TensorBoard scalars and checkpoints.
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
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 5e-4
    beta: float = 0.1
    sft_epochs: float = 1.0
    dpo_epochs: float = 1.0
    sft_max_steps: int = 0
    dpo_max_steps: int = 0
    batch_size: int = 1
    grad_accum: int = 1
    max_length: int = 1024
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    lr_scheduler: str = "cosine"
    logging_steps: int = 1
    save_steps: int = 20
    save_total_limit: int = 2
    seed: int = 0
    show_example: bool = True
    include_example: bool = True

    def validate(self) -> "TCGTrainConfig":
        """Return self after checking ranges; raises `PipelineError`."""
        if self.learning_rate <= 0 or self.beta <= 0:
            raise PipelineError("learning_rate and beta must be > 0")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_r < 1 or self.max_length < 16:
            raise PipelineError("batch_size, grad_accum, lora_r must be >= 1 and max_length >= 16")
        if self.sft_max_steps < -1 or self.dpo_max_steps < -1:
            raise PipelineError("max_steps must be -1 (skip), 0 (use epochs) or positive")
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


def _model_source(spec: str) -> tuple[str, dict[str, Any]]:
    """(path or id, extra from_pretrained kwargs) for a training model spec."""
    if spec in ("default", "default-quality"):
        from o1code.models.default import ensure_model

        gguf = ensure_model(spec)
        return str(gguf.parent), {"gguf_file": gguf.name}
    if spec.startswith("hf:"):
        spec = spec[3:]
    if spec.endswith(".gguf"):
        p = Path(spec)
        return str(p.parent), {"gguf_file": p.name}
    return spec, {}


def _load(spec_or_dir: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, kw = _model_source(spec_or_dir)
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kw)
    except OSError as exc:
        raise PipelineError(f"cannot load model {spec_or_dir!r}: {exc}") from exc
    if "gguf_file" in kw:
        # transformers dequantizes GGUF weights to plain float tensors but still labels the model as
        # GGUF-quantized, which makes Trainer refuse it and save_pretrained write a bogus quantization
        # config; the weights are ordinary float32 parameters, so drop the label.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _conversational(tok: Any, records: list[dict[str, str]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Wrap records as chat turns when the tokenizer has a chat template, so training sees exactly the
    text `HFGenerator` feeds the model at inference (the prompt as a user turn)."""
    if not getattr(tok, "chat_template", None):
        return records
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             **{k: [{"role": "assistant", "content": r[k]}] for k in keys}} for r in records]


def _last_checkpoint(stage_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None


def _loss_span(history: list[dict]) -> tuple[float, float] | None:
    losses = [h["loss"] for h in history if "loss" in h]
    return (losses[0], losses[-1]) if losses else None


def _peft_config(cfg: TCGTrainConfig) -> Any:
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")


def _common_args(cfg: TCGTrainConfig, stage_dir: Path, epochs: float, max_steps: int) -> dict[str, Any]:
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


def _save_merged(model: Any, tok: Any, dest: Path) -> None:
    """Merge LoRA adapters (when any) and save model + tokenizer to `dest` atomically (tmp dir + rename)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    os.replace(tmp, dest)


def train_tcg(config: TCGTrainConfig, problems: Sequence[Problem] | None = None) -> TCGTrainResult:
    """Run SFT then DPO (see the module docstring); return a `TCGTrainResult`.

    `problems` overrides the data (else: `config.split` of MBPP plus `config.extra_jsonl`). Raises
    `PipelineError` when there is no usable training record or the model cannot be loaded.
    """
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    cfg = config.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    if problems is None:
        problems = list(load_mbpp(cfg.split)) if cfg.split else []
        for path in cfg.extra_jsonl:
            problems.extend(load_problems(path))
        problems = [p for p in problems if not p.known_bad]
    if cfg.limit:
        problems = list(problems)[: cfg.limit]
    sft_records, dpo_records = build_tcg_examples(problems, cfg.seed, cfg.show_example, cfg.include_example)
    if not sft_records:
        raise PipelineError("no training record: the problems need a reference and `assert f(...) == literal` tests")
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
        model, tok = _load(cfg.model)
        args = SFTConfig(**_common_args(cfg, sft_dir, cfg.sft_epochs, cfg.sft_max_steps),
                         completion_only_loss=True, packing=False)
        trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=_peft_config(cfg),
                             train_dataset=Dataset.from_list(_conversational(tok, sft_records, ["completion"])))
        trainer.train(resume_from_checkpoint=_last_checkpoint(sft_dir))
        sft_losses = _loss_span(trainer.state.log_history)
        _save_merged(trainer.model, tok, merged_dir)
        base_for_dpo = str(merged_dir)
        del trainer, model

    # ---- DPO: the SFT model is both the start and the reference (adapter disabled = reference).
    if cfg.dpo_max_steps == -1 or not dpo_records:
        if not dpo_records:
            log.warning("tcg train: no DPO record (every problem's outputs are equal); DPO skipped")
        model, tok = _load(base_for_dpo)
        _save_merged(model, tok, final_dir)
    elif (final_dir / "config.json").is_file() and (dpo_dir / "done").is_file():
        log.info("tcg train: DPO already finished (%s)", final_dir)
    else:
        model, tok = _load(base_for_dpo)
        ref = None
        if not cfg.lora:  # full fine-tuning needs an explicit frozen copy as the reference
            ref, _ = _load(base_for_dpo)
        args = DPOConfig(**_common_args(cfg, dpo_dir, cfg.dpo_epochs, cfg.dpo_max_steps), beta=cfg.beta)
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok,
                             peft_config=_peft_config(cfg),
                             train_dataset=Dataset.from_list(_conversational(tok, dpo_records, ["chosen", "rejected"])))
        trainer.train(resume_from_checkpoint=_last_checkpoint(dpo_dir))
        dpo_losses = _loss_span(trainer.state.log_history)
        _save_merged(trainer.model, tok, final_dir)
        (dpo_dir / "done").write_text("ok\n")
    result = TCGTrainResult(final_dir, len(sft_records), len(dpo_records), sft_losses, dpo_losses,
                            time.perf_counter() - t0)
    log.info("tcg train: done in %.0f s; final model in %s", result.seconds, final_dir)
    return result


# ============================================================================ evaluation


@dataclass
class TCGEvalConfig:
    """Every knob of `run_tcg_eval`.

    Attributes:
        model: The TCG model spec (`load_generator`), e.g. ``"default"`` or ``"hf:runs/tcg/final"``.
        split: MBPP split ("validation", "test", ...), unless `problems_jsonl` is given.
        problems_jsonl: Evaluate these problems instead (the `load_problems` schema).
        limit: At most this many problems (0: all).
        run_dir: Where results, the TCG cache and the summary go; re-using it resumes.
        tcg: The generation settings (k, sampling, seed ...). Its cache goes to ``run_dir/tcg_cache``.
        max_mutants: Wrong solutions per problem from AST mutants of the reference (the "mutant"
            category; kept only if they fail the hidden tests; 0: none).
        wrong_samples: JSONL of ``{"task_id", "code"}`` model-written solutions, added to the "sample"
            category (kept only if they fail the hidden tests).
        sample_wrong: Sample this many solutions per problem from `wrong_model` (prompt: statement and
            visible test only) and keep those failing the hidden tests as the "sample" category (0: none).
        wrong_model: The model that writes those samples ("": the TCG's own model).
        workers: Sandbox workers.
        timeout_s: Sandbox limit for running wrong solutions.
    """

    model: str = "default"
    split: str = "validation"
    problems_jsonl: str = ""
    limit: int = 0
    run_dir: str = "runs/tcg-eval"
    tcg: TCGConfig = field(default_factory=TCGConfig)
    max_mutants: int = 5
    wrong_samples: str = ""
    sample_wrong: int = 4
    wrong_model: str = ""
    workers: int = 2
    timeout_s: float = 4.0


def _select(config: TCGEvalConfig) -> list[Problem]:
    problems = load_problems(config.problems_jsonl) if config.problems_jsonl else load_mbpp(config.split)
    problems = [p for p in problems if not p.known_bad]
    return problems[: config.limit] if config.limit else problems


def _read_rows(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                if "wrong" not in row or "example" not in row:
                    continue  # written before the per-category figures: evaluated again
                rows[row["task_id"]] = row
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from an interrupted run
    return rows


def _load_wrong_samples(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not path:
        return out
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.setdefault(str(rec["task_id"]), []).append(str(rec["code"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineError(f"{path}:{i}: expected a JSON object with task_id and code ({exc})") from None
    return out


_SAMPLE_PROMPT = ("{text}\nYour code should pass {these}:\n{tests}\n"
                  "Write the Python function `{entry}` in one ```python block.")


def sample_prompt(problem: Problem) -> str:
    """The prompt that asks for a solution of `problem`: its statement and its visible tests only
    (`Problem.visible`); the hidden (judging) tests never appear in it."""
    shown = problem.visible()
    return _SAMPLE_PROMPT.format(text=problem.text.strip(), these="these tests" if len(shown) > 1 else "this test",
                                 tests="\n".join(shown), entry=problem.entry_point)


def sample_wrong_solutions(problems: Sequence[Problem], model: Any, n: int, seed: int = 0) -> dict[str, list[str]]:
    """Sample `n` solutions per problem from `model` (a Generator or spec); return the code per task id.

    The prompt is `sample_prompt` (statement + visible tests). Only the sampling: keeping the ones
    that fail the hidden tests is done by `evaluate_problem`.
    """
    from o1code.data.formats import extract_code
    from o1code.models import SamplingParams, load_generator

    gen = load_generator(model) if isinstance(model, str) else model
    prompts = [sample_prompt(p) for p in problems]
    outs = gen.generate(prompts, SamplingParams(n=n, temperature=0.8, top_p=0.95, max_tokens=384, seed=seed))
    result: dict[str, list[str]] = {}
    for p, comps in zip(problems, outs):
        codes = [extract_code(c.text, p.entry_point, whole_if_unfenced=True) for c in comps]
        result[p.task_id] = [c for c in codes if c]
    return result


#: The categories of wrong solutions, reported apart: solutions a model wrote ("sample": sampled,
#: or read from --wrong-samples) and AST mutants of the reference ("mutant").
WRONG_KINDS = ("sample", "mutant")


def _tally() -> dict[str, int]:
    return {"n": 0, "rejected_generated": 0, "rejected_visible": 0, "caught_beyond_visible": 0}


def _example_tally(cases: Sequence[dict], shown: bool) -> dict[str, Any]:
    """Whether the prompt showed a (parseable) example, and whether the model copied it among its
    checked cases (``copied``, 0/1) with the matching output (``copied_matched``, 0/1). Case entries
    cached before ``shown_example`` / ``matched`` existed count as not copied."""
    copied = [c for c in cases if c.get("shown_example") and c.get("matched") is not None]
    return {"shown": shown, "copied": len(copied), "copied_matched": sum(bool(c["matched"]) for c in copied)}


def evaluate_problem(tcg: TestCaseGenerator, problem: Problem, sandbox: Any, wrong: Sequence[str] = (),
                     max_mutants: int = 5, timeout_s: float = 4.0, seed: int = 0) -> dict[str, Any]:
    """Evaluate the TCG on one problem; return its results row (JSON-ready).

    Wrong solutions come in two categories (`WRONG_KINDS`): ``sample``: the codes in `wrong` (solutions
    a model wrote), and ``mutant``: up to `max_mutants` AST mutants of the reference. Either is kept
    only when it fails the hidden tests (all of ``problem.tests``), so every wrong solution fails the
    judging tests by selection and that share is not a figure. Each kept one is run on the generated
    tests and on the visible tests alone (``problem.visible()``); a solution is rejected when its run
    does not pass, and an empty generated suite rejects nothing.

    The row has the TCG counts, ``verified``, the kept tests (as asserts), ``example`` (see
    `_example_tally`: lets figure (a) leave out a copy of the example shown in the prompt), ``wrong``
    (per category: ``n``, ``rejected_generated``, ``rejected_visible`` and ``caught_beyond_visible`` =
    rejected by the generated tests while passing the visible test), ``wrong_solutions`` (one record
    per wrong solution), ``samples_given`` / ``samples_correct`` (codes in `wrong`, and those that
    passed the hidden tests, so are not wrong), ``n_wrong``, ``n_mutants`` and ``reference_rejected``
    (the generated tests fail the reference: must be 0).
    """
    from o1code.sandboxes import Job, Verdict

    res = tcg.generate(problem)
    tests = list(res.tests)
    setup = problem.setup_code
    hidden, visible = list(problem.tests), list(problem.visible())
    candidates: list[tuple[str, str]] = [(c, "sample") for c in wrong if c and c.strip()]
    if problem.reference and max_mutants > 0:
        # Build more candidates than needed: many mutants still pass the tests (equivalent mutants).
        candidates += [(m, "mutant") for m, _ in make_mutants(problem.reference, max_mutants * 6, seed)]
    runs = sandbox.run_many([Job(c, hidden, setup, timeout_s) for c, _ in candidates])
    kept: list[tuple[str, str]] = []
    n_mut = n_correct = 0
    for (code, kind), r in zip(candidates, runs):
        if r.verdict is Verdict.PASSED:
            n_correct += kind == "sample"
            continue
        if r.verdict is Verdict.SANDBOX_ERROR:
            continue  # not judged: neither right nor wrong
        if kind == "mutant":
            if n_mut >= max_mutants:
                continue
            n_mut += 1
        kept.append((code, kind))
    tally = {k: _tally() for k in WRONG_KINDS}
    details: list[dict[str, Any]] = []
    if kept:
        jobs = []
        for code, _ in kept:
            jobs.append(Job(code, tests, setup, timeout_s))
            jobs.append(Job(code, visible, setup, timeout_s))
        runs = sandbox.run_many(jobs)
        for i, (code, kind) in enumerate(kept):
            gen_run, vis_run = runs[2 * i], runs[2 * i + 1]
            rej_gen = bool(tests) and gen_run.verdict is not Verdict.PASSED
            rej_vis = bool(visible) and vis_run.verdict is not Verdict.PASSED
            t = tally[kind]
            t["n"] += 1
            t["rejected_generated"] += rej_gen
            t["rejected_visible"] += rej_vis
            t["caught_beyond_visible"] += rej_gen and not rej_vis
            details.append({"kind": kind, "rejected_generated": rej_gen, "rejected_visible": rej_vis, "code": code})
    ref_rejected = 0
    if tests and problem.reference:
        ref_rejected = int(sandbox.run(problem.reference, tests, setup, timeout_s).verdict is not Verdict.PASSED)
    shown = shown_example_call(problem, tcg.config.show_example) is not None
    return {
        "task_id": problem.task_id,
        "verified": res.verified,
        "counts": dataclasses.asdict(res.counts),
        "example": _example_tally(res.cases, shown),
        "tests": res.asserts,
        "wrong": tally,
        "wrong_solutions": details,
        "samples_given": sum(kind == "sample" for _, kind in candidates),
        "samples_correct": n_correct,
        "n_wrong": len(kept),
        "n_mutants": n_mut,
        "reference_rejected": ref_rejected,
        "completions": list(res.completions),
    }


def summarise_tcg(rows: Sequence[dict], k: int, model: str = "", split: str = "") -> dict[str, Any]:
    """The four figures (and their parts) over results rows.

    Returns a dict with
    (a) ``output_match``: the model's expected outputs that equal the reference's, over the inputs the
    reference ran on, leaving out a copy of the example shown in the prompt (it matches trivially);
    ``output_match_with_example``: the same counting that copy (the raw paper figure);
    ``example_copied``: problems whose checked cases include the shown example, of problems whose
    prompt showed a parseable one; ``all_correct``: problems whose every checked output (example
    left out) matched, of problems with one;
    (b) ``input_validity`` (inputs the reference ran on / distinct well-formed inputs), ``malformed_rate``;
    (c) ``at_least_k`` (problems with >= k kept tests), ``mean_kept``;
    (d) per category ``samples`` / ``mutants`` (`WRONG_KINDS`): ``wrong_samples`` (the count),
    ``samples_rejected_generated``, ``samples_rejected_visible``, ``samples_caught_beyond_visible``
    (rejected by the generated tests and passing the visible test), each a share of ``wrong_samples``,
    and ``samples_caught_of_visible_passing`` (caught_beyond_visible over those passing the visible
    test); likewise ``wrong_mutants``, ``mutants_*``. Every wrong solution fails the judging tests
    by selection, so no "rejected by the dataset tests" share is reported.
    Also ``wrong_solutions`` (all categories), ``samples_given`` / ``samples_correct``,
    ``reference_false_rejections`` (count), ``unverified_problems`` and the raw ``totals``. A ratio
    with a zero denominator is None.
    """
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    tot: dict[str, int] = {}
    for r in rows:
        for key, v in r["counts"].items():
            tot[key] = tot.get(key, 0) + v
    checked = tot.get("checked", 0)
    matches = tot.get("model_output_matches_reference", 0)
    distinct = checked + tot.get("invalid_input", 0)
    ex = [r.get("example") or {} for r in rows]
    ex_copied = sum(e.get("copied", 0) for e in ex)
    ex_matched = sum(e.get("copied_matched", 0) for e in ex)

    def own(r: dict, e: dict) -> tuple[int, int]:  # (checked, matches) without the copied example
        c = r["counts"]
        return c["checked"] - e.get("copied", 0), c["model_output_matches_reference"] - e.get("copied_matched", 0)

    owned = [own(r, e) for r, e in zip(rows, ex)]
    with_checked = [(c, m) for c, m in owned if c]
    out: dict[str, Any] = {
        "model": model, "split": split, "problems": len(rows), "k": k,
        "output_match": ratio(matches - ex_matched, checked - ex_copied),
        "output_match_with_example": ratio(matches, checked),
        "example_copied": ratio(sum(e.get("copied", 0) for e in ex if e.get("shown")),
                                sum(bool(e.get("shown")) for e in ex)),
        "all_correct": ratio(sum(m == c for c, m in with_checked), len(with_checked)),
        "input_validity": ratio(checked, distinct),
        "malformed_rate": ratio(tot.get("malformed", 0), tot.get("generated", 0)),
        "at_least_k": ratio(sum(r["counts"]["kept"] >= k for r in rows), len(rows)),
        "mean_kept": ratio(tot.get("kept", 0), len(rows)),
        "wrong_solutions": sum(r.get("n_wrong", 0) for r in rows),
    }
    for kind in WRONG_KINDS:
        t = {key: sum((r.get("wrong") or {}).get(kind, {}).get(key, 0) for r in rows) for key in _tally()}
        n = t["n"]
        out[f"wrong_{kind}s"] = n
        out[f"{kind}s_rejected_generated"] = ratio(t["rejected_generated"], n)
        out[f"{kind}s_rejected_visible"] = ratio(t["rejected_visible"], n)
        out[f"{kind}s_caught_beyond_visible"] = ratio(t["caught_beyond_visible"], n)
        out[f"{kind}s_caught_of_visible_passing"] = ratio(t["caught_beyond_visible"], n - t["rejected_visible"])
    out.update({
        "samples_given": sum(r.get("samples_given", 0) for r in rows),
        "samples_correct": sum(r.get("samples_correct", 0) for r in rows),
        "reference_false_rejections": sum(r["reference_rejected"] for r in rows),
        "unverified_problems": sum(not r["verified"] for r in rows),
        "totals": tot,
    })
    return out


def _wrong_figures(kind: str, title: str, short: str) -> list[tuple[str, str, str, str | None]]:
    return [
        (f"wrong_{kind}s", f"(d) {title}: wrong solutions", "count", None),
        (f"{kind}s_rejected_generated", f"(d) {title}: rejected by the generated tests", "pct", f"(d) {short}: gen"),
        (f"{kind}s_rejected_visible", f"(d) {title}: rejected by the visible test alone", "pct", f"{short}: visible"),
        (f"{kind}s_caught_beyond_visible", f"(d) {title}: caught by the generated tests, missed by the visible test",
         "pct", f"{short}: gen, not vis"),
        (f"{kind}s_caught_of_visible_passing", f"(d) {title}: ... of those passing the visible test", "pct", None),
    ]


#: (summary key, table label, "pct" or "count", plot label or None when not plotted)
_FIGURES: list[tuple[str, str, str, str | None]] = [
    ("output_match", "(a) model outputs matching the reference (copied shown example left out)", "pct", "(a) match"),
    ("output_match_with_example", "(a) ... counting a copied shown example", "pct", "(a) incl. example"),
    ("example_copied", "problems whose cases copy the shown example", "pct", None),
    ("all_correct", "problems with every output correct (shown example left out)", "pct", "all correct"),
    ("input_validity", "(b) input validity", "pct", "(b) valid in"),
    ("malformed_rate", "malformed cases", "pct", "malformed"),
    ("at_least_k", "(c) problems with >= k kept tests", "pct", "(c) >=k kept"),
    *_wrong_figures("sample", "sampled solutions", "samples"),
    *_wrong_figures("mutant", "mutants of the reference", "mutants"),
]

_TABLE_NOTE = ("Every wrong solution fails the judging tests (all dataset tests): that is how it was selected, "
               "so the dataset tests reject 100% of them by construction and that share is not reported. "
               "(a) leaves out the model's copy of the example test shown in its prompt, which matches trivially.")


def tcg_markdown(summaries: Sequence[dict]) -> str:
    """A markdown table: one row per figure, one column per summary (model), and a note below."""
    def fmt(v: Any, kind: str) -> str:
        if v is None:
            return "n/a"
        return f"{100 * v:.1f}%" if kind == "pct" else str(v)

    head = "| figure | " + " | ".join(f"{s['model']} ({s['split']}, {s['problems']} problems)" for s in summaries) + " |"
    lines = [head, "|---|" + "---|" * len(summaries)]
    for key, label, kind, _ in _FIGURES:
        lines.append(f"| {label} | " + " | ".join(fmt(s.get(key), kind) for s in summaries) + " |")
    lines.append("| false rejections of the reference | "
                 + " | ".join(str(s["reference_false_rejections"]) for s in summaries) + " |")
    return "\n".join(lines) + "\n\n" + _TABLE_NOTE + "\n"


def plot_tcg(summaries: Sequence[dict], path: Path) -> None:
    """A grouped bar chart of the share figures (percent), one colour per summary, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [(k, short) for k, _, kind, short in _FIGURES if kind == "pct" and short]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        vals = [100 * (s.get(k) or 0.0) for k, _ in plotted]
        ax.bar([j + i * width for j in range(len(plotted))], vals, width, label=f"{s['model']} ({s['problems']})")
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(plotted))])
    ax.set_xticklabels([short for _, short in plotted], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Test Case Generator ((d): wrong solutions, all failing the judging tests by selection)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_tcg_eval(config: TCGEvalConfig, generator: Any = None, sandbox: Any = None,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a TCG model; return the summary (also written with the table and plot to the run dir).

    `generator` overrides ``config.model`` (the spec is still used as the model's name); `sandbox`
    overrides the owned `LocalSandbox`. Problems already in ``run_dir/results.jsonl`` are skipped.
    """
    from o1code.sandboxes import LocalSandbox

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    problems = _select(config)
    if not problems:
        raise PipelineError("no problem to evaluate")
    results_path = run_dir / "results.jsonl"
    done = _read_rows(results_path)
    todo = [p for p in problems if p.task_id not in done]
    tcg_cfg = dataclasses.replace(config.tcg, cache_dir=str(run_dir / "tcg_cache"),
                                  model_name=config.tcg.model_name or config.model)
    own = sandbox is None
    sb = sandbox or LocalSandbox(workers=config.workers)
    try:
        tcg = TestCaseGenerator(generator if generator is not None else config.model, sb, tcg_cfg)
        wrong = _load_wrong_samples(config.wrong_samples)
        if config.sample_wrong > 0 and todo:
            sampled = sample_wrong_solutions(todo, config.wrong_model or tcg.generator, config.sample_wrong,
                                             config.tcg.seed)
            for tid, codes in sampled.items():
                wrong.setdefault(tid, []).extend(codes)
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="tcg eval", unit="problem")
        with results_path.open("a") as f:
            for p in todo:
                row = evaluate_problem(tcg, p, sb, wrong.get(p.task_id, ()), config.max_mutants,
                                       config.timeout_s, config.tcg.seed)
                f.write(json.dumps(row) + "\n")
                f.flush()  # one complete line per problem: an interrupted run resumes after it
                done[p.task_id] = row
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        if own:
            sb.close()
    wanted = [done[p.task_id] for p in problems if p.task_id in done]
    summary = summarise_tcg(wanted, config.tcg.k, config.model, config.split if not config.problems_jsonl
                            else Path(config.problems_jsonl).name)
    summary["wrong_model"] = (config.wrong_model or config.model) if config.sample_wrong > 0 else ""
    summary["config"] = {k: v for k, v in dataclasses.asdict(config).items()}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    write_atomic(run_dir / "summary.md", tcg_markdown([summary]))
    plot_tcg([summary], run_dir / "summary.png")
    return summary


# ============================================================================ CLI


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = TCGTrainConfig(
        model=args.model, out_dir=args.out_dir, split=args.split, extra_jsonl=list(args.extra_jsonl or []),
        limit=args.limit, lora=not args.full, lora_r=args.lora_r, learning_rate=args.lr, beta=args.beta,
        sft_epochs=args.epochs, dpo_epochs=args.epochs, sft_max_steps=args.sft_steps,
        dpo_max_steps=args.dpo_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_length=args.max_length, save_steps=args.save_steps, seed=args.seed,
        include_example=not args.exclude_example,
    )
    res = train_tcg(cfg)
    print(f"trained TCG: {res.final_dir} (SFT records {res.n_sft}, DPO records {res.n_dpo}, "
          f"SFT loss {res.sft_losses}, DPO loss {res.dpo_losses}, {res.seconds:.0f} s)")
    print(f"evaluate it with: o1code tcg eval --model hf:{res.final_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    tcg = TCGConfig(k=args.k, n_samples=args.n_samples, temperature=args.temperature, seed=args.seed,
                    max_tokens=args.max_tokens)
    cfg = TCGEvalConfig(model=args.model, split=args.split, problems_jsonl=args.problems or "", limit=args.limit,
                        run_dir=args.run_dir, tcg=tcg, max_mutants=args.max_mutants,
                        wrong_samples=args.wrong_samples or "", sample_wrong=args.sample_wrong,
                        wrong_model=args.wrong_model, workers=args.workers)
    summary = run_tcg_eval(cfg)
    print(tcg_markdown([summary]), end="")
    print(f"results in {cfg.run_dir} (results.jsonl, summary.json, summary.md, summary.png)")
    return 0


def add_tcg_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tcg train`` and ``tcg eval`` on an argparse subparsers object; return the ``tcg`` parser.

    Each leaf parser sets ``func`` to a handler taking the parsed args and returning an exit status.
    """
    tcg = subparsers.add_parser(
        "tcg", help="train and evaluate the Test Case Generator (paper section 2)",
        description="The Test Case Generator writes test inputs for a problem; the reference solution, run "
                    "in the sandbox, writes the expected outputs.")
    sub = tcg.add_subparsers(dest="tcg_command", metavar="{train,eval}", required=True)

    tr = sub.add_parser(
        "train", help="SFT then DPO (shuffled-output negatives), LoRA by default",
        description="SFT on (problem, reference) -> test cases from MBPP tasks, then DPO against the SFT "
                    "model with the paper's negatives (outputs shuffled so at least one pair mismatches). "
                    "Re-running with the same --out-dir resumes. The result loads with "
                    "load_generator('hf:OUT/final').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--model", default="default", help="base model: 'default' (offline GGUF) or hf:DIR")
    tr.add_argument("--out-dir", default="runs/tcg", help="output dir (checkpoints, TensorBoard, final/)")
    tr.add_argument("--split", default="train", help="MBPP split for training data ('' for none)")
    tr.add_argument("--extra-jsonl", action="append", metavar="FILE", help="extra problems (JSONL), repeatable")
    tr.add_argument("--limit", type=int, default=0, help="use at most N problems (0: all)")
    tr.add_argument("--sft-steps", type=int, default=0, help="SFT optimizer steps (0: --epochs; -1: skip)")
    tr.add_argument("--dpo-steps", type=int, default=0, help="DPO optimizer steps (0: --epochs; -1: skip)")
    tr.add_argument("--epochs", type=float, default=1.0, help="epochs per stage when steps are 0")
    tr.add_argument("--lr", type=float, default=5e-4, help="learning rate (the paper's 5e-4)")
    tr.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    tr.add_argument("--full", action="store_true", help="train all weights instead of LoRA")
    tr.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    tr.add_argument("--batch-size", type=int, default=1, help="micro-batch size")
    tr.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    tr.add_argument("--max-length", type=int, default=1024, help="max tokens per example")
    tr.add_argument("--save-steps", type=int, default=20, help="checkpoint every N steps")
    tr.add_argument("--seed", type=int, default=0, help="seed for data order and training")
    tr.add_argument("--exclude-example", action="store_true",
                    help="leave the test shown in the prompt out of the training targets")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "eval", help="measure a TCG: output match, input validity, kept tests, discrimination",
        description="Reports (a) the share of the model's own expected outputs that match the reference's "
                    "output on the same input (the paper's 80.8% / 89.2%), leaving out the model's copy of "
                    "the example test shown in its prompt (the figure with it is a second line); (b) input "
                    "validity; (c) the share of problems with at least k kept tests; (d) for two categories "
                    "of wrong solutions, reported apart: solutions a model wrote (--sample-wrong from the TCG "
                    "model or --wrong-model, prompted with the visible test only; plus --wrong-samples) and "
                    "AST mutants of the reference: the share rejected by the generated tests, by the visible "
                    "test alone, and caught by the generated tests while passing the visible test. Every "
                    "wrong solution fails the judging (all dataset) tests by selection, so that share is not "
                    "reported. Also false rejections of the reference. Writes results.jsonl (resumable), "
                    "summary.json, summary.md and summary.png to --run-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("--model", default="default", help="TCG model spec ('default', hf:DIR, ...)")
    ev.add_argument("--split", default="validation", help="MBPP split")
    ev.add_argument("--problems", metavar="JSONL", help="evaluate these problems instead of an MBPP split")
    ev.add_argument("--limit", type=int, default=0, help="at most N problems (0: all)")
    ev.add_argument("--run-dir", default="runs/tcg-eval", help="output dir; re-using it resumes")
    ev.add_argument("--k", type=int, default=3, help="test cases asked for per problem")
    ev.add_argument("--n-samples", type=int, default=1, help="completions per problem")
    ev.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    ev.add_argument("--max-tokens", type=int, default=384, help="max new tokens per completion")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--max-mutants", type=int, default=5,
                    help="AST mutants of the reference per problem that fail the judging tests (0: none)")
    ev.add_argument("--wrong-samples", metavar="JSONL",
                    help="more model-written solutions (lines of {task_id, code}); failing ones join the samples")
    ev.add_argument("--sample-wrong", type=int, default=4, metavar="N",
                    help="sample N solutions per problem (prompt: statement + visible test only); those failing "
                         "the judging tests are the 'samples' wrong solutions (0: none)")
    ev.add_argument("--wrong-model", default="", metavar="SPEC",
                    help="model that writes those samples (default: the TCG model itself)%(default).0s")
    ev.add_argument("--workers", type=int, default=2, help="sandbox workers")
    ev.set_defaults(func=_cmd_eval)
    return tcg


__all__ = [
    "TCGEvalConfig", "TCGTrainConfig", "TCGTrainResult", "add_tcg_commands", "build_tcg_examples",
    "evaluate_problem", "plot_tcg", "run_tcg_eval", "sample_prompt", "sample_wrong_solutions", "summarise_tcg",
    "tcg_markdown", "train_tcg",
]
