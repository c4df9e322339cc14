"""``llamacpp`` backend: llama-cpp-python (optional extra ``llamacpp``), fast CPU inference of GGUF files.

The n completions of a prompt are decoded together: the prompt is evaluated once, its KV cells are
shared by n sequences (llama.cpp's multi-sequence batch), and each step is one ``llama_decode`` of
one token per unfinished sequence. On a CPU a decode step reads every weight once whatever the
batch size, so n sequences cost little more than one. Completion ``j`` has its own sampler seeded
with ``seed + j``; its tokens depend on the whole call (prompt, params, n), because the batch a
token is computed in changes its floating-point rounding. ``batch_samples=False`` decodes the
sequences one after another instead. Note llama.cpp applies top-k/top-p before temperature
(transformers applies temperature first).

Reproducibility with a KV cache kept between calls: llama.cpp's CPU results depend on how tokens
are batched (llamafile's tinyBLAS matmul only serves batches of 2+ tokens; flash attention has
batch-size-dependent paths), so a prompt token's KV entries and the first sampled token's logits
depend on which tokens were evaluated together (SmolLM2-135M: the last prompt token re-evaluated
alone changed the logits by up to ~0.9 for about one prompt length in four). Letting
llama-cpp-python reuse "the longest common prefix" therefore made a seed's samples depend on what
the cache held. Here prompts are evaluated in fixed chunks of ``cache_chunk`` tokens aligned to
absolute positions (``[0, C)``, ``[C, 2C)``, ...), and only whole chunks so computed are ever reused,
or all of the last prompt (with its saved last-token logits) when the same prompt comes again:
every KV entry and logit is then computed by the same operations whatever came before. Tokens are
sampled by llama.cpp's sampler chain from those logits.
"""

from __future__ import annotations

