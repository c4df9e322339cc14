"""`o1code tcg train|eval`: the Test Case Generator's training (`o1code.training.tcg.train_tcg`) and
evaluation (`o1code.pipeline.tcg.run_tcg_eval`).

The flags are the fields of `TCGTrainConfig`, and of `TCGEvalConfig` plus its nested `TCGConfig`
(``timeout_s``, in both, is the eval's; ``cache_dir`` is always ``RUN_DIR/tcg_cache``), laid over a
``--config`` TOML file (the eval's generation settings go in its ``[tcg]`` table). A few flags keep
shorter names or add shortcuts: ``--lr``, ``--sft-steps``/``--dpo-steps``, ``--epochs`` (both
stages), ``--full`` (``--no-lora``), ``--exclude-example`` (``--no-include-example``),
``--problems`` (``--problems-jsonl``).
"""

from __future__ import annotations

import argparse
from typing import Any

from o1code.cli.config import add_config_flags, check_keys, docstring_attributes, given_flags, read_toml
from o1code.errors import ConfigError
from o1code.pipeline.tcg import TCGEvalConfig, TCGTrainConfig, run_tcg_eval, tcg_markdown, train_tcg
from o1code.rewards.tcg import TCGConfig
from o1code.runs import lock_run_dir

_TCG_EXCLUDED = ("timeout_s", "cache_dir")  # the eval's own timeout_s; run_tcg_eval sets cache_dir


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


_comma_list.__name__ = "comma-separated str"  # argparse's "invalid ... value" message


def _file_data(args: argparse.Namespace) -> dict[str, Any]:
    return read_toml(args.config) if getattr(args, "config", None) else {}


def train_config(args: argparse.Namespace) -> TCGTrainConfig:
    """The `TCGTrainConfig` of an ``o1code tcg train`` call: the defaults, overridden by the
    ``--config`` file's keys, then by ``--epochs`` (both stages), then by the other flags given."""
    data = _file_data(args)
    check_keys(TCGTrainConfig, data, args.config or "config")
    if args.epochs is not None:
        data.update(sft_epochs=args.epochs, dpo_epochs=args.epochs)
    data.update(given_flags(args, TCGTrainConfig))
    return TCGTrainConfig(**data)


def eval_config(args: argparse.Namespace) -> TCGEvalConfig:
    """The `TCGEvalConfig` of an ``o1code tcg eval`` call: the defaults, overridden by the ``--config``
    file's keys (the `TCGConfig` ones in its ``[tcg]`` table), then by the flags given."""
    data = _file_data(args)
    source = args.config or "config"
    tcg_data = data.pop("tcg", {})
    if not isinstance(tcg_data, dict):
        raise ConfigError(f"{source}: 'tcg' must be a table ([tcg]) of the generation settings")
    check_keys(TCGEvalConfig, data, source)
    check_keys(TCGConfig, tcg_data, f"{source} [tcg]")
    tcg = TCGConfig(**{**tcg_data, **{k: v for k, v in given_flags(args, TCGConfig).items()
                                       if k not in _TCG_EXCLUDED}})
    evaluated = {k: v for k, v in given_flags(args, TCGEvalConfig).items() if k != "tcg"}
    return TCGEvalConfig(**{**data, **evaluated}, tcg=tcg)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    with lock_run_dir(cfg.out_dir):
        res = train_tcg(cfg)
    print(f"trained TCG: {res.final_dir} (SFT records {res.n_sft}, DPO records {res.n_dpo}, "
          f"SFT loss {res.sft_losses}, DPO loss {res.dpo_losses}, {res.seconds:.0f} s)")
    print(f"evaluate it with: o1code tcg eval --model hf:{res.final_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = eval_config(args)
    with lock_run_dir(cfg.run_dir):
        summary = run_tcg_eval(cfg)
    print(tcg_markdown([summary]), end="")
    print(f"results in {cfg.run_dir} (results.jsonl, summary.json, summary.md, summary.png)")
    return 0


def _add_train_flags(tr: argparse.ArgumentParser) -> None:
    add_config_flags(tr, TCGTrainConfig, exclude=("extra_jsonl", "lora_targets"))  # lora_targets: TOML only
    tr.add_argument("--extra-jsonl", action="extend", type=_comma_list, default=None, metavar="FILE[,FILE...]",
                    help=docstring_attributes(TCGTrainConfig)["extra_jsonl"] + " Repeatable, or comma-separated.")
    tr.add_argument("--epochs", type=float, default=None,
                    help="epochs of both stages (sets --sft-epochs and --dpo-epochs, which override it)")
    tr.add_argument("--full", dest="lora", action="store_const", const=False, default=None,
                    help="train all weights instead of LoRA (same as --no-lora)")
    tr.add_argument("--exclude-example", dest="include_example", action="store_const", const=False, default=None,
                    help="leave the test shown in the prompt out of the training targets (same as "
                         "--no-include-example)")


def add_tcg_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tcg train`` and ``tcg eval`` on an argparse subparsers object; return the ``tcg`` parser.

    Each leaf parser sets ``func`` to a handler taking the parsed args and returning an exit status;
    build the configs from parsed args with `train_config` and `eval_config`.
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
                    "load_generator('hf:OUT/final').")
    tr.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file; flags override it")
    _add_train_flags(tr)
    tr.set_defaults(func=cmd_train)

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
                    "summary.json, summary.md and summary.png to --run-dir.")
    ev.add_argument("--config", metavar="TOML", help="read these same keys from a TOML file (the generation "
                    "settings k, temperature, ... in a [tcg] table); flags override it")
    add_config_flags(ev, TCGEvalConfig, exclude=("tcg",))
    add_config_flags(ev, TCGConfig, exclude=_TCG_EXCLUDED)
    ev.set_defaults(func=cmd_eval)
    return tcg


__all__ = ["add_tcg_command", "cmd_eval", "cmd_train", "eval_config", "train_config"]
