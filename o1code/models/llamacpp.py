"""``llamacpp`` backend: llama-cpp-python (optional extra ``llamacpp``), fast CPU inference of GGUF files.

Completions are sampled one at a time (completion ``j`` uses seed ``seed + j``). Note llama.cpp
applies top-k/top-p before temperature (transformers applies temperature first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import Completion, SamplingParams, cut_at_stop, render_chat
from .errors import InvalidParamsError, MissingExtraError, ModelError, ModelFileError

log = logging.getLogger(__name__)
_patch_lock = threading.Lock()


@dataclass
class LlamaCppConfig:
    """``path``: a GGUF file. ``n_ctx``: context length (prompt + completion). ``n_threads``: None = every
    core this process may use, or ``$O1CODE_LLAMA_THREADS`` (llama-cpp-python's own default, half
    the cores, idles one of two). ``chat_template``: apply the GGUF's chat template (False: raw completion).
    ``use_extra_bufts``: llama.cpp's weight-repacking buffers; off by default because with them
    llama.cpp 0.3.36 segfaults on multi-token batches on some CPUs (AMX/repack kernels).
    ``prefix_cache``: keep the KV cache between calls and evaluate only the tokens after the longest
    common prefix (the n samples of one prompt, and a search's steps, share the long few-shot
    prompt). Outputs stay reproducible for the same sequence of calls; False re-evaluates every
    prompt from scratch, so each call alone is bit-reproducible whatever came before."""

    path: str = ""
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    chat_template: bool = True
    use_extra_bufts: bool = False
    prefix_cache: bool = True
    verbose: bool = False


def _usable_cores() -> int:
    # $O1CODE_LLAMA_THREADS overrides: on a machine shared with other busy processes fewer threads
    # are faster, because llama.cpp's threads wait for each other at every layer.
    if os.environ.get("O1CODE_LLAMA_THREADS", "").isdigit() and int(os.environ["O1CODE_LLAMA_THREADS"]) > 0:
        return int(os.environ["O1CODE_LLAMA_THREADS"])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise MissingExtraError("the llamacpp backend needs llama-cpp-python: pip install 'o1code[llamacpp]' "
                                f"(or pip install llama-cpp-python) [{e}]") from e
    return llama_cpp


@contextlib.contextmanager
def _model_params(llama_cpp: Any, use_extra_bufts: bool) -> Iterator[None]:
    """Make ``Llama.__init__`` see model params with ``use_extra_bufts`` set (it has no argument)."""
    orig = llama_cpp.llama_model_default_params

    def patched() -> Any:
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = use_extra_bufts
        return p

    with _patch_lock:
        llama_cpp.llama_model_default_params = patched
        try:
            yield
        finally:
            llama_cpp.llama_model_default_params = orig


class LlamaCppGenerator:
    """Generator over llama-cpp-python. Completions carry token ids and per-token model log-probs
    (log-softmax of the raw logits of the sampling step)."""

    def __init__(self, config: LlamaCppConfig) -> None:
        llama_cpp = import_llama_cpp()
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"GGUF file not found: {path}")
        self.config = config
        try:
            with _model_params(llama_cpp.llama_cpp, config.use_extra_bufts):
                self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=config.n_ctx, n_batch=config.n_batch,
                                           n_threads=config.n_threads or _usable_cores(), verbose=config.verbose)
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise ModelError(f"llama.cpp cannot load {path} (not a valid GGUF?): {e}") from e
        self._close = weakref.finalize(self, self.llm.close)  # free before interpreter teardown
        self._lib = llama_cpp.llama_cpp
        self._vocab = self._lib.llama_model_get_vocab(self.llm.model)
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")

    def close(self) -> None:
        """Free the llama.cpp model and context now (also done on garbage collection / exit)."""
        self._close()

    def format_prompt(self, prompt: str) -> str:
        """The exact text fed to the model for ``prompt`` (chat template applied when enabled)."""
        if self.config.chat_template and self.chat_template:
            return render_chat(self.chat_template, prompt, bos_token="", eos_token="")
        return prompt

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (see :class:`Completion`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        out = []
        for p in prompts:
            if params.greedy:  # all n completions are identical: sample once, copy
                c = self._one(p, params, 0)
                out.append([dataclasses.replace(c, token_ids=list(c.token_ids), logprobs=list(c.logprobs or []))
                            for _ in range(params.n)])
            else:
                out.append([self._one(p, params, params.seed_for(j)) for j in range(params.n)])
        return out

    def _one(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        import numpy as np

        llm = self.llm
        toks = llm.tokenize(self.format_prompt(prompt).encode("utf-8"), add_bos=True, special=True)
        budget = min(params.max_tokens, self.config.n_ctx - len(toks))
        if budget < 1:
            raise InvalidParamsError(f"prompt has {len(toks)} tokens, no room left in n_ctx={self.config.n_ctx}")
        if not self.config.prefix_cache:
            llm.reset()  # llama-cpp-python otherwise reuses the longest matching KV prefix
        llm.set_seed(seed)
        ids: list[int] = []
        lps: list[float] = []
        reason, text = "length", ""
        n_vocab = llm.n_vocab()
        for tok in llm.generate(toks, top_k=params.top_k or 0, top_p=params.top_p, min_p=0.0,
                                temp=params.temperature, repeat_penalty=1.0):
            logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            m = float(logits.max())
            lps.append(float(logits[tok]) - m - float(np.log(np.exp(logits - m).sum())))
            ids.append(tok)
            if self._lib.llama_vocab_is_eog(self._vocab, tok):
                reason = "stop"
                break
            text = llm.detokenize(ids).decode("utf-8", errors="ignore")
            if params.stop:
                cut, hit = cut_at_stop(text, params.stop)
                if hit:
                    text, reason = cut, "stop"
                    break
            if len(ids) >= budget:
                break
        return Completion(text=text, token_ids=ids, logprobs=lps, finish_reason=reason)
