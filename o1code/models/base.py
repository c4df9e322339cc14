"""The backend-independent part: SamplingParams, Completion, the Generator protocol, helpers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from o1code.data.prompts import render_chat  # noqa: F401  (the one renderer; the backends import it from here)

from .errors import InvalidParamsError

FinishReason = str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy (then top_p/top_k are ignored).

    ``top_k=None`` disables top-k; ``seed=None`` draws fresh randomness each call. With a seed, the same
    prompts and params give the same completions on the same backend (and hardware). Completion ``j``
    of a prompt uses seed ``seed + j`` on backends that sample completions one at a time.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # accept a single string and lists
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (isinstance(self.n, int) and self.n >= 1, f"n must be an int >= 1, got {self.n!r}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature!r}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (self.top_k is None or (isinstance(self.top_k, int) and self.top_k >= 1),
             f"top_k must be None or an int >= 1, got {self.top_k!r}"),
            (isinstance(self.max_tokens, int) and self.max_tokens >= 1,
             f"max_tokens must be an int >= 1, got {self.max_tokens!r}"),
            (all(isinstance(s, str) and s for s in self.stop), f"stop must be non-empty strings, got {self.stop!r}"),
            (self.seed is None or isinstance(self.seed, int), f"seed must be None or an int, got {self.seed!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InvalidParamsError(msg)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def seed_for(self, j: int) -> int:
        """Seed of completion ``j``: ``seed + j``, or a fresh random 31-bit int when ``seed`` is None."""
        return (self.seed + j) if self.seed is not None else random.randrange(2**31)


@dataclass
class Completion:
    """One sampled continuation.

    ``text``: the decoded continuation, cut before the first stop string (the stop string is excluded).
    ``token_ids``: generated token ids up to and including the one that finished it (empty if the
    backend does not report ids, e.g. most OpenAI-compatible servers).
    ``logprobs``: log-probability under the model (before temperature/top-p) of each token in
    ``token_ids`` (or of each server-reported token for ``openai``), or None if unavailable.
    ``finish_reason``: "stop" (EOS or stop string) or "length".
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    finish_reason: FinishReason = "length"


@runtime_checkable
class Generator(Protocol):
    """Anything that turns prompts into completions: ``generate(prompts, params)`` returns one list of
    ``params.n`` Completions per prompt, in prompt order."""

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Return ``(text before the earliest stop string, whether one was found)``."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def chat_template_of(model: Any) -> str | None:
    """The chat template (a Jinja string) of a generator or `Policy` (its own, or its tokenizer's),
    or None when it has none or the backend does not say (an OpenAI-compatible server): what the
    ``instruct`` prompt style renders (`o1code.data.formats.build_prompt_prefix`)."""
    for owner in (model, getattr(model, "tokenizer", None)):
        template = getattr(owner, "chat_template", None)
        if isinstance(template, str) and template:
            return template
    return None


def apply_chat_template(tokenizer: Any, prompt: str, enabled: bool) -> str:
    """``prompt`` as one user turn plus the generation prompt when `enabled` and the (Hugging Face)
    tokenizer has a chat template; else ``prompt`` unchanged (raw completion)."""
    if enabled and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt
