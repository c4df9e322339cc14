"""Step-level PPO (and GRPO) on a trainable `Policy`, in one file, CleanRL-style.

An action is one reasoning step: the tokens the policy samples after the env's prompt, up to the
step delimiter. Its log-probability is the sum of its tokens' log-probs; its state value is the
policy's value head at the prompt's last token. One update is:

1. **rollout**: ``episodes_per_update`` episodes in a list of envs stepped together; at each round
   the prompts of the unfinished episodes are continued in one batched, seeded ``generate`` call
   (left padding). The reward of a step is the env's (its process reward, if one is configured, and
   the outcome reward from the env's *reward tests* at the last step, or `phi`). ``info["eval"]``
   (the judging tests) is only recorded, never rewarded, so the gap between the two pass rates is
   the reward-hacking gap, logged side by side;
2. **advantages**: PPO: GAE over the steps of each episode (``gamma``, ``gae_lambda``) from the
   value head, normalised over the batch. GRPO (``algo="grpo"``): episodes come in groups of
   ``group_size`` on the same problem; an episode's advantage is its return minus its group's mean,
   over the group's std, given to each of its steps; no value head;
3. **update**: ``update_epochs`` passes over shuffled minibatches of steps: the clipped surrogate
   ``-min(r A, clip(r, 1-eps, 1+eps) A)`` with ``r = exp(logp - logp_old)``, plus ``vf_coef`` times
   the value loss (PPO), plus ``kl_coef`` times the KL to the reference policy (the base model with
   the LoRA adapters disabled, or a frozen copy; k3 estimator per token, summed per step), minus
   ``ent_coef`` times the sampled-token entropy estimate; gradients accumulate over a minibatch's
   chunks of ``micro_batch`` steps, clipped to ``max_grad_norm``.

`train` runs updates with checkpoints every ``save_every`` updates (policy, optimizer, RNG states,
written atomically; a rerun resumes after the last one), TensorBoard scalars under ``RUN/tb``, and an
optional held-out evaluation every ``eval_every`` updates. Any env works whose observations are
dicts with a ``"prompt"`` string and whose actions are step texts (every O1Code env).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from o1code.agents.errors import AgentError
from o1code.agents.llm import problem_seed
from o1code.data.formats import STEP_END
from o1code.envs import EvalInfo
from o1code.models.policy import Policy

log = logging.getLogger(__name__)

ALGOS = ("ppo", "grpo")


@dataclass
class PPOConfig:
    """Every hyperparameter of a PPO/GRPO run."""

    algo: str = "ppo"  #: ppo (GAE, value head) or grpo (group-relative advantages, no value head)
    updates: int = 20  #: policy updates in the run
    episodes_per_update: int = 8  #: episodes collected per update (grpo: a multiple of group_size)
    group_size: int = 4  #: grpo: episodes per problem in one update
    max_step_tokens: int = 128  #: token limit of one step
    temperature: float = 1.0  #: sampling temperature of rollouts (1.0: the ratio's own distribution)
    top_p: float = 1.0
    gamma: float = 1.0  #: discount over steps
    gae_lambda: float = 0.95
    clip: float = 0.2  #: PPO's epsilon
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    kl_coef: float = 0.05  #: weight of the KL to the reference policy
    learning_rate: float = 1e-5
    update_epochs: int = 2
    minibatch_size: int = 8  #: steps per optimizer step
    micro_batch: int = 4  #: steps per forward pass (gradient accumulation within a minibatch)
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 5  #: checkpoint every this many updates
    eval_every: int = 0  #: held-out evaluation every this many updates (0: never)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise AgentError(f"algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.algo == "grpo" and (self.group_size < 2 or self.episodes_per_update % self.group_size):
            raise AgentError("grpo needs group_size >= 2 dividing episodes_per_update")
        if min(self.updates, self.episodes_per_update, self.update_epochs, self.minibatch_size,
               self.micro_batch, self.max_step_tokens) < 1:
            raise AgentError("updates, episodes_per_update, update_epochs, minibatch_size, micro_batch and "
                             "max_step_tokens must be >= 1")


@dataclass
class Step:
    """One action of a rollout and what the update needs of it."""

    episode: int
    prompt: str
    token_ids: list[int]
    text: str
    logprob: float  #: sum of the tokens' log-probs under the rollout policy
    ref_logprob: float  #: the same under the reference policy
    value: float
    reward: float = 0.0
    done: bool = False
    advantage: float = 0.0
    ret: float = 0.0


@dataclass
class Episode:
    """The outcome of one episode: its problem, return, and pass rates on both kinds of tests."""

    task_id: str | None
    ret: float = 0.0
    steps: int = 0
    reward_passed: bool = False  #: the answer passed the reward tests (what was optimised)
    eval_passed: bool = False  #: the answer passed the judging tests (never rewarded)


# ---------------------------------------------------------------- rollouts
@torch.no_grad()
def sample_steps(policy: Policy, prompts: Sequence[str], config: PPOConfig, seed: int) -> list[list[int]]:
    """One step per prompt: the token ids sampled after it (left-padded batch, seeded), cut after the
    step delimiter or EOS; each list holds at least one token."""
    tok = policy.tokenizer
    texts = [policy.format_prompt(p) for p in prompts]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        templ = policy.config.chat_template and getattr(tok, "chat_template", None)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templ).to(policy.device_)
    finally:
        tok.padding_side = side
    torch.manual_seed(seed)
    out = policy.model.generate(
        **enc, do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0,
        max_new_tokens=config.max_step_tokens, stop_strings=[STEP_END], tokenizer=tok,
        pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    stops = {tok.eos_token_id, tok.pad_token_id}
    result = []
    for ids in new:
        cut = len(ids)
        for i, t in enumerate(ids):
            if t in stops:
                cut = i + 1 if t == tok.eos_token_id else i
                break
            if STEP_END in tok.decode(ids[max(0, i - 8):i + 1]):
                cut = i + 1
                break
        result.append(ids[:max(cut, 1)])
    return result


def step_text(policy: Policy, ids: Sequence[int]) -> str:
    """The step's text: the decoded tokens before the delimiter (special tokens dropped)."""
    return policy.tokenizer.decode(ids, skip_special_tokens=True).split(STEP_END)[0]


