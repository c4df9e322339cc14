"""`PPOConfig`: every hyperparameter of a PPO/GRPO run, in a module without torch, so that the command
line and config layers (`o1code.pipeline.ppo.PPORunConfig` extends it) build without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from o1code.agents.errors import AgentError

ALGOS = ("ppo", "grpo")
RATIOS = ("step", "token")
ENGINES = ("auto", "transformers", "llamacpp", "vllm")


@dataclass
class PPOConfig:
    """Every hyperparameter of a PPO/GRPO run (`o1code.agents.ppo.train`).

    Attributes:
        algo: ppo (GAE with the value head) or grpo (group-relative advantages over group_size episodes of a problem).
        updates: Policy updates in the run (a rerun with more goes on from the last checkpoint).
        episodes_per_update: Episodes collected per update (grpo: a multiple of group_size).
        group_size: grpo: episodes per problem in one update.
        max_step_tokens: Token limit of one step in rollouts.
        temperature: Rollout sampling temperature (1.0: the policy's own distribution, as the ratio assumes).
        top_p: Rollout nucleus sampling (1.0: off, as the ratio assumes).
        gamma: Discount over steps.
        gae_lambda: GAE's lambda.
        clip: PPO's clipping epsilon (the lower one, 1 - clip, when clip_high is set).
        clip_high: Upper clipping epsilon (1 + clip_high; DAPO's clip-higher); None: clip.
        ratio: step (one ratio per step: the product of its tokens', loss averaged over steps) or token
            (one ratio per token, loss averaged over the minibatch's tokens: DAPO / Dr. GRPO).
        dynamic_sampling: grpo: drop groups whose rewards are all equal (no gradient) and roll out groups
            on further problems in their place (DAPO), at most three refills per update.
        tis_cap: Truncated importance sampling: weight each token's (ratio=step: each step's) loss by
            min(pi_trainer / pi_engine, tis_cap), correcting the engine-trainer mismatch (0: off).
        engine: What samples the rollouts: auto (for a LoRA policy: on the CPU llamacpp when its base is a
            GGUF and llama-cpp-python is installed, on a GPU vllm when its base is a hub model or directory and
            vLLM is installed; else transformers), transformers, llamacpp or vllm.
        prompts_per_call: llamacpp/vllm: each round's prompts go to the engine in calls of at most this many
            (None: one call). The calls, not the machines, fix the samples: rollout workers on Ray
            (`o1code.distributed.rollout`) serve the same calls and draw the same samples.
        vf_coef: Weight of the value loss.
        ent_coef: Weight of the entropy bonus.
        kl_coef: Weight of the KL to the reference policy (0: no reference pass at all).
        learning_rate: AdamW step size.
        update_epochs: Passes over the rollout's steps.
        minibatch_size: Steps per optimizer step.
        micro_batch: Steps per forward pass (gradient accumulation within a minibatch).
        max_grad_norm: Gradient clipping.
        seed: The seed of every random choice.
        save_every: Checkpoint every this many updates.
        eval_every: Held-out evaluation every this many updates (0: never).
    """

    algo: str = "ppo"
    updates: int = 20
    episodes_per_update: int = 8
    group_size: int = 4
    max_step_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip: float = 0.2
    # GRPO practice, measured (bench/bench_grpo_options.py: with all four, a sparse binary toy reward is
    # reached in 15 updates (median of 2 seeds); with none, not in 30; dynamic sampling alone 22.5)
    clip_high: float | None = 0.28
    ratio: str = "token"
    dynamic_sampling: bool = True
    tis_cap: float = 2.0
    engine: str = "auto"
    prompts_per_call: int | None = None
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    kl_coef: float = 0.0
    learning_rate: float = 1e-5
    update_epochs: int = 2
    minibatch_size: int = 8
    micro_batch: int = 4
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 5
    eval_every: int = 0

    def __post_init__(self) -> None:
        for name, value, choices in (("algo", self.algo, ALGOS), ("ratio", self.ratio, RATIOS),
                                     ("engine", self.engine, ENGINES)):
            if value not in choices:
                raise AgentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.algo == "grpo" and (self.group_size < 2 or self.episodes_per_update % self.group_size):
            raise AgentError("grpo needs group_size >= 2 dividing episodes_per_update")
        if min(self.updates, self.episodes_per_update, self.update_epochs, self.minibatch_size,
               self.micro_batch, self.max_step_tokens) < 1:
            raise AgentError("updates, episodes_per_update, update_epochs, minibatch_size, micro_batch and "
                             "max_step_tokens must be >= 1")
        if self.prompts_per_call is not None and self.prompts_per_call < 1:
            raise AgentError(f"prompts_per_call must be >= 1 (or None: one call), got {self.prompts_per_call}")
        if self.clip <= 0 or (self.clip_high is not None and self.clip_high <= 0) or self.tis_cap < 0:
            raise AgentError("clip and clip_high must be > 0 and tis_cap >= 0")

    @property
    def clip_range(self) -> tuple[float, float]:
        """``(1 - clip, 1 + clip_high)``: where the ratio is clipped."""
        return 1 - self.clip, 1 + (self.clip if self.clip_high is None else self.clip_high)


__all__ = ["ALGOS", "ENGINES", "PPOConfig", "RATIOS"]
