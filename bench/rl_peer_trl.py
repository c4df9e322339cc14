"""The peer of ``o1code ppo --algo grpo``: TRL's `GRPOTrainer` on the same model, problems, groups, prompt and
reward, timed per update (`run_trl_grpo`; ``bench/bench_rl.py --peer trl`` runs it beside ours).

    .venv/bin/python bench/rl_peer_trl.py [--model default] [--updates 2] [--problems 4] [--episodes 8] [--group 4]

How an o1code GRPO update maps onto TRL's settings (both LoRA r16/alpha32 on every linear layer but the head,
the reference being the adapters disabled; the prompt is the env's raw prompt with the worked examples,
``chat_template=False`` as ``o1code ppo`` uses it; the reward is `O1CodeTask`'s, i.e. the env's):

- ``episodes_per_update`` completions, ``group_size`` per problem -> ``num_generations = group_size`` and a
  generation batch of ``episodes_per_update`` (``steps_per_generation = episodes / micro_batch``);
- ``update_epochs`` passes over the rollout -> ``num_iterations`` (TRL reuses a generation that many times);
- optimizer steps of ``minibatch_size`` steps, forward passes of ``micro_batch`` -> ``gradient_accumulation_steps
  = minibatch_size / micro_batch`` of ``per_device_train_batch_size = micro_batch``;
- ``kl_coef`` -> ``beta``, ``clip`` -> ``epsilon``, ``max_step_tokens`` -> ``max_completion_length``, same
  learning rate, temperature, top_p, grad clipping and seed.

So one o1code update is ``update_epochs * episodes / minibatch_size`` TRL optimizer steps, and this module's
seconds per update are the wall time of those steps, generation included. Direct mode stops a completion at
``<Step_End>`` as o1code's rollouts do: TRL's transformers path cannot (its GenerationConfig's stop strings need
the tokenizer at `generate`, which TRL does not pass), so the tokenizer is handed to the model's `generate` here;
multi-step modes generate the whole trace in one completion, stopped by EOS or the token limit.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

from transformers import TrainerCallback

from o1code.data import Problem
from o1code.data.formats import STEP_END


@dataclass
class TRLRun:
    """What `run_trl_grpo` measured, one entry per update: wall seconds (generation, reward and optimizer
    steps), seconds inside the model's `generate` and inside the reward functions (the rest is TRL's log-prob
    passes and the optimizer steps), the mean reward and judging-test pass fraction of the completions; and
    the model's load time."""

    update_seconds: list[float] = field(default_factory=list)
    generate_seconds: list[float] = field(default_factory=list)
    reward_seconds: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    judging: list[float] = field(default_factory=list)
    load_seconds: float = 0.0
    steps_per_update: int = 0
    clock: dict = field(default_factory=lambda: {"generate": 0.0, "reward": 0.0})

    def row(self, i: int) -> str:
        """Update `i` in one line."""
        total, gen, rew = self.update_seconds[i], self.generate_seconds[i], self.reward_seconds[i]
        return (f"update {i + 1}: {total:.1f} s (generate {gen:.1f}, reward {rew:.1f}, log-probs + optimizer "
                f"{total - gen - rew:.1f}); reward {self.rewards[i]:.3f}, judging-test pass fraction {self.judging[i]:.3f}")


class _UpdateClock(TrainerCallback):
    """Closes an update every `run.steps_per_update` optimizer steps: its wall time and the clock's phases,
    printed as it ends (a long run shows its figures as it goes)."""

    def __init__(self, run: TRLRun) -> None:
        self.run, self.t0 = run, 0.0

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.run.steps_per_update == 0:
            now, run = time.perf_counter(), self.run
            run.update_seconds.append(now - self.t0)
            run.generate_seconds.append(run.clock["generate"])
            run.reward_seconds.append(run.clock["reward"])
            run.clock.update(generate=0.0, reward=0.0)
            self.t0 = now
            print(run.row(len(run.update_seconds) - 1), flush=True)


