"""The peer of ``o1code ppo --algo grpo``: TRL's `GRPOTrainer` on the same model, problems, groups, prompt and
reward, timed per update (`run_trl_grpo`; `run_like_ppo` maps a `PPORunConfig`; ``bench/bench_rl.py --peer trl``
runs it beside ours).

    .venv/bin/python bench/rl_peer_trl.py [--model default] [--updates 2] [--problems 4] [--mode direct]

How an o1code GRPO update maps onto TRL's settings (both LoRA r16/alpha32 on every linear layer but the head,
the reference being the adapters disabled; the prompt is the env's (`O1CodeTask` with the run's
``prompt_style``, ``chat_template=False``, as ``o1code ppo`` uses it); the reward is the env's, through
`O1CodeTask`; the backbone in the run's ``dtype``, the adapters float32 in both):

- ``episodes_per_update`` completions, ``group_size`` per problem -> ``num_generations = group_size`` and a
  generation batch of ``episodes_per_update`` (``steps_per_generation = episodes / micro_batch``);
- ``update_epochs`` passes over the rollout -> ``num_iterations`` (TRL reuses a generation that many times);
- optimizer steps of ``minibatch_size``, forward passes of ``micro_batch`` -> ``gradient_accumulation_steps =
  minibatch_size / micro_batch`` of ``per_device_train_batch_size = micro_batch``;
- ``kl_coef`` -> ``beta`` (0: neither computes reference log-probs), ``clip`` / ``clip_high`` -> ``epsilon`` /
  ``epsilon_high``, ``ratio="token"`` -> TRL's per-token ratios with its token-mean ``dapo`` loss (``"step"`` ->
  ``importance_sampling_level="sequence"``, a per-sequence ratio), ``max_step_tokens`` ->
  ``max_completion_length`` (times ``max_steps`` in the multi-step modes), same learning rate, temperature,
  top_p, grad clipping and seed; gradient checkpointing off as in o1code's trainer (TRL's default is on).
- not mirrored: ``dynamic_sampling`` (TRL trains on every group, all-equal ones giving no gradient; o1code
  rolls out up to three more draws in their place, so its update can sample more) and ``tis_cap`` (TRL's
  transformers path samples with the trainer's own weights: no engine-trainer mismatch to correct).

One update is ``update_epochs * episodes / minibatch_size`` TRL optimizer steps. Where TRL differs by design:
a completion is one generation, so a pseudocode episode is one sample of the whole trace (o1code samples it step
by step, one prompt per step, and its minibatches count steps, not episodes: more optimizer steps per update);
and TRL's transformers path cannot stop at a string (its GenerationConfig's stop strings need the tokenizer at
`generate`, which TRL does not pass), so the tokenizer is handed to the model's `generate` here, stopping a direct
answer at ``<Step_End>`` as o1code's rollouts do and a trace where the worked examples end one (``---``).

Each update is split as `o1code.agents.ppo.train` logs its own: ``seconds/sample`` (inside `generate`),
``seconds/score`` (TRL's log-prob passes after generation: the old policy's and the reference's),
``seconds/env`` (the reward functions: the sandbox), ``seconds/train`` (the rest: forward, backward, optimizer).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from transformers import TrainerCallback

from o1code.data import Problem
from o1code.data.formats import STEP_END

#: Where a completion ends: a direct answer at <Step_End>; a trace where the worked examples end a solution.
STOP = {"direct": [STEP_END], "trace": ["\n---", "### Question"]}


@dataclass
class TRLRun:
    """What `run_trl_grpo` measured: one dict per update with `o1code.agents.ppo.train`'s keys (``update``,
    ``seconds_per_update``, ``seconds/sample|score|env|train``, ``tokens_per_s``, ``tokens_sampled``, ``episodes``,
    ``reward``,
    ``reward_test_pass``, ``hidden_test_pass``), the model's load time and the optimizer steps per update."""

    history: list[dict[str, float]] = field(default_factory=list)
    load_seconds: float = 0.0
    steps_per_update: int = 0
    clock: dict[str, float] = field(default_factory=dict)  # the update in progress

    def close_update(self, seconds: float) -> dict[str, float]:
        c = dict(self.clock)
        self.clock.clear()  # in place: the timers hold this dict
        sample, env = c.get("sample", 0.0), c.get("env", 0.0)
        score = c.get("prepare", 0.0) - sample - env  # TRL's generate-and-score step, less its generate and reward
        n = max(c.get("episodes", 0.0), 1.0)
        row = {"update": len(self.history) + 1, "seconds_per_update": seconds, "seconds/sample": sample,
               "seconds/score": score, "seconds/env": env, "seconds/train": seconds - c.get("prepare", 0.0),
               "tokens_per_s": c.get("tokens", 0.0) / seconds, "tokens_sampled": c.get("tokens", 0.0),
               "episodes": int(c.get("episodes", 0)), "reward": c.get("reward", 0.0) / n,
               "reward_test_pass": c.get("reward_pass", 0.0) / n, "hidden_test_pass": c.get("hidden_pass", 0.0) / n}
        self.history.append(row)
        return row


def _tick(clock: dict[str, float], key: str, fn: Any) -> Any:
    """`fn` with its seconds added to ``clock[key]``."""
    @functools.wraps(fn)
    def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            clock[key] = clock.get(key, 0.0) + time.perf_counter() - t
    return timed


class _UpdateClock(TrainerCallback):
    """Closes an update every `run.steps_per_update` optimizer steps and prints it (figures as the run goes)."""

    def __init__(self, run: TRLRun) -> None:
        self.run, self.t0 = run, 0.0

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.run.steps_per_update == 0:
            now = time.perf_counter()
            row = self.run.close_update(now - self.t0)
            self.t0 = now
            print("trl update " + json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)


def run_trl_grpo(model_spec: str, problems: Sequence[Problem], *, group_size: int = 4, episodes_per_update: int = 8,
                 updates: int = 2, mode: str = "direct", max_steps: int | None = None, show_tests: str = "first",
                 tests: str = "visible", reward: str = "binary", max_step_tokens: int = 128,
                 learning_rate: float = 5e-5, kl_coef: float = 0.0, clip: float = 0.2, clip_high: float | None = 0.28,
                 ratio: str = "token", update_epochs: int = 2,
                 minibatch_size: int = 8, micro_batch: int = 4, temperature: float = 1.0, top_p: float = 1.0,
                 max_grad_norm: float = 1.0, lora_r: int = 16, lora_alpha: int = 32, chat_template: bool = False,
                 gradient_checkpointing: bool = False, seed: int = 0, workers: int = 2,
                 prompt_style: str | None = None, dtype: str | None = None,
                 output_dir: str | None = None) -> TRLRun:
    """Train `updates` GRPO updates with TRL on `problems` (in this order, ``episodes_per_update / group_size``
    per update, cycled) and time them; the settings have `o1code.pipeline.ppo.PPORunConfig`'s names and
    defaults (the mapping is in the module docstring)."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from o1code.integrations.trl import O1CodeTask
    from o1code.models import load_causal_lm, lora_config

    if episodes_per_update % group_size or episodes_per_update % micro_batch or minibatch_size % micro_batch:
        raise ValueError("episodes_per_update must be a multiple of group_size and micro_batch, and "
                         "minibatch_size a multiple of micro_batch")
    run = TRLRun(steps_per_update=update_epochs * max(1, episodes_per_update // minibatch_size))
    t = time.perf_counter()
    model, tokenizer = load_causal_lm(model_spec, dtype=dtype)  # LoRA adapters stay float32 (peft), as ours
    run.load_seconds = time.perf_counter() - t
    model.generate = _tick(run.clock, "sample", functools.partial(model.generate, tokenizer=tokenizer))
    per_update = episodes_per_update // group_size
    order = [problems[i % len(problems)] for i in range(updates * per_update)]
    with O1CodeTask(problems=list({p.task_id: p for p in order}.values()), mode=mode, max_steps=max_steps,
                    show_tests=show_tests, tests=tests, reward=reward, chat=chat_template, workers=workers,
                    prompt_style=prompt_style or "fewshot") as task:
        rows = {r["task_id"]: r for r in task.dataset()}
        data = Dataset.from_list([rows[p.task_id] for p in order])  # one row per group, in the run's order

        def reward_fn(completions, completion_ids=(), **kw):  # o1code's reward, and each update's figures
            grades = task.grade(completions, kw["task_id"], kw.get("reward_tests"))
            c = run.clock
            for key, value in (("episodes", len(grades)), ("tokens", sum(map(len, completion_ids))),
                               ("reward", sum(g.reward for g in grades)),
                               ("reward_pass", sum(g.reward_all_passed for g in grades)),
                               ("hidden_pass", sum(g.judging_all_passed for g in grades))):
                c[key] = c.get(key, 0.0) + value
            return [g.reward for g in grades]

        reward_fn.__name__ = task.reward.__name__
        direct = mode == "direct"
        args = GRPOConfig(
            output_dir=output_dir or tempfile.mkdtemp(prefix="trl-grpo-"), max_steps=updates * run.steps_per_update,
            num_generations=group_size, per_device_train_batch_size=micro_batch,
            gradient_accumulation_steps=minibatch_size // micro_batch,
            steps_per_generation=episodes_per_update // micro_batch, num_iterations=update_epochs,
            max_completion_length=max_step_tokens * task.env.max_steps, beta=kl_coef, epsilon=clip,
            epsilon_high=clip_high, importance_sampling_level="token" if ratio == "token" else "sequence",
            learning_rate=learning_rate, temperature=temperature, top_p=top_p, max_grad_norm=max_grad_norm,
            seed=seed, shuffle_dataset=False, logging_steps=1, report_to=[], save_strategy="no",
            gradient_checkpointing=gradient_checkpointing, use_cpu=not torch.cuda.is_available(), bf16=False,
            generation_kwargs={"stop_strings": STOP["direct" if direct else "trace"]},
            reward_weights=[1.0] + ([1.0] if task.prm else []))
        trainer = GRPOTrainer(model, reward_funcs=[_tick(run.clock, "env", reward_fn)] + ([task.prm] if task.prm else []),
                              args=args, processing_class=tokenizer, train_dataset=data,
                              peft_config=lora_config(r=lora_r, alpha=lora_alpha), callbacks=[_UpdateClock(run)])
        # Timing only: TRL's generate-and-score step (generate, rewards, the old and reference log-prob passes).
        trainer._generate_and_score_completions = _tick(run.clock, "prepare", trainer._generate_and_score_completions)
        trainer.train()
    return run


def run_like_ppo(config: Any) -> TRLRun:
    """`run_trl_grpo` with the settings of an ``o1code ppo`` run (a `PPORunConfig`, ``algo="grpo"``): its model,
    its train problems in its order (shuffled by its seed), its groups, prompt, reward and optimizer."""
    from o1code.pipeline.ppo import train_problems

    problems = train_problems(config)
    random.Random(config.seed).shuffle(problems)  # as run_ppo shuffles its task ids
    names = ("group_size", "episodes_per_update", "updates", "mode", "max_steps", "show_tests", "tests", "reward",
             "max_step_tokens", "learning_rate", "kl_coef", "clip", "clip_high", "ratio", "update_epochs",
             "minibatch_size", "micro_batch",
             "temperature", "top_p", "max_grad_norm", "lora_r", "lora_alpha", "chat_template", "seed",
             "prompt_style", "dtype")
    return run_trl_grpo(config.model, problems, **{n: getattr(config, n) for n in names})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="an o1code model spec (default: the embedded GGUF, dequantized)")
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--problems", type=int, default=4, help="the first N MBPP train problems (known-bad ones left out)")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per update")
    ap.add_argument("--group", type=int, default=4, help="group size")
    ap.add_argument("--mode", default="direct")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-step-tokens", type=int, default=128)
    a = ap.parse_args()
    from o1code.pipeline.ppo import PPORunConfig

    cfg = PPORunConfig(model=a.model, algo="grpo", mode=a.mode, episodes_per_update=a.episodes, group_size=a.group,
                       updates=a.updates, max_step_tokens=a.max_step_tokens, train_limit=a.problems,
                       **({"max_steps": a.max_steps} if a.max_steps else {}))
    print(f"TRL GRPOTrainer, {a.model}, {cfg.mode} (<= {cfg.max_steps} steps), {a.episodes} episodes/update in groups "
          f"of {a.group}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the start", flush=True)
    run = run_like_ppo(cfg)
    secs = [h["seconds_per_update"] for h in run.history]
    rewards = " ".join(f"{h['reward']:.3f}" for h in run.history)
    print(f"model load {run.load_seconds:.1f} s; {run.steps_per_update} optimizer steps/update; seconds per update "
          f"{' '.join(f'{s:.1f}' for s in secs)} (median {statistics.median(secs):.1f}); reward {rewards}; "
          f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
