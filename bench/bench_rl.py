"""Seconds per GRPO update of the RL stage with transformers rollouts and with llama.cpp rollouts.

The same config for both (the default model, pseudocode mode, at most 4 steps, 8 episodes in groups of
4 on MBPP train problems, visible-test reward, PRM off, no held-out evaluation); each engine runs in a
child process of its own (so each peak RSS is its own) for ``--updates`` updates. Printed per update:
the total and its split as `o1code.agents.ppo.train` logs it: decode (the engine's sampling), the
log-prob recomputation (the trainer's "old" log-probs, and the reference's when kl_coef > 0), the update
(forward + backward + optimizer steps), the sandbox (env steps: running the tests) and the adapter sync;
"other" is the total less those parts (idle waits or repeated work would show there); "eps" the episodes
drawn (dynamic sampling draws up to 4 x 8 when groups have equal rewards, so compare engines per episode
too: the engines sample different texts, hence different refills). Then the median
seconds per update of each engine, their ratio, the tokens decoded per second, and each child's peak RSS.
``--peer trl`` runs TRL's GRPOTrainer on the same config last (bench/rl_peer_trl.py: the mapping, and how
its parts are split), and prints its seconds per update over each engine's.

    python bench/bench_rl.py --updates 2            # both engines
    python bench/bench_rl.py --engines llamacpp     # one
    python bench/bench_rl.py --peer trl             # and TRL's GRPOTrainer
    python bench/bench_rl.py --engines llamacpp --ray 2 --prompts-per-call 2   # on 2 Ray rollout workers
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PARTS = (("sample", "decode"), ("score", "logp recompute"), ("train", "fwd+bwd+opt"), ("env", "sandbox"),
         ("sync", "sync"))


def child(engine: str, updates: int, run_dir: str, kl_coef: float, prompt_style: str | None, dtype: str | None,
          micro_batch: int, ray_workers: int | None = None, prompts_per_call: int | None = None,
          dynamic_sampling: bool = True) -> None:
    from o1code.pipeline.ppo import PPORunConfig, run_ppo

    cfg = PPORunConfig(model="default", algo="grpo", mode="pseudocode", max_steps=4, episodes_per_update=8,
                       group_size=4, updates=updates, eval_limit=0, engine="transformers" if engine == "trl" else engine,
                       run_dir=run_dir, save_every=1000, kl_coef=kl_coef, device="cpu", train_limit=24, prm=None,
                       prompt_style=prompt_style, dtype=dtype, micro_batch=micro_batch,
                       ray="local" if ray_workers else None, rollout_workers=ray_workers,
                       prompts_per_call=prompts_per_call, dynamic_sampling=dynamic_sampling)
    t0 = time.perf_counter()
    if engine == "trl":  # the peer: TRL's GRPOTrainer on this same config (bench/rl_peer_trl.py)
        from rl_peer_trl import run_like_ppo

        res = run_like_ppo(cfg)
    else:
        res = run_ppo(cfg, progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"engine": engine, "history": res.history, "peak_rss": rss,
                                  "wall": time.perf_counter() - t0}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--engines", default="llamacpp,transformers")
    ap.add_argument("--peer", choices=["trl"], help="also run TRL's GRPOTrainer on the same settings, last")
    ap.add_argument("--kl-coef", type=float, default=0.05, help="the CPU recipe's (0: no reference pass)")
    ap.add_argument("--prompt-style", choices=["fewshot", "instruct"], default=None,
                    help="the env's prompts (default: PPORunConfig's); instruct pseudocode prompts are 2.7x shorter "
                         "(no worked examples), which the log-prob recomputation and the update feel")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="the trainer's backbone precision (default: PPORunConfig's, float32); the CPU recipes train "
                         "float32 LoRA adapters on a bfloat16 backbone")
    ap.add_argument("--micro-batch", type=int, default=4,
                    help="steps per trainer forward pass (PPOConfig's micro_batch); 1 keeps one step's activations "
                         "at a time, the least memory at no cost in compute on a CPU")
    ap.add_argument("--ray", type=int, metavar="N", default=None,
                    help="llama.cpp rollouts on N Ray workers (a local Ray, one CPU each) instead of in-process; "
                         "the learner idles while they sample: the decode column is its idle share")
    ap.add_argument("--prompts-per-call", type=int, default=None,
                    help="prompts per engine call (default: one call per round); with --ray, 2-4 spreads a round "
                         "over the workers")
    ap.add_argument("--no-dynamic-sampling", dest="dynamic_sampling", action="store_false",
                    help="train on every group, as TRL does (default: grpo redraws groups whose rewards are all equal, "
                         "so an update may draw up to 4 x the episodes it trains on)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.updates, tempfile.mkdtemp(prefix="bench-rl-"), args.kl_coef, args.prompt_style,
              args.dtype, args.micro_batch, args.ray, args.prompts_per_call, args.dynamic_sampling)
        return
    print(f"# bench_rl: default model, pseudocode, <=4 steps, 8 episodes in groups of 4, PRM off, kl_coef "
          f"{args.kl_coef}, prompt style {args.prompt_style or 'default'}, trainer {args.dtype or 'float32'} in "
          f"micro-batches of {args.micro_batch}, {args.updates} update(s) per engine"
          f"{'' if args.dynamic_sampling else ', no dynamic sampling'}"
          f"{f', llama.cpp on {args.ray} Ray workers' if args.ray else ''}; "
          f"{os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    print(f"{'engine':13s} {'upd':>3s} {'total s':>8s} " + " ".join(f"{label:>14s}" for _, label in PARTS)
          + f" {'other':>7s} {'tokens':>7s} {'eps':>4s} {'reward':>6s} {'eng KL':>7s}", flush=True)
    medians = {}
    for engine in args.engines.split(",") + ([args.peer] if args.peer else []):
        out = subprocess.run([sys.executable, __file__, "--child", engine, "--updates", str(args.updates),
                              "--kl-coef", str(args.kl_coef), "--micro-batch", str(args.micro_batch)]
                             + (["--dtype", args.dtype] if args.dtype else [])
                             + (["--ray", str(args.ray)] if args.ray else [])
                             + (["--prompts-per-call", str(args.prompts_per_call)] if args.prompts_per_call else [])
                             + ([] if args.dynamic_sampling else ["--no-dynamic-sampling"])
                             + (["--prompt-style", args.prompt_style] if args.prompt_style else []),
                             capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{engine}: failed\n{out.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[7:])
        for h in r["history"]:
            parts = [h.get(f"seconds/{k}", 0.0) for k, _ in PARTS]
            total = h["seconds_per_update"]
            tokens = h["tokens_per_s"] * total
            print(f"{engine:13s} {h['update']:>3d} {total:>8.1f} " + " ".join(f"{p:>14.1f}" for p in parts)
                  + f" {total - sum(parts):>7.1f} {tokens:>7.0f} {h['episodes']:>4d} {h['reward']:>6.2f}"
                  f" {h.get('engine_kl', 0):>7.4f}",
                  flush=True)
        secs = [h["seconds_per_update"] for h in r["history"]]
        decode = [h["tokens_sampled"] / max(h["seconds/sample"], 1e-9) for h in r["history"]]  # every episode drawn
        medians[engine] = statistics.median(secs)
        per_episode = statistics.median(h["seconds_per_update"] / h["episodes"] for h in r["history"])
        print(f"{engine:13s} median {medians[engine]:.1f} s/update ({per_episode:.1f} s per episode drawn), "
              f"decode {statistics.median(decode):.1f} tokens/s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB", flush=True)
    if "llamacpp" in medians and "transformers" in medians:
        print(f"llama.cpp rollouts: {medians['transformers'] / medians['llamacpp']:.2f}x faster per update; "
              f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    for engine in sorted(set(medians) - {"trl"}) if "trl" in medians else ():
        print(f"TRL's seconds per update / o1code's with {engine} rollouts: {medians['trl'] / medians[engine]:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