import contextlib
import ctypes
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
    ``prefix_cache``: keep the KV cache between calls and re-evaluate only from the last
    ``cache_chunk`` boundary within the longest common prefix (the n samples of one prompt, and a
    search's steps, share the long few-shot prompt). False re-evaluates every prompt from scratch.
    Either way the same prompt, params and seed give bit-identical completions whatever the
    generator did before (and the same with prefix_cache True or False, for the same model, threads,
    ``cache_chunk`` and hardware). ``cache_chunk``: prompts are evaluated in batches of this many
    tokens aligned to multiples of it (at most ``n_batch``); a call re-evaluates at least the prompt's
    last 1..cache_chunk tokens, none when its prompt is the previous call's. ``max_seqs``: the most
    sequences decoded in one batch (llama.cpp's ``n_seq_max``); more samples go in several groups, and
    so do samples that would not fit ``n_ctx`` together (prompt + each sequence's ``max_tokens``).
    ``batch_samples``: decode the n samples of a prompt together (False: one after another)."""

    path: str = ""
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    chat_template: bool = True
    use_extra_bufts: bool = False
    prefix_cache: bool = True
    cache_chunk: int = 32
    max_seqs: int = 8
    batch_samples: bool = True
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
def _default_params(llama_cpp: Any, use_extra_bufts: bool, n_seq_max: int) -> Iterator[None]:
    """Make ``Llama.__init__`` see model params with ``use_extra_bufts`` and context params with
    ``n_seq_max`` sequences in one unified KV cache (it has arguments for neither). Unified: the
    sequences of a batch share the prompt's cells and draw their own from one pool of ``n_ctx``."""
    orig_model, orig_ctx = llama_cpp.llama_model_default_params, llama_cpp.llama_context_default_params

    def model_params() -> Any:
        p = orig_model()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = use_extra_bufts
        return p

    def context_params() -> Any:
        p = orig_ctx()
        p.n_seq_max, p.kv_unified = n_seq_max, True
        return p

    with _patch_lock:
        llama_cpp.llama_model_default_params = model_params
        llama_cpp.llama_context_default_params = context_params
        try:
            yield
        finally:
            llama_cpp.llama_model_default_params = orig_model
            llama_cpp.llama_context_default_params = orig_ctx


class LlamaCppGenerator:
    """Generator over llama-cpp-python. Completions carry token ids and per-token model log-probs
    (log-softmax of the raw logits of the sampling step). With a seed, a call's completions depend
    only on the prompt, the params and the setup (model, threads, ``cache_chunk``, hardware), not on
    earlier calls or on what the KV cache holds (see the module docstring)."""

    def __init__(self, config: LlamaCppConfig) -> None:
        llama_cpp = import_llama_cpp()
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"GGUF file not found: {path}")
        if not (isinstance(config.cache_chunk, int) and 1 <= config.cache_chunk <= config.n_batch):
            raise InvalidParamsError(f"cache_chunk must be an int in [1, n_batch={config.n_batch}], "
                                     f"got {config.cache_chunk!r}")
        max_seqs = llama_cpp.llama_cpp.llama_max_parallel_sequences()
        if not (isinstance(config.max_seqs, int) and 1 <= config.max_seqs <= max_seqs):
            raise InvalidParamsError(f"max_seqs must be an int in [1, {max_seqs}], got {config.max_seqs!r}")
        self.config = config
        try:
            with _default_params(llama_cpp.llama_cpp, config.use_extra_bufts, config.max_seqs):
                # n_threads_batch serves every decode of 2+ tokens (prompt chunks, multi-sequence
                # steps); left out it would be llama-cpp-python's cpu_count() whatever n_threads says
                threads = config.n_threads or _usable_cores()
                self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=config.n_ctx, n_batch=config.n_batch,
                                           n_threads=threads, n_threads_batch=threads, verbose=config.verbose)
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise ModelError(f"llama.cpp cannot load {path} (not a valid GGUF?): {e}") from e
        self._close = weakref.finalize(self, self.llm.close)  # free before interpreter teardown
        self._lib = llama_cpp.llama_cpp
        self._vocab = self._lib.llama_model_get_vocab(self.llm.model)
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")
        # Prefix-cache state. KV positions [0, _canon) hold whole prompt chunks evaluated canonically
        # (one llama_decode each, aligned to multiples of cache_chunk); llm.input_ids[:_canon] are their
        # tokens. _last: (tokens, last-token logits) of the last prompt evaluated, whose KV is still
        # intact, so that the same prompt again (the n samples of one prompt) needs no evaluation.
        self._canon = 0
        self._last: tuple[Any, Any] | None = None
        self.n_prompt_tokens_evaluated = 0  # running count, to check/measure prefix reuse

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
                (c,) = self._sample(p, params, [0])
                out.append([dataclasses.replace(c, token_ids=list(c.token_ids), logprobs=list(c.logprobs or []))
                            for _ in range(params.n)])
            else:
                out.append(self._sample(p, params, [params.seed_for(j) for j in range(params.n)]))
        return out

    def _eval_prompt(self, toks: list[int]) -> Any:
        """Bring the KV cache to exactly ``toks``; return the logits after its last token. Every
        position is computed in its canonical chunk; whole canonical chunks of the common prefix with
        the cache are reused, and so is all of a prompt identical to the last one."""
        import numpy as np

        llm, lib, c, n = self.llm, self._lib, self.config.cache_chunk, len(toks)
        arr = np.asarray(toks, dtype=llm.input_ids.dtype)
        if self.config.prefix_cache and self._last is not None and np.array_equal(self._last[0], arr):
            llm.n_tokens = n  # the next llm.eval drops the KV of the last call's generated tokens
            return self._last[1]
        keep = 0
        if self.config.prefix_cache:
            m = min(self._canon, n - 1)  # re-evaluate >= 1 token: its logits start the sampling
            diff = np.flatnonzero(llm.input_ids[:m] != arr[:m])
            keep = (int(diff[0]) if diff.size else m) // c * c
        self._canon, self._last = keep, None
        llm.n_tokens = keep  # llm.eval drops the KV cache from position n_tokens on
        for i in range(keep, n, c):
            llm.eval(toks[i:i + c])  # one llama_decode (c <= n_batch), logits for the last token only
            self.n_prompt_tokens_evaluated += min(c, n - i)
            if i + c <= n:  # a trailing partial chunk is not canonical: its batch depends on n
                self._canon = i + c
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
        if self.config.prefix_cache:
            self._last = (arr, logits)
        return logits

    def _sampler(self, params: SamplingParams, seed: int) -> Any:
        """A fresh llama.cpp sampler chain (the one ``Llama.generate`` builds, minus its no-op stages)."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.greedy:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(params.top_k or 0))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _sample(self, prompt: str, params: SamplingParams, seeds: list[int]) -> list[Completion]:
        """One completion per seed, decoded in groups of sequences that fit ``max_seqs`` and ``n_ctx``."""
        toks = self.llm.tokenize(self.format_prompt(prompt).encode("utf-8"), add_bos=True, special=True)
        room = self.config.n_ctx - len(toks)
        budget = min(params.max_tokens, room)
        if budget < 1:
            raise InvalidParamsError(f"prompt has {len(toks)} tokens, no room left in n_ctx={self.config.n_ctx}")
        group = min(self.config.max_seqs, room // budget) if self.config.batch_samples else 1
        logits = self._eval_prompt(toks)
        out: list[Completion] = []
        for i in range(0, len(seeds), group):
            out += self._decode(len(toks), logits, budget, params, seeds[i:i + group])
        return out

    def _decode(self, n_prompt: int, logits: Any, budget: int, params: SamplingParams,
                seeds: list[int]) -> list[Completion]:
        """Decode one sequence per seed after the prompt whose KV occupies positions [0, n_prompt) of
        sequence 0 and whose last-token logits are ``logits``: one ``llama_decode`` per step for all
        unfinished sequences. Leaves the KV cache holding exactly the prompt, as sequence 0."""
        import numpy as np

        llm, lib = self.llm, self._lib
        mem = lib.llama_get_memory(llm.ctx)
        lib.llama_memory_seq_rm(mem, -1, n_prompt, -1)  # the generated tokens of the last call
        for s in range(1, len(seeds)):
            lib.llama_memory_seq_cp(mem, 0, s, 0, n_prompt)  # shares the prompt's cells, copies nothing
        seqs = [_Sequence(self, params, seed, budget) for seed in seeds]
        step_logits = [logits] * len(seqs)
        active = list(range(len(seqs)))
        batch = lib.llama_batch_init(len(seqs), 0, 1)
        try:
            while active:
                fed = [(s, tok) for s in active if (tok := seqs[s].step(step_logits[s])) is not None]
                for i, (s, tok) in enumerate(fed):
                    batch.token[i], batch.pos[i] = tok, n_prompt + len(seqs[s].ids) - 1
                    batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = 1, s, True
                batch.n_tokens = len(fed)
                if fed and (rc := lib.llama_decode(llm.ctx, batch)) != 0:
                    raise ModelError(f"llama_decode failed ({rc}) on a batch of {len(fed)} sequences")
                for i, (s, _) in enumerate(fed):  # a view: read by step() before the next decode
                    step_logits[s] = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, i),
                                                           shape=(len(logits),))
                active = [s for s, _ in fed]
        finally:
            lib.llama_batch_free(batch)
            for s in seqs:
                s.free()
            for s in range(1, len(seeds)):
                lib.llama_memory_seq_rm(mem, s, -1, -1)
            lib.llama_memory_seq_rm(mem, 0, n_prompt, -1)
            llm.n_tokens = n_prompt  # what llm.eval appends after (the prefix cache keeps the prompt)
        return [s.completion() for s in seqs]


class _Sequence:
    """One completion being sampled: its llama.cpp sampler chain (seeded), the tokens and model
    log-probs so far, and the stop rules (EOS, stop strings, token budget)."""

    def __init__(self, gen: LlamaCppGenerator, params: SamplingParams, seed: int, budget: int) -> None:
        import numpy as np

        self.gen, self.lib, self.params, self.budget = gen, gen._lib, params, budget
        self.chain = gen._sampler(params, seed)
        self.ids: list[int] = []
        self.lps: list[float] = []
        self.text, self.reason = "", "length"
        n_vocab = gen.llm.n_vocab()
        # what llama_sampler_sample does, but from a logits array (the last prompt's may be cached)
        self.cand = np.empty(n_vocab, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)],
                                                     align=True))
        assert self.cand.itemsize == ctypes.sizeof(self.lib.llama_token_data)
        self.all_ids = np.arange(n_vocab, dtype=np.intc)
        self.cur = self.lib.llama_token_data_array()

    def step(self, logits: Any) -> int | None:
        """Sample the next token from ``logits``; return it if it must be fed to the model, None once
        the completion is finished (the finishing token is kept in ``ids``, as EOS or a stop hit)."""
        import numpy as np

        lib, cand, cur = self.lib, self.cand, self.cur
        cand["id"] = self.all_ids
        cand["logit"] = logits
        cand["p"] = 0.0
        cur.data = cand.ctypes.data_as(lib.llama_token_data_p)  # samplers may repoint it
        cur.size, cur.selected, cur.sorted = len(cand), -1, False
        lib.llama_sampler_apply(self.chain, ctypes.byref(cur))
        if not 0 <= cur.selected < cur.size:
            raise ModelError(f"llama.cpp sampler selected no token ({cur.selected})")
        tok = int(cur.data[cur.selected].id)
        lib.llama_sampler_accept(self.chain, tok)
        m = float(logits.max())
        self.lps.append(float(logits[tok]) - m - float(np.log(np.exp(logits - m).sum())))
        self.ids.append(tok)
        if lib.llama_vocab_is_eog(self.gen._vocab, tok):
            self.reason = "stop"
            return None
        self.text = self.gen.llm.detokenize(self.ids).decode("utf-8", errors="ignore")
        if self.params.stop:
            cut, hit = cut_at_stop(self.text, self.params.stop)
            if hit:
                self.text, self.reason = cut, "stop"
                return None
        return tok if len(self.ids) < self.budget else None

    def free(self) -> None:
        if self.chain is not None:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None

    def completion(self) -> Completion:
        return Completion(text=self.text, token_ids=self.ids, logprobs=self.lps, finish_reason=self.reason)
