"""Step-level PPO (and GRPO) on a trainable `Policy`, in one file, CleanRL-style.

An action is one reasoning step: the tokens the policy samples after the env's prompt, up to the
step delimiter. Its log-probability is the sum of its tokens' log-probs; its state value is the
policy's value head at the prompt's last token. One update is:

1. **rollout**: ``episodes_per_update`` episodes in a list of envs stepped together; at each round
   a rollout engine (`o1code.agents.rollout`: transformers, llama.cpp or vLLM) samples the next step
   of every unfinished episode in one seeded call, with each token's log-prob under the engine; the
   trainer recomputes them (the ratio's "old" log-probs) for the steps the update keeps, once dynamic
   sampling has dropped the rest (a dropped group costs no trainer pass). The reward of a step is the env's (its
   process reward, if one is configured, and the outcome reward from the env's *reward tests* at the
   last step, or `phi`). ``info["eval"]`` (the judging tests) is only recorded, never rewarded, so the
   gap between the two pass rates is the reward-hacking gap, logged side by side. GRPO's dynamic
   sampling drops groups whose returns are all equal and rolls out groups on further problems;
2. **advantages**: PPO: GAE over the steps of each episode (``gamma``, ``gae_lambda``) from the
   value head, normalised over the batch. GRPO (``algo="grpo"``): episodes come in groups of
   ``group_size`` on the same problem; an episode's advantage is its return minus its group's mean,
   over the group's std, given to each of its steps; no value head;
3. **update**: ``update_epochs`` passes over shuffled minibatches of steps: the clipped surrogate
   ``-min(r A, clip(r, 1-clip, 1+clip_high) A)`` with ``r = exp(logp - logp_old)`` per step or per
   token (``ratio``), weighted by the truncated importance ratio ``min(pi_old / pi_engine, tis_cap)``
   (the engine-trainer mismatch), plus ``vf_coef`` times the value loss (PPO), plus ``kl_coef`` times
   the KL to the reference policy (the base model with the LoRA adapters disabled, or a frozen copy;
   k3 estimator; none computed at 0), minus ``ent_coef`` times the sampled-token entropy estimate;
   gradients accumulate over a minibatch's chunks of ``micro_batch`` steps, clipped to
   ``max_grad_norm``. Then the engine receives the new weights (``sync``).

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
from o1code.agents.ppo_config import ALGOS, PPOConfig
from o1code.agents.rollout import RolloutEngine, make_engine, make_reference, reference_logprobs, sample_each
from o1code.data.formats import STEP_END
from o1code.envs import EvalInfo
from o1code.models.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One action of a rollout and what the update needs of it."""

    episode: int
    prompt: str
    token_ids: list[int]
    text: str
    logprobs: list[float]  #: each token's log-prob under the trainer's policy before the update (the ratio's "old")
    engine_logprobs: list[float]  #: the same under the engine that sampled it (the correction's denominator)
    ref_logprobs: list[float] | None  #: the same under the reference policy (None: kl_coef 0)
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
def step_text(policy: Policy, ids: Sequence[int]) -> str:
    """The step's text: the decoded tokens before the delimiter (special tokens dropped)."""
    return policy.tokenizer.decode(ids, skip_special_tokens=True).split(STEP_END)[0]


@torch.no_grad()
def score_steps(policy: Policy, reference: Any, prompts: Sequence[str], ids: Sequence[Sequence[int]],
                micro_batch: int, kl: bool = True) -> tuple[list[list[float]], list[list[float]] | None, list[float]]:
    """``(logprobs, reference logprobs or None when not kl, values)`` of each step, per token, in chunks.
    `reference`: a frozen copy of the LM, or None for the policy's LM with its LoRA adapters disabled."""
    lp, ref, val = [], [], []
    for i in range(0, len(prompts), micro_batch):
        p, c = prompts[i:i + micro_batch], ids[i:i + micro_batch]
        lps, values = policy.logprobs_and_values(p, c)
        lp += [x.float().tolist() for x in lps]
        if kl:
            ref += [x.float().tolist() for x in reference_logprobs(policy, reference, p, c)]
        val += values.float().tolist()
    return lp, (ref if kl else None), val


def rollout(policy: Policy, engine: RolloutEngine, envs: Sequence[Any], config: PPOConfig,
            tag: str, task_ids: Sequence[str | None], timing: dict[str, float] | None = None
            ) -> tuple[list[Step], list[Episode]]:
    """Play one episode in each env (env i on ``task_ids[i]`` when given), all stepped together: the
    engine samples each round's steps. The steps come back unscored (`score` fills the trainer's
    log-probs and values) so that dynamic sampling drops groups before the trainer spends a forward
    pass on them. `tag` keys the seeds (the update, and the draw within it); `timing` accumulates
    seconds of sample and env."""
    policy.eval()
    clock = timing if timing is not None else {}
    obs, infos = zip(*(env.reset(seed=problem_seed(config.seed, f"{tag}:{i}"),
                                 options={"task_id": t} if t else None)
                       for i, (env, t) in enumerate(zip(envs, task_ids))))
    obs, infos = list(obs), list(infos)
    episodes = [Episode(task_id=info.get("task_id")) for info in infos]
    steps: list[Step] = []
    active = list(range(len(envs)))
    rnd = 0
    while active:
        prompts = [obs[i]["prompt"] for i in active]
        t = time.perf_counter()
        samples = sample_each(engine, prompts, problem_seed(config.seed, f"{tag}:round{rnd}"), config.max_step_tokens,
                              config.temperature, config.top_p)
        ids = [s.token_ids for s in samples]
        versions = {s.version for s in samples}
        if len(versions) > 1:  # one update's steps come from one set of weights
            raise AgentError(f"the {engine.name} engine mixed weight versions {sorted(versions)} in one round")
        t, clock["sample"] = time.perf_counter(), clock.get("sample", 0.0) + time.perf_counter() - t
        still = []
        for k, i in enumerate(active):
            text = step_text(policy, ids[k])
            obs[i], reward, terminated, truncated, info = envs[i].step(text)
            done = terminated or truncated
            steps.append(Step(i, prompts[k], ids[k], text, [], samples[k].logprobs, None, 0.0, float(reward), done))
            ep = episodes[i]
            ep.ret += float(reward)
            ep.steps += 1
            if done:
                ep.reward_passed = info.get("verdict") == "passed"
                ev = EvalInfo.from_info(info)
                ep.eval_passed = bool(ev and ev.all_passed)
            else:
                still.append(i)
        clock["env"] = clock.get("env", 0.0) + time.perf_counter() - t
        active, rnd = still, rnd + 1
    return steps, episodes


def score(policy: Policy, reference: Any, steps: Sequence[Step], config: PPOConfig,
          timing: dict[str, float] | None = None) -> None:
    """Fill each step's trainer log-probs (the ratio's "old"), reference log-probs (kl_coef > 0) and
    value (`score_steps`), in place; `timing` accumulates the seconds under ``score``."""
    t = time.perf_counter()
    policy.eval()
    lp, ref, val = score_steps(policy, reference, [s.prompt for s in steps], [s.token_ids for s in steps],
                               config.micro_batch, kl=config.kl_coef > 0)
    for k, s in enumerate(steps):
        s.logprobs, s.ref_logprobs, s.value = lp[k], (ref[k] if ref else None), val[k]
    if timing is not None:
        timing["score"] = timing.get("score", 0.0) + time.perf_counter() - t


def informative(steps: list[Step], episodes: list[Episode], group_size: int) -> tuple[list[Step], list[Episode]]:
    """Dynamic sampling (DAPO): the groups whose returns are not all equal (an all-equal group has zero
    advantage everywhere: no gradient), episodes renumbered in order."""
    keep = [g for g in range(0, len(episodes), group_size)
            if len({e.ret for e in episodes[g:g + group_size]}) > 1]
    new = {g + j: k * group_size + j for k, g in enumerate(keep) for j in range(group_size)}
    eps = [episodes[i] for i in sorted(new)]
    kept = [s for s in steps if s.episode in new]
    for s in kept:
        s.episode = new[s.episode]
    return kept, eps


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
def tis_weights(trainer: torch.Tensor, engine: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025): ``min(pi_trainer / pi_engine, cap)`` from log-probs,
    detached (a weight on the loss, not a path for gradients); ones when cap is 0 (no correction)."""
    if cap <= 0:
        return torch.ones_like(trainer)
    return torch.exp(trainer - engine).clamp(max=cap).detach()


def engine_stats(steps: Sequence[Step], config: PPOConfig) -> dict[str, float]:
    """The engine-trainer mismatch of a rollout: the mean importance ratio pi_trainer / pi_engine and the
    share of them truncated at ``tis_cap`` (per token or per step, as ``ratio``), and the per-token
    KL(engine || trainer) (k3 estimator on the engine's samples)."""
    d = torch.tensor([a - b for s in steps for a, b in zip(s.logprobs, s.engine_logprobs)], dtype=torch.float64)
    if not len(d):
        return {}
    units = d if config.ratio == "token" else torch.tensor(
        [sum(s.logprobs) - sum(s.engine_logprobs) for s in steps], dtype=torch.float64)
    r = torch.exp(units)
    cap = config.tis_cap
    return {"tis_ratio": float(r.mean()), "tis_truncated": float((r > cap).double().mean()) if cap else 0.0,
            "engine_kl": float((torch.exp(d) - d - 1).mean())}


def update_policy(policy: Policy, optimizer: torch.optim.Optimizer, steps: list[Step], config: PPOConfig,
                  rng: random.Random) -> dict[str, float]:
    """The PPO/GRPO update on `steps` (advantages set); returns the mean statistics of its minibatches.

    ``ratio="step"``: one ratio per step (its tokens' product), the loss a mean over the minibatch's
    steps; ``"token"``: one per token, the loss a mean over the minibatch's tokens (DAPO). Each unit's
    surrogate is weighted by `tis_weights` of the trainer's "old" log-prob against the engine's."""
    policy.train()
    if config.algo == "ppo" and len(steps) > 1:
        a = np.array([s.advantage for s in steps])
        for s, v in zip(steps, (a - a.mean()) / (a.std() + 1e-8)):
            s.advantage = float(v)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "kl", "entropy", "clip_frac",
                                                     "approx_kl")}
    lo, hi = config.clip_range
    per_token = config.ratio == "token"
    order = list(range(len(steps)))
    for _ in range(config.update_epochs):
        rng.shuffle(order)
        for mb in range(0, len(order), config.minibatch_size):
            batch = [steps[i] for i in order[mb:mb + config.minibatch_size]]
            units = sum(len(s.token_ids) for s in batch) if per_token else len(batch)
            optimizer.zero_grad()
            for mc in range(0, len(batch), config.micro_batch):
                chunk = batch[mc:mc + config.micro_batch]
                lps, values = policy.logprobs_and_values([s.prompt for s in chunk], [s.token_ids for s in chunk])
                dev = values.device

                def per_unit(rows: Sequence[Sequence[float]]) -> torch.Tensor:
                    if per_token:
                        return torch.tensor([x for r in rows for x in r], device=dev)
                    return torch.tensor([sum(r) for r in rows], device=dev)

                new = torch.cat(lps) if per_token else torch.stack([x.sum() for x in lps])
                old = per_unit([s.logprobs for s in chunk])
                adv = torch.tensor([s.advantage for s in chunk for _ in range(len(s.token_ids) if per_token else 1)],
                                   device=dev)
                ratio = torch.exp(new - old)
                w = tis_weights(old, per_unit([s.engine_logprobs for s in chunk]), config.tis_cap)
                surrogate = -torch.min(ratio * adv, ratio.clamp(lo, hi) * adv) * w
                loss = surrogate.sum() / units
                kl = torch.full((), float("nan"))
                if config.kl_coef > 0:
                    ref = per_unit([s.ref_logprobs or [] for s in chunk])
                    kl_units = torch.exp(ref - new) - (ref - new) - 1  # k3: >= 0, unbiased for KL(pi || ref)
                    loss = loss + config.kl_coef * kl_units.sum() / units
                    kl = kl_units.mean()
                ent = -torch.stack([x.mean() for x in lps]).mean()
                loss = loss - config.ent_coef * ent * len(chunk) / len(batch)
                v_loss = torch.zeros((), device=dev)
                if config.algo == "ppo":
                    rets = torch.tensor([s.ret for s in chunk], device=dev)
                    v_loss = 0.5 * ((values.float() - rets) ** 2).mean()
                    loss = loss + config.vf_coef * v_loss * len(chunk) / len(batch)
                loss.backward()
                with torch.no_grad():
                    stats["policy_loss"].append(float(surrogate.mean()))
                    stats["value_loss"].append(float(v_loss))
                    stats["kl"].append(float(kl))
                    stats["entropy"].append(float(ent))
                    stats["clip_frac"].append(float(((ratio < lo) | (ratio > hi)).float().mean()))
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


def _save(run: Path, policy: Policy, optimizer: Any, update: int, rng: random.Random, history: list[dict],
          cursor: int) -> None:
    tmp = run / ".checkpoint-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp / "policy")
    torch.save({"optimizer": optimizer.state_dict(), "update": update, "rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(), "cursor": cursor}, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(history))
    old = run / "checkpoint"
    if old.exists():
        shutil.rmtree(run / ".checkpoint-old", ignore_errors=True)
        os.replace(old, run / ".checkpoint-old")
    os.replace(tmp, old)  # the new checkpoint is complete before it takes the name
    shutil.rmtree(run / ".checkpoint-old", ignore_errors=True)


def train(policy: Policy, make_env: Callable[[], Any], config: PPOConfig, run_dir: str | os.PathLike,
          task_ids: Sequence[str] | None = None, evaluate: Callable[[Policy], dict[str, float]] | None = None,
          progress: bool = True, engine: RolloutEngine | None = None) -> PPOResult:
    """Train `policy` for ``config.updates`` updates on envs from `make_env`, cycling over `task_ids`
    (None: each env's own problem choice), rollouts sampled by `engine` (None: ``make_engine(config.engine)``,
    closed at the end; its name is pinned in ``RUN/config.json``: another engine's samples differ, so a
    resume on another engine is refused). Resumes from ``RUN/checkpoint`` (the policy there replaces
    `policy`'s weights). `evaluate(policy) -> scalars` runs every ``eval_every`` updates (e.g. held-out
    Pass@1). Returns the history and writes ``RUN/final`` and ``RUN/history.json``."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from o1code.agents.rollout import resolve_engine
    from o1code.runs import pin_config, write_atomic

    run = Path(run_dir)
    name = engine.name if engine is not None else resolve_engine(config.engine, policy)
    pin_config(run, {**asdict(config), "engine": name}, ignore=("updates", "save_every", "eval_every"))
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    start, history = 0, []
    # before a resume loads trained weights: the starting policy
    reference = make_reference(policy) if config.kl_coef > 0 else None
    per = config.group_size if config.algo == "grpo" else 1
    n = config.episodes_per_update // per
    cursor = 0  # task groups drawn so far (dynamic sampling draws more than n per update)
    if (run / "checkpoint" / "state.pt").is_file():
        saved = Policy.load(run / "checkpoint" / "policy", device=str(policy.device_))
        policy.load_state_dict(saved.state_dict())
        state = torch.load(run / "checkpoint" / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start, history = state["update"], json.loads((run / "checkpoint" / "history.json").read_text())
        cursor = state.get("cursor", start * n)
        log.info("resuming %s after update %d", run, start)
    own_engine = engine is None
    engine = engine or make_engine(name, policy, workdir=run / "engine", prompts_per_call=config.prompts_per_call)
    if not own_engine:
        engine.sync(policy)
    envs = [make_env() for _ in range(config.episodes_per_update)]
    writer = SummaryWriter(str(run / "tb"))
    try:
        bar = tqdm(range(start, config.updates), initial=start, total=config.updates, disable=not progress,
                   desc=config.algo)
        for update in bar:
            t0 = time.perf_counter()
            clock: dict[str, float] = {}
            steps, episodes, sampled, decoded = [], [], [], 0
            dynamic = config.dynamic_sampling and config.algo == "grpo"
            for draw in range(4 if dynamic else 1):  # dynamic sampling: up to three refills
                chosen = [task_ids[(cursor + j) % len(task_ids)] if task_ids else None for j in range(n)]
                cursor += n
                s, e = rollout(policy, engine, envs, config, f"{update}+{draw}" if draw else str(update),
                               [t for t in chosen for _ in range(per)], clock)
                sampled, decoded = sampled + e, decoded + sum(len(x.token_ids) for x in s)
                if dynamic:
                    s, e = informative(s, e, config.group_size)
                for x in s:
                    x.episode += len(episodes)
                steps, episodes = steps + s, episodes + e
                if len(episodes) >= config.episodes_per_update:
                    break
            episodes = episodes[:config.episodes_per_update]
            steps = [x for x in steps if x.episode < len(episodes)]
            score(policy, reference, steps, config, clock)  # only what the update trains on
            if config.algo == "grpo":
                group_advantages(steps, episodes, config.group_size)
            else:
                gae(steps, config.gamma, config.gae_lambda)
            ev = explained_variance(steps) if config.algo == "ppo" else float("nan")
            t = time.perf_counter()
            stats = update_policy(policy, optimizer, steps, config, rng)
            t, clock["train"] = time.perf_counter(), time.perf_counter() - t
            engine.sync(policy)  # the next rollout samples the updated weights
            clock["sync"] = time.perf_counter() - t
            seconds = time.perf_counter() - t0
            row = {"update": update + 1, "reward": float(np.mean([e.ret for e in sampled])),
                   "reward_test_pass": float(np.mean([e.reward_passed for e in sampled])),
                   "hidden_test_pass": float(np.mean([e.eval_passed for e in sampled])),
                   "steps_per_episode": float(np.mean([e.steps for e in sampled])), "episodes": len(sampled),
                   "trained_episodes": len(episodes), "explained_variance": ev, "seconds_per_update": seconds,
                   "tokens_per_s": sum(len(s.token_ids) for s in steps) / seconds, "tokens_sampled": decoded, **stats,
                   **engine_stats(steps, config), **{f"seconds/{k}": v for k, v in clock.items()}}
            if evaluate and config.eval_every and (update + 1) % config.eval_every == 0:
                row.update({f"eval/{k}": v for k, v in evaluate(policy).items()})
            history.append(row)
            for k, v in row.items():
                if k != "update" and not (isinstance(v, float) and math.isnan(v)):
                    writer.add_scalar(k if "/" in k else f"train/{k}", v, update + 1)
            writer.flush()
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.4f}")
            if (update + 1) % config.save_every == 0 or update + 1 == config.updates:
                _save(run, policy, optimizer, update + 1, rng, history, cursor)
    finally:
        writer.close()
        for env in envs:
            env.close()
        if own_engine:
            engine.close()
    final = policy.save(run / "final")
    write_atomic(run / "history.json", json.dumps(history, indent=2))
    return PPOResult(history=history, final_dir=final)


__all__ = ["ALGOS", "Episode", "PPOConfig", "PPOResult", "Step", "engine_stats", "explained_variance", "gae",
           "group_advantages", "informative", "make_reference", "reference_logprobs", "rollout", "score", "score_steps",
           "tis_weights", "train", "update_policy"]
