"""`o1code export`: a trained policy (``o1code sft``'s or ``o1code ppo``'s RUN/final) written into the GGUF
of the model it started from, to play on llama.cpp (`o1code.models.gguf_export`)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    from o1code.models.gguf_export import export_policy

    res = export_policy(args.policy, args.base, args.out)
    print(f"wrote {res.path}: {len(res.replaced)} trained tensors (Q8_0), {res.copied} copied from {args.base}")
    print(f"play it with: o1code eval --model llamacpp:{res.path} ...")
    return 0


def add_export_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``export`` on the subparsers `commands`."""
    export = commands.add_parser(
        "export", help="write a trained policy into its base model's GGUF, to play on llama.cpp",
        description="Write the Policy saved in POLICY (RUN/final of `o1code sft` or `o1code ppo`, LoRA merged) "
        "into a copy of the GGUF file of --base: the tensors training changed as Q8_0, the rest (metadata, "
        "tokenizer, untouched tensors) copied byte for byte. Then `o1code eval --model llamacpp:OUT` decodes it "
        "on llama.cpp, as fast as the base model. Architectures: qwen2, qwen3, llama.")
    export.add_argument("policy", metavar="POLICY", help="directory of a saved Policy (RUN/final)")
    export.add_argument("--base", default="default", metavar="SPEC",
                        help="the GGUF model the training started from: default, gguf:PATH or llamacpp:PATH "
                        "(default: %(default)s)")
    export.add_argument("--out", required=True, metavar="FILE", help="the GGUF file to write (replaced atomically)")
    export.set_defaults(func=cmd_export)
    return export