@torch.no_grad()
def score_steps(policy: Policy, reference: Any, prompts: Sequence[str], ids: Sequence[Sequence[int]],
                micro_batch: int) -> tuple[list[float], list[float], list[float]]:
    """``(logprobs, reference logprobs, values)`` of each step (sums over its tokens), in chunks.
    `reference`: a frozen copy of the LM, or None for the policy's LM with its LoRA adapters disabled."""
    lp, ref, val = [], [], []
    for i in range(0, len(prompts), micro_batch):
        p, c = prompts[i:i + micro_batch], ids[i:i + micro_batch]
        lps, values = policy.logprobs_and_values(p, c)
        lp += [float(x.sum()) for x in lps]
        ref += [float(x.sum()) for x in reference_logprobs(policy, reference, p, c)]
        val += values.float().tolist()
    return lp, ref, val


def reference_logprobs(policy: Policy, reference: Any, prompts: Sequence[str], ids: Sequence[Sequence[int]]
                       ) -> list[torch.Tensor]:
    """Per-token log-probs under the reference policy: `reference` (a frozen LM) swapped in for the
    call, or, when None, the policy's own LM with its LoRA adapters disabled (no copy needed)."""
    if reference is None:
        with policy.model.disable_adapter():
            return policy.logprobs(prompts, ids)
    live, policy.model = policy.model, reference
    try:
        return policy.logprobs(prompts, ids)
    finally:
        policy.model = live


