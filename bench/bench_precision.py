"""Benchmark the default model's precision on CPU for training-shaped work (not a test; prints figures).

One sequence of ``--tokens`` tokens through the default model (the GGUF dequantised by transformers),
in three precisions: float32, a float32 model under ``torch.autocast(bfloat16)``, and a bfloat16 model
with float32 LoRA adapters (what ``--dtype bfloat16`` gives the PRM). For each: a forward pass without
gradients (scoring) and a forward + backward pass with LoRA (training), median of ``--reps`` after one
warm-up. bfloat16 pays off on CPUs with AVX512-BF16 / AMX (``grep -o 'avx512_bf16\\|amx' /proc/cpuinfo``).

    .venv/bin/python bench/bench_precision.py [--threads 2] [--tokens 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time


def _time(fn, reps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from o1code.models.hub import import_peft, load_model, lora_config

    if args.threads:
        torch.set_num_threads(args.threads)
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, avx512_bf16: {'avx512_bf16' in flags}, "
          f"amx: {'amx_bf16' in flags}; {args.tokens} tokens, median of {args.reps}")
    ids = torch.randint(100, 20000, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    rows = []
    for name, dtype, autocast in (("float32", torch.float32, False), ("autocast bf16", torch.float32, True),
                                  ("bfloat16", torch.bfloat16, False)):
        model = import_peft().get_peft_model(load_model("default", dtype=dtype, what="bench"),
                                             lora_config(8, 32, 0.0, None))
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext

        def forward() -> None:
            with torch.no_grad(), ctx():
                model(ids)

        def train_step() -> None:
            with ctx():
                loss = model(ids).logits[0, -1].float().logsumexp(-1)
            loss.backward()
            model.zero_grad(set_to_none=True)

        rows.append((name, _time(forward, args.reps), _time(train_step, args.reps)))
        del model
    base_f, base_t = rows[0][1], rows[0][2]
    print(f"{'precision':<15} {'forward s':>10} {'x f32':>6} {'fwd+bwd (LoRA) s':>17} {'x f32':>6}")
    for name, f, t in rows:
        print(f"{name:<15} {f:>10.2f} {base_f / f:>6.2f} {t:>17.2f} {base_t / t:>6.2f}")


if __name__ == "__main__":
    main()
