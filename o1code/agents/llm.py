"""The `Agent` protocol and `LLMAgent`, which writes each reasoning step with a language model; and
`play_lockstep`, which plays many episodes with one model call per round (the batched path)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from o1code.data.formats import STEP_STOPS
from o1code.envs import EnvState, EvalInfo
from o1code.models import Generator, SamplingParams


@runtime_checkable
class Agent(Protocol):
    """Anything that acts in an O1Code environment: one reasoning step per call."""

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        """Return the next step's text for `observation` (the env's observation dict,
        `o1code.envs.Observation`) and the last `info` (`o1code.envs.StepInfo`)."""
        ...


def problem_seed(seed: int, task_id: str) -> int:
    """The seed of every random choice made for one problem: a stable function of the run's seed and
    the task id (not of which problems came before), so a resumed run equals an uninterrupted one."""
    digest = hashlib.sha256(f"{seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


@dataclass
class LLMConfig:
    """Sampling settings of `LLMAgent`. ``temperature=0`` is greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None  #: None: no top-k cut
    max_step_tokens: int = 384
    seed: int = 0


class LLMAgent:
    """Continues the observation's prompt with a `Generator` up to the end of one step.

    Greedy with the default config; sampled with ``temperature > 0``. In an O1Code env (whose
    `info` carries ``task_id``) the seed of each step is ``problem_seed(seed, task_id) + step``,
    so a problem's episode does not depend on the problems played before it; elsewhere the seed
    advances with every call.
    """

    def __init__(self, generator: Generator, config: LLMConfig | None = None) -> None:
        self.generator = generator
        self.config = config or LLMConfig()
        self._calls = 0
        self.tokens = 0  #: completion tokens generated so far (for the evaluation's token count)

    def params(self, n: int = 1, seed: int | None = None) -> SamplingParams:
        """The sampling parameters of the next call (a fresh seed per call unless `seed` is given)."""
        c = self.config
        self._calls += 1
        return SamplingParams(
            n=n,
            temperature=c.temperature,
            top_p=c.top_p,
            top_k=c.top_k,
            max_tokens=c.max_step_tokens,
            stop=STEP_STOPS,
            seed=c.seed + self._calls if seed is None else seed,
        )

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str:
        """The text of one step: the generator's completion of ``observation["prompt"]`` up to ``<Step_End>``."""
        task_id = (info or {}).get("task_id")
        seed = problem_seed(self.config.seed, task_id) + int(observation["step"]) if task_id else None
        (completion,) = self.generator.generate([observation["prompt"]], self.params(seed=seed))[0]
        self.tokens += len(completion.token_ids)
        return completion.text


def play_lockstep(env: Any, generator: Generator, starts: Sequence[EnvState], config: LLMConfig,
                  seed: int) -> list[dict[str, Any]]:
    """Play one episode from each state of `starts` to its end in `env` (a `CodeEnv` over their
    problems), all together: each round asks `generator` once for the next step of every episode still
    running (equal prompts once, as ``n`` samples), so a backend that batches (hf, vllm) decodes them
    side by side where `LLMAgent` would make one call per step of each episode. Round r's call for
    groups of n equal prompts is seeded ``problem_seed(seed, f"round{r}/n{n}")``: the episodes depend
    on `seed` and on which states were started together, not on anything played before.

    Returns, per start in order: ``steps`` (all of them, the start's included), ``code`` (the answer,
    None if truncated without one), ``reward``, ``reward_passed`` (the reward tests' verdict),
    ``passed`` (every dataset test passes) and ``tokens`` (generated)."""
    agent = LLMAgent(generator, config)  # its `params` are the sampling parameters of each call
    states = list(starts)
    out: list[dict[str, Any] | None] = [None] * len(states)
    tokens = [0] * len(states)
    active, rnd = list(range(len(states))), 0
    while active:
        where: dict[str, list[int]] = {}
        for i in active:
            env.set_state(states[i])
            where.setdefault(env.observation()["prompt"], []).append(i)
        texts: dict[int, str] = {}
        for n in sorted({len(v) for v in where.values()}):
            batch = [p for p, v in where.items() if len(v) == n]
            params = agent.params(n=n, seed=problem_seed(seed, f"round{rnd}/n{n}"))
            for prompt, comps in zip(batch, generator.generate(batch, params)):
                comps = list(comps) * n if len(comps) == 1 else list(comps)  # greedy: one completion for n
                for i, comp in zip(where[prompt], comps):
                    texts[i] = comp.text
                    tokens[i] += len(comp.token_ids)
        still = []
        for i in active:
            env.set_state(states[i])
            _, reward, terminated, truncated, info = env.step(texts[i])
            states[i] = env.get_state()
            if terminated or truncated:
                ev = EvalInfo.from_info(info)
                out[i] = {"steps": list(states[i].steps), "code": info.get("code"), "reward": float(reward),
                          "reward_passed": info.get("verdict") == "passed", "passed": bool(ev and ev.all_passed),
                          "tokens": tokens[i]}
            else:
                still.append(i)
        active, rnd = still, rnd + 1
    return out  # type: ignore[return-value]
