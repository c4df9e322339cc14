"""Wrappers over `CodeEnv`: `CandidateSelection` turns the text action into a choice among k
proposed steps, with numeric features, so that stable-baselines3 agents can train on it."""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Protocol, SupportsFloat, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from o1code.envs.errors import EnvError


@runtime_checkable
class Proposer(Protocol):
    """Anything that proposes candidate next steps, e.g. an LLM sampling k continuations."""

    def propose(self, observation: Mapping[str, Any], k: int) -> list[str]:
        """Return k candidate step texts for `observation` (the wrapped env's observation, e.g.
        `o1code.envs.Observation`); fewer are padded with repeats, none is an error."""
        ...


def hashed_ngrams(text: str, dim: int, n: int = 3) -> np.ndarray:
    """An L2-normalised bag of hashed character n-grams of `text` (`dim` float32 buckets).

    crc32 rather than `hash()`: it is the same in every process, so features are reproducible.
    """
    vec = np.zeros(dim, dtype=np.float32)
    data = text.encode("utf-8", "replace")
    for i in range(max(len(data) - n + 1, 0)):
        vec[zlib.crc32(data[i : i + n]) % dim] += 1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


class CandidateSelection(gym.Wrapper[np.ndarray, int, Any, str]):
    """Action ``Discrete(k)``: pick one of k steps a `Proposer` offers for the current state.

    Observation: a ``Box(0, 1, ((k + 1) * dim,))`` of hashed character n-grams, first of the
    problem and steps so far, then of each candidate (`hashed_ngrams`). Reward, termination and
    info are the wrapped env's; ``info["candidates"]`` lists the texts the action indexed, and
    ``info["chosen"]`` the step taken.

    Example::

        env = CandidateSelection(gym.make("O1Code-MBPP-Direct-v0"), proposer, k=4)
        model = stable_baselines3.PPO("MlpPolicy", env).learn(1_000)
    """

    def __init__(self, env: gym.Env, proposer: Proposer, k: int = 4, dim: int = 64) -> None:
        super().__init__(env)
        if k < 1 or dim < 1:
            raise EnvError(f"k and dim must be positive, got k={k}, dim={dim}")
        self.proposer, self.k, self.dim = proposer, k, dim
        self.action_space = spaces.Discrete(k)
        self.observation_space = spaces.Box(0.0, 1.0, shape=((k + 1) * dim,), dtype=np.float32)
        self._candidates: list[str] = []

    def _propose(self, obs: Mapping[str, Any]) -> list[str]:
        candidates = [str(c) for c in self.proposer.propose(obs, self.k)][: self.k]
        if not candidates:
            raise EnvError("the proposer returned no candidates")
        while len(candidates) < self.k:  # pad with repeats so every action index means something
            candidates.append(candidates[len(candidates) % max(len(candidates), 1)])
        return candidates

    def _features(self, obs: Mapping[str, Any]) -> np.ndarray:
        parts = [hashed_ngrams(obs["problem"] + "\n" + obs["steps"], self.dim)]
        parts += [hashed_ngrams(c, self.dim) for c in self._candidates]
        return np.clip(np.concatenate(parts), 0.0, 1.0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the wrapped env; returns the feature vector and its info plus ``candidates``."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._candidates = self._propose(obs)
        info["candidates"] = list(self._candidates)
        return self._features(obs), info

    def step(self, action: int) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Take candidate `action`; returns the wrapped env's step with the feature vector as the
        observation and ``chosen`` (and, unless the episode ended, the next ``candidates``) in info."""
        index = int(action)
        if not 0 <= index < self.k:
            raise EnvError(f"action {action!r} is outside Discrete({self.k})")
        chosen = self._candidates[index]
        obs, reward, terminated, truncated, info = self.env.step(chosen)
        info["chosen"] = chosen
        if not (terminated or truncated):
            self._candidates = self._propose(obs)
            info["candidates"] = list(self._candidates)
        return self._features(obs), reward, terminated, truncated, info
