"""``o1code tcg train|eval``: the argparse glue over `o1code.training.tcg.train_tcg` and
`o1code.pipeline.tcg.evaluate.run_tcg_eval` (`add_tcg_commands` registers both on a parser)."""

from __future__ import annotations

import argparse
from typing import Any

from o1code.pipeline.tcg.evaluate import TCGEvalConfig, run_tcg_eval
from o1code.pipeline.tcg.report import tcg_markdown
from o1code.rewards.tcg import TCGConfig
from o1code.training.tcg import TCGTrainConfig, train_tcg


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


__all__ = ["add_tcg_commands"]
