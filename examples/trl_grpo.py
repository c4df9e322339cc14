"""GRPO with TRL on O1Code-MBPP: o1code gives the prompts and the sandboxed rewards, TRL trains.

    python examples/trl_grpo.py                          # the tiny random model, CPU, a minute (plumbing only)
    python examples/trl_grpo.py --model default --lora   # the embedded Qwen2.5-Coder-0.5B (dequantized GGUF); GPU
    python examples/trl_grpo.py --model Qwen/Qwen2.5-Coder-1.5B-Instruct --steps 200 --lora

TRL logs ``rewards/o1code_visible_tests/mean`` (the reward: the visible test) beside
``rewards/o1code_judging_tests/mean`` (weight 0: all of MBPP's tests): the gap is the reward hacking.
"""

import argparse
import tempfile

import torch

from trl import GRPOConfig, GRPOTrainer

from o1code.data import load_dataset
from o1code.integrations.trl import O1CodeTask
from o1code.models import build_tiny_model, load_causal_lm, lora_config

p = argparse.ArgumentParser()
p.add_argument("--model", default="tiny", help="tiny, default, or any o1code model spec / hub id")
p.add_argument("--steps", type=int, default=2)
p.add_argument("--problems", type=int, default=8, help="the first N MBPP train problems")
p.add_argument("--lora", action="store_true")
p.add_argument("--out", default="runs/trl-grpo")
a = p.parse_args()

spec = str(build_tiny_model(tempfile.mkdtemp())) if a.model == "tiny" else a.model
model, tokenizer = load_causal_lm(spec)
tiny = a.model == "tiny"  # the tiny model's 2048 positions hold no worked examples
problems = load_dataset("mbpp", "train")[: a.problems]
with O1CodeTask(problems=problems, mode="direct", examples=not tiny, workers=2) as task:
    args = GRPOConfig(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=32 if tiny else 256, logging_steps=1, report_to=["tensorboard"],
                      reward_weights=task.reward_weights, learning_rate=1e-5, seed=0,
                      use_cpu=not torch.cuda.is_available())
    trainer = GRPOTrainer(model, reward_funcs=task.reward_funcs, args=args, processing_class=tokenizer,
                          train_dataset=task.dataset(), peft_config=lora_config() if a.lora else None)
    trainer.train()