def make_reference(policy: Policy) -> Any:
    """None when the policy trains LoRA adapters (disabling them gives the reference for free), else a
    frozen copy of its LM as it is now."""
    import copy

    if hasattr(policy.model, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy.model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def rollout(policy: Policy, reference: Any, envs: Sequence[Any], config: PPOConfig, update: int,
            task_ids: Sequence[str | None]) -> tuple[list[Step], list[Episode]]:
    """Play one episode in each env (env i on ``task_ids[i]`` when given), all stepped together;
    `reference` as in `score_steps`."""
    policy.eval()
    obs, infos = zip(*(env.reset(seed=problem_seed(config.seed, f"{update}:{i}"),
                                 options={"task_id": t} if t else None)
                       for i, (env, t) in enumerate(zip(envs, task_ids))))
    obs, infos = list(obs), list(infos)
    episodes = [Episode(task_id=info.get("task_id")) for info in infos]
    steps: list[Step] = []
    active = list(range(len(envs)))
    rnd = 0
    while active:
        prompts = [obs[i]["prompt"] for i in active]
        ids = sample_steps(policy, prompts, config, problem_seed(config.seed, f"{update}:round{rnd}"))
        lp, ref, val = score_steps(policy, reference, prompts, ids, config.micro_batch)
        still = []
        for k, i in enumerate(active):
            text = step_text(policy, ids[k])
            obs[i], reward, terminated, truncated, info = envs[i].step(text)
            done = terminated or truncated
            steps.append(Step(i, prompts[k], ids[k], text, lp[k], ref[k], val[k], float(reward), done))
            ep = episodes[i]
            ep.ret += float(reward)
            ep.steps += 1
            if done:
                ep.reward_passed = info.get("verdict") == "passed"
                ev = EvalInfo.from_info(info)
                ep.eval_passed = bool(ev and ev.all_passed)
            else:
                still.append(i)
        active, rnd = still, rnd + 1
    return steps, episodes


# ---------------------------------------------------------------- advantages
def gae(steps: list[Step], gamma: float, lam: float) -> None:
    """Set each step's advantage and return by GAE over its episode's steps (in order)."""
    by_ep: dict[int, list[Step]] = {}
    for s in steps:
        by_ep.setdefault(s.episode, []).append(s)
    for ep in by_ep.values():
        last = 0.0
        for t in reversed(range(len(ep))):
            nxt = 0.0 if ep[t].done or t + 1 == len(ep) else ep[t + 1].value
            delta = ep[t].reward + gamma * nxt - ep[t].value
            last = delta + gamma * lam * (0.0 if ep[t].done else last)
            ep[t].advantage, ep[t].ret = last, last + ep[t].value


def group_advantages(steps: list[Step], episodes: list[Episode], group_size: int) -> None:
    """GRPO: an episode's advantage is (its return - its group's mean) / (the group's std + 1e-6),
    the group being the `group_size` consecutive episodes on one problem; every step gets it."""
    adv = {}
    for g in range(0, len(episodes), group_size):
        rets = np.array([e.ret for e in episodes[g:g + group_size]])
        for j, r in enumerate(rets):
            adv[g + j] = float((r - rets.mean()) / (rets.std() + 1e-6))
    for s in steps:
        s.advantage = s.ret = adv[s.episode]


# ---------------------------------------------------------------- update
def update_policy(policy: Policy, optimizer: torch.optim.Optimizer, steps: list[Step], config: PPOConfig,
                  rng: random.Random) -> dict[str, float]:
    """The PPO/GRPO update on `steps` (advantages set); returns the mean statistics of its minibatches."""
    policy.train()
    if config.algo == "ppo" and len(steps) > 1:
        a = np.array([s.advantage for s in steps])
        for s, v in zip(steps, (a - a.mean()) / (a.std() + 1e-8)):
            s.advantage = float(v)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "kl", "entropy", "clip_frac",
                                                     "approx_kl")}
    order = list(range(len(steps)))
    for _ in range(config.update_epochs):
        rng.shuffle(order)
        for mb in range(0, len(order), config.minibatch_size):
            batch = [steps[i] for i in order[mb:mb + config.minibatch_size]]
            optimizer.zero_grad()
            for mc in range(0, len(batch), config.micro_batch):
                chunk = batch[mc:mc + config.micro_batch]
                lps, values = policy.logprobs_and_values([s.prompt for s in chunk], [s.token_ids for s in chunk])
                new = torch.stack([x.sum() for x in lps])
                old = torch.tensor([s.logprob for s in chunk], device=new.device)
                adv = torch.tensor([s.advantage for s in chunk], device=new.device)
                ratio = torch.exp(new - old)
                pg = -torch.min(ratio * adv, ratio.clamp(1 - config.clip, 1 + config.clip) * adv).mean()
                ref = torch.tensor([s.ref_logprob for s in chunk], device=new.device)
                # k3 on the step's summed log-probs: >= 0, unbiased for KL(pi || ref) at the step level
                kl = (torch.exp(ref - new) - (ref - new) - 1).mean()
                ent = -torch.stack([x.mean() for x in lps]).mean()
                loss = pg + config.kl_coef * kl - config.ent_coef * ent
                v_loss = torch.zeros((), device=new.device)
                if config.algo == "ppo":
                    rets = torch.tensor([s.ret for s in chunk], device=new.device)
                    v_loss = 0.5 * ((values.float() - rets) ** 2).mean()
                    loss = loss + config.vf_coef * v_loss
                (loss * len(chunk) / len(batch)).backward()
                with torch.no_grad():
                    stats["policy_loss"].append(float(pg))
                    stats["value_loss"].append(float(v_loss))
                    stats["kl"].append(float(kl))
                    stats["entropy"].append(float(ent))
                    stats["clip_frac"].append(float(((ratio - 1).abs() > config.clip).float().mean()))
                    stats["approx_kl"].append(float(((ratio - 1) - torch.log(ratio)).mean()))
            torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], config.max_grad_norm)
            optimizer.step()
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


def explained_variance(steps: Sequence[Step]) -> float:
    """1 - Var(returns - values) / Var(returns) over the rollout's steps (nan when returns are constant)."""
    rets = np.array([s.ret for s in steps])
    vals = np.array([s.value for s in steps])
    var = rets.var()
    return float("nan") if var == 0 else float(1 - (rets - vals).var() / var)


# ---------------------------------------------------------------- the loop
@dataclass
class PPOResult:
    """``history``: one dict of scalars per update (those written to TensorBoard); ``final_dir``: the
    trained policy (`Policy.load`)."""

    history: list[dict[str, float]] = field(default_factory=list)
    final_dir: Path | None = None


