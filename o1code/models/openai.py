"""``openai`` backend: any OpenAI-compatible ``/v1/completions`` server (vLLM serve, llama.cpp server,
Ollama, ...) over plain HTTP (urllib), with timeouts and retries.

This is raw completion: the server does not apply a chat template to ``/v1/completions`` prompts.
Token ids are not reported (``token_ids == []``); log-probs are those the server returns for its tokens.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Sequence

from .base import Completion, SamplingParams, cut_at_stop
from .errors import ServerError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class OpenAIConfig:
    """``base_url``: e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is appended when missing).
    ``timeout``: seconds per HTTP request. ``retries``: extra attempts on connection errors, timeouts
    and HTTP 408/429/5xx, with exponential ``backoff`` (seconds). ``api_key``: sent as a bearer token
    (default: ``$OPENAI_API_KEY``). ``logprobs``: ask the server for per-token log-probs."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    api_key: str | None = None
    logprobs: bool = True

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        if self.api_key is None:
            self.api_key = os.environ.get("OPENAI_API_KEY")


class OpenAIGenerator:
    """Generator over an OpenAI-compatible completions endpoint (one request per prompt)."""

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.config.base_url}/completions"
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:500].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise ServerError(last) from e
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"cannot reach {url}: {reason} (is the server running and the URL right?)"
            except json.JSONDecodeError as e:
                raise ServerError(f"{url} did not answer JSON: {e}") from e
            log.warning("attempt %d/%d failed: %s", attempt + 1, self.config.retries + 1, last)
        raise ServerError(f"{last} [gave up after {self.config.retries + 1} attempts, timeout "
                          f"{self.config.timeout}s each]")

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (``token_ids`` empty; ``text`` cut
        at the first stop string; ``finish_reason`` as the server reports it, "stop" or "length")."""
        if isinstance(prompts, str):
            prompts = [prompts]
        out = []
        for prompt in prompts:
            comps: list[Completion] = []
            while len(comps) < params.n:  # some servers (Ollama) ignore n
                body: dict[str, Any] = {
                    "model": self.config.model, "prompt": prompt, "n": params.n - len(comps),
                    "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
                }
                if params.stop:
                    body["stop"] = list(params.stop)
                if params.seed is not None:
                    body["seed"] = params.seed + len(comps)
                if params.top_k:
                    body["top_k"] = params.top_k  # vLLM / llama.cpp / Ollama extension
                if self.config.logprobs:
                    body["logprobs"] = 1
                choices = self._post(body).get("choices")
                if not choices:
                    raise ServerError(f"{self.config.base_url}/completions returned no choices")
                comps.extend(self._parse(c, params) for c in sorted(choices, key=lambda c: c.get("index", 0)))
            out.append(comps[: params.n])
        return out

    @staticmethod
    def _parse(choice: dict[str, Any], params: SamplingParams) -> Completion:
        text, hit = cut_at_stop(choice.get("text") or "", params.stop)
        lp = (choice.get("logprobs") or {}).get("token_logprobs")
        reason = "stop" if hit else ("length" if choice.get("finish_reason") == "length" else "stop")
        return Completion(text=text, token_ids=[], logprobs=[float(x) for x in lp if x is not None] if lp else None,
                          finish_reason=reason)