def run_trl_grpo(model_spec: str, problems: Sequence[Problem], *, group_size: int = 4, episodes_per_update: int = 8,
                 updates: int = 2, mode: str = "direct", max_steps: int | None = None, show_tests: str = "first",
                 tests: str = "visible", reward: str = "binary", max_step_tokens: int = 128,
                 learning_rate: float = 5e-5, kl_coef: float = 0.05, clip: float = 0.2, update_epochs: int = 2,
                 minibatch_size: int = 8, micro_batch: int = 4, temperature: float = 1.0, top_p: float = 1.0,
                 max_grad_norm: float = 1.0, lora_r: int = 16, lora_alpha: int = 32, chat_template: bool = False,
                 gradient_checkpointing: bool = False, seed: int = 0, workers: int = 2, output_dir: str | None = None) -> TRLRun:
    """Train `updates` GRPO updates with TRL on `problems` (used in this order, ``episodes_per_update /
    group_size`` per update, cycled) and time them; the settings have `o1code.pipeline.ppo.PPORunConfig`'s
    names and defaults (see the module docstring for the mapping). `gradient_checkpointing`: TRL's default is
    True (activations recomputed in the backward pass); False, as o1code's trainer, by default here."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from o1code.integrations.trl import O1CodeTask
    from o1code.models import load_causal_lm, lora_config

    if episodes_per_update % group_size or episodes_per_update % micro_batch or minibatch_size % micro_batch:
        raise ValueError("episodes_per_update must be a multiple of group_size and micro_batch, and "
                         "minibatch_size a multiple of micro_batch")
    run = TRLRun(steps_per_update=update_epochs * max(1, episodes_per_update // minibatch_size))
    t = time.perf_counter()
    model, tokenizer = load_causal_lm(model_spec)
    run.load_seconds = time.perf_counter() - t
    direct = mode == "direct"
    generate = functools.partial(model.generate, tokenizer=tokenizer) if direct else model.generate

    def timed_generate(*a, **kw):  # direct: stop at <Step_End> like o1code's rollouts (see the module docstring)
        t = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            run.clock["generate"] += time.perf_counter() - t

    model.generate = timed_generate
    per_update = episodes_per_update // group_size
    order = [problems[i % len(problems)] for i in range(updates * per_update)]
    with O1CodeTask(problems=list({p.task_id: p for p in order}.values()), mode=mode, max_steps=max_steps,
                    show_tests=show_tests, tests=tests, reward=reward, chat=chat_template, workers=workers) as task:
        rows = {r["task_id"]: r for r in task.dataset()}
        from datasets import Dataset

        data = Dataset.from_list([rows[p.task_id] for p in order])  # one row per group, in the run's order
        graded = task.reward

        def reward_fn(completions, **kw):  # o1code's reward, recording each update's means
            t = time.perf_counter()
            out = graded(completions, **kw)
            judged = task.judging(completions, **kw)
            run.clock["reward"] += time.perf_counter() - t
            run.rewards.append(sum(out) / len(out))
            run.judging.append(sum(judged) / len(judged))
            return out

        reward_fn.__name__ = graded.__name__
        args = GRPOConfig(
            output_dir=output_dir or tempfile.mkdtemp(prefix="trl-grpo-"), max_steps=updates * run.steps_per_update,
            num_generations=group_size, per_device_train_batch_size=micro_batch,
            gradient_accumulation_steps=minibatch_size // micro_batch,
            steps_per_generation=episodes_per_update // micro_batch, num_iterations=update_epochs,
            max_completion_length=max_step_tokens * (1 if direct else task.env.max_steps), beta=kl_coef,
            epsilon=clip, learning_rate=learning_rate, temperature=temperature, top_p=top_p,
            max_grad_norm=max_grad_norm, seed=seed, shuffle_dataset=False, logging_steps=1, report_to=[],
            save_strategy="no", gradient_checkpointing=gradient_checkpointing, use_cpu=not torch.cuda.is_available(), bf16=False,
            generation_kwargs={"stop_strings": [STEP_END]} if direct else None,
            reward_weights=[1.0] + ([1.0] if task.prm else []))
        trainer = GRPOTrainer(model, reward_funcs=[reward_fn] + ([task.prm] if task.prm else []), args=args,
                              processing_class=tokenizer, train_dataset=data,
                              peft_config=lora_config(r=lora_r, alpha=lora_alpha),
                              callbacks=[_UpdateClock(run)])
        trainer.train()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="an o1code model spec (default: the embedded GGUF, dequantized)")
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--problems", type=int, default=4, help="the first N MBPP train problems (known-bad ones left out)")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per update")
    ap.add_argument("--group", type=int, default=4, help="group size")
    ap.add_argument("--mode", default="direct")
    ap.add_argument("--max-step-tokens", type=int, default=128)
    a = ap.parse_args()
    from o1code.data import load_dataset

    problems = [p for p in load_dataset("mbpp", "train") if not p.known_bad][: a.problems]
    load = os.getloadavg()[0]
    print(f"TRL GRPOTrainer, {a.model}, {a.mode}, {a.episodes} episodes/update in groups of {a.group}, "
          f"{a.max_step_tokens} tokens at most, {os.cpu_count()} CPUs, load {load:.2f} at the start", flush=True)
    run = run_trl_grpo(a.model, problems, group_size=a.group, episodes_per_update=a.episodes, updates=a.updates,
                       mode=a.mode, max_step_tokens=a.max_step_tokens)
    print(f"model load {run.load_seconds:.1f} s; {run.steps_per_update} optimizer steps/update; seconds per update: "
          f"{' '.join(f'{s:.1f}' for s in run.update_seconds)} (median {statistics.median(run.update_seconds):.1f}); "
          f"load {os.getloadavg()[0]:.2f} at the end")
    print(f"reward per update: {' '.join(f'{r:.3f}' for r in run.rewards)}; judging-test pass fraction: "
          f"{' '.join(f'{r:.3f}' for r in run.judging)}")


if __name__ == "__main__":
    main()