def _save(run: Path, policy: Policy, optimizer: Any, update: int, rng: random.Random,
          history: list[dict]) -> None:
    tmp = run / ".checkpoint-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp / "policy")
    torch.save({"optimizer": optimizer.state_dict(), "update": update, "rng": rng.getstate(),
                "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(history))
    old = run / "checkpoint"
    if old.exists():
        shutil.rmtree(run / ".checkpoint-old", ignore_errors=True)
        os.replace(old, run / ".checkpoint-old")
    os.replace(tmp, old)  # the new checkpoint is complete before it takes the name
    shutil.rmtree(run / ".checkpoint-old", ignore_errors=True)


def train(policy: Policy, make_env: Callable[[], Any], config: PPOConfig, run_dir: str | os.PathLike,
          task_ids: Sequence[str] | None = None, evaluate: Callable[[Policy], dict[str, float]] | None = None,
          progress: bool = True) -> PPOResult:
    """Train `policy` for ``config.updates`` updates on envs from `make_env`, cycling over `task_ids`
    (None: each env's own problem choice). Resumes from ``RUN/checkpoint`` (the policy there replaces
    `policy`'s weights). `evaluate(policy) -> scalars` runs every ``eval_every`` updates (e.g. held-out
    Pass@1). Returns the history and writes ``RUN/final`` and ``RUN/history.json``."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from o1code.runs import pin_config, write_atomic

    run = Path(run_dir)
    pin_config(run, asdict(config), ignore=("updates", "save_every", "eval_every"))  # more updates: resume, go on
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    start, history = 0, []
    reference = make_reference(policy)  # before a resume loads trained weights: the starting policy
    if (run / "checkpoint" / "state.pt").is_file():
        saved = Policy.load(run / "checkpoint" / "policy", device=str(policy.device_))
        policy.load_state_dict(saved.state_dict())
        state = torch.load(run / "checkpoint" / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start, history = state["update"], json.loads((run / "checkpoint" / "history.json").read_text())
        log.info("resuming %s after update %d", run, start)
    envs = [make_env() for _ in range(config.episodes_per_update)]
    writer = SummaryWriter(str(run / "tb"))
    try:
        bar = tqdm(range(start, config.updates), initial=start, total=config.updates, disable=not progress,
                   desc=config.algo)
        for update in bar:
            t0 = time.perf_counter()
            if task_ids:
                per = config.group_size if config.algo == "grpo" else 1
                n = config.episodes_per_update // per
                chosen = [task_ids[(update * n + j) % len(task_ids)] for j in range(n)]
                tasks: list[str | None] = [t for t in chosen for _ in range(per)]
            else:
                tasks = [None] * config.episodes_per_update
            steps, episodes = rollout(policy, reference, envs, config, update, tasks)
            if config.algo == "grpo":
                group_advantages(steps, episodes, config.group_size)
            else:
                gae(steps, config.gamma, config.gae_lambda)
            ev = explained_variance(steps) if config.algo == "ppo" else float("nan")
            stats = update_policy(policy, optimizer, steps, config, rng)
            seconds = time.perf_counter() - t0
            row = {"update": update + 1, "reward": float(np.mean([e.ret for e in episodes])),
                   "reward_test_pass": float(np.mean([e.reward_passed for e in episodes])),
                   "hidden_test_pass": float(np.mean([e.eval_passed for e in episodes])),
                   "steps_per_episode": float(np.mean([e.steps for e in episodes])),
                   "explained_variance": ev, "seconds_per_update": seconds,
                   "tokens_per_s": sum(len(s.token_ids) for s in steps) / seconds, **stats}
            if evaluate and config.eval_every and (update + 1) % config.eval_every == 0:
                row.update({f"eval/{k}": v for k, v in evaluate(policy).items()})
            history.append(row)
            for k, v in row.items():
                if k != "update" and not (isinstance(v, float) and math.isnan(v)):
                    writer.add_scalar(k if "/" in k else f"train/{k}", v, update + 1)
            writer.flush()
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.4f}")
            if (update + 1) % config.save_every == 0 or update + 1 == config.updates:
                _save(run, policy, optimizer, update + 1, rng, history)
    finally:
        writer.close()
        for env in envs:
            env.close()
    final = policy.save(run / "final")
    write_atomic(run / "history.json", json.dumps(history, indent=2))
    return PPOResult(history=history, final_dir=final)


__all__ = ["ALGOS", "Episode", "PPOConfig", "PPOResult", "Step", "explained_variance", "gae", "group_advantages",
           "make_reference", "reference_logprobs", "rollout", "sample_steps", "score_steps", "train", "update_policy"]
