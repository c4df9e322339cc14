"""``llamacpp`` backend: llama-cpp-python (optional extra ``llamacpp``), fast CPU inference of GGUF files.

Every sequence of a call is decoded together: each prompt is evaluated once into a sequence of
llama.cpp's multi-sequence batch, its KV cells are shared by its n samples, and each step is one
``llama_decode`` of one token per unfinished sequence of every prompt. On a CPU a decode step reads
every weight once whatever the batch size, so many sequences cost little more than one. Completion
``j`` of a prompt has its own sampler seeded with ``seed + j``; its tokens depend on the whole call
(prompts, params), because the batch a token is computed in changes its floating-point rounding,
but its first token (sampled from the prompt's canonical logits, below) does not. Calls larger than
``max_seqs`` sequences or ``n_ctx`` cells run as several batches, in order. ``batch_samples=False``
decodes the sequences one after another instead. `set_adapter` hot-swaps a LoRA adapter (see
`o1code.models.lora_gguf`) and empties the caches. Note llama.cpp applies top-k/top-p before
temperature (transformers applies temperature first).

Reproducibility with a KV cache kept between calls: prompts are evaluated in canonical chunks and
whole chunks reused, so that every KV entry and logit is computed by the same operations whatever
the cache held before (`o1code.models.llamacpp_kv`). Tokens are sampled by llama.cpp's sampler chain
from those logits.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import Completion, SamplingParams, cut_at_stop, render_chat
from .errors import InvalidParamsError, MissingExtraError, ModelError, ModelFileError
from .llamacpp_kv import PromptKV

log = logging.getLogger(__name__)
_patch_lock = threading.Lock()


@dataclass
class LlamaCppConfig:
    """``path``: a GGUF file. ``n_ctx``: context length (prompt + completion). ``n_threads``: None = every
    core this process may use, or ``$O1CODE_LLAMA_THREADS`` (llama-cpp-python's own default, half
    the cores, idles one of two). ``chat_template``: apply the GGUF's chat template (False: raw completion).
    ``use_extra_bufts``: llama.cpp's weight-repacking buffers; off by default because with them
    llama.cpp 0.3.36 segfaults on multi-token batches on some CPUs (AMX/repack kernels).
    ``prefix_cache``: keep the KV cells of recent prompts between calls (``prefix_cache_mib`` of them,
    least recently used dropped first) and re-evaluate only from the last ``cache_chunk`` boundary
    within the longest common prefix (the n samples of one prompt, and a search's steps, share the
    long few-shot prompt; a rollout's next step extends its last prompt). False re-evaluates every
    prompt from scratch.
    Either way the same prompt, params and seed give bit-identical completions whatever the
    generator did before (and the same with prefix_cache True or False, for the same model, threads,
    ``cache_chunk`` and hardware). ``cache_chunk``: prompts are evaluated in batches of this many
    tokens aligned to multiples of it (at most ``n_batch``); a call re-evaluates at least the prompt's
    last 1..cache_chunk tokens, none when its prompt is the previous call's. ``max_seqs``: the most
    sequences decoded in one batch (llama.cpp's ``n_seq_max``, at most ``n_batch``); a call's other
    sequences go in further batches, and so do sequences that would not fit ``n_ctx`` together
    (each distinct prompt once + each sequence's ``max_tokens``). ``batch_samples``: decode the
    sequences of a call together (False: one after another)."""

    path: str = ""
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    chat_template: bool = True
    use_extra_bufts: bool = False
    prefix_cache: bool = True
    prefix_cache_mib: int = 256
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


class _Handles:
    """What `LlamaCppGenerator` frees on close, in order: its LoRA adapter (llama.cpp would free it with
    the model, so it must go first), then the model and context."""

    def __init__(self, lib: Any, llm: Any) -> None:
        self.lib, self.llm, self.adapter = lib, llm, None

    def close(self) -> None:
        if self.adapter is not None and self.llm.ctx is not None:
            self.lib.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
            self.lib.llama_adapter_lora_free(self.adapter)
        self.adapter = None
        self.llm.close()


class LlamaCppGenerator:
    """Generator over llama-cpp-python. Completions carry token ids and per-token model log-probs
    (log-softmax of the raw logits of the sampling step). With a seed, a call's completions depend
    only on its prompts, the params, the adapter and the setup (model, threads, ``cache_chunk``,
    ``max_seqs``, ``n_ctx``, hardware), not on earlier calls or on what the KV cache holds (see the
    module docstring). `set_adapter` hot-swaps a LoRA adapter."""

    def __init__(self, config: LlamaCppConfig) -> None:
        llama_cpp = import_llama_cpp()
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"GGUF file not found: {path}")
        if not (isinstance(config.cache_chunk, int) and 1 <= config.cache_chunk <= config.n_batch):
            raise InvalidParamsError(f"cache_chunk must be an int in [1, n_batch={config.n_batch}], "
                                     f"got {config.cache_chunk!r}")
        max_seqs = min(llama_cpp.llama_cpp.llama_max_parallel_sequences(), config.n_batch)
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
        self._lib = llama_cpp.llama_cpp
        self._handles = _Handles(self._lib, self.llm)
        self._close = weakref.finalize(self, self._handles.close)  # free before interpreter teardown
        self._vocab = self._lib.llama_model_get_vocab(self.llm.model)
        self._kv = PromptKV(self.llm, self._lib, config.cache_chunk, config.prefix_cache,
                            config.prefix_cache_mib << 20)
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")
        self.adapter: Path | None = None  # the LoRA adapter file set on the context, if any

    @property
    def n_prompt_tokens_evaluated(self) -> int:
        """Prompt tokens evaluated so far (a running count, to check/measure prefix reuse)."""
        return self._kv.n_evaluated

    def close(self) -> None:
        """Free the LoRA adapter, the llama.cpp model and context now (also done on garbage collection / exit)."""
        self._close()

    def set_adapter(self, path: str | os.PathLike | None, scale: float = 1.0) -> None:
        """Sample from the base model plus the LoRA adapter GGUF at `path` (``write_lora_gguf``'s file,
        written for this generator's base GGUF) scaled by `scale`; None removes the adapter. The
        previous adapter is freed, and the KV / prefix cache is emptied: no entry computed under one
        adapter is reused under another (each call's prompts are re-evaluated once). Raises
        `ModelFileError` for a missing file and `ModelError` when llama.cpp refuses it (not a LoRA
        adapter, or one for another architecture or tensor shapes)."""
        lib, ctx = self._lib, self.llm.ctx
        if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise InvalidParamsError(f"scale must be a finite number, got {scale!r}")
        new, file = None, None
        if path is not None:
            file = Path(path).expanduser()
            if not file.is_file():
                raise ModelFileError(f"LoRA adapter file not found: {file}")
            new = lib.llama_adapter_lora_init(self.llm.model, str(file).encode())
            if not new:
                raise ModelError(f"llama.cpp cannot load the LoRA adapter {file} (not an adapter GGUF for "
                                 f"{Path(self.config.path).name}? run with verbose=True for its reason)")
            rc = lib.llama_set_adapters_lora(ctx, (lib.llama_adapter_lora_p_ctypes * 1)(new), 1,
                                             (ctypes.c_float * 1)(scale))
        else:
            rc = lib.llama_set_adapters_lora(ctx, None, 0, None)
        if rc != 0:
            if new:
                lib.llama_adapter_lora_free(new)
            raise ModelError(f"llama.cpp could not set the LoRA adapter {file} ({rc})")
        # the new one is set before the old is freed: llama.cpp keeps a set adapter list unchanged
        # when it compares equal, which a freed adapter's address reused by the new one could fake
        if self._handles.adapter is not None:
            lib.llama_adapter_lora_free(self._handles.adapter)
        self._handles.adapter, self.adapter = new, file
        self._kv.reset()

    def format_prompt(self, prompt: str) -> str:
        """The exact text fed to the model for ``prompt`` (chat template applied when enabled)."""
        if self.config.chat_template and self.chat_template:
            return render_chat(self.chat_template, prompt, bos_token="", eos_token="")
        return prompt

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt in order, ``params.n`` Completions (see :class:`Completion`). Every
        sequence of every prompt is decoded together, one ``llama_decode`` per step, in as few groups
        as ``max_seqs`` and ``n_ctx`` allow (each sequence reserves its prompt and ``max_tokens``).
        Completion ``j`` of each prompt is sampled with seed ``seed + j``; greedy decodes each prompt
        once and copies it ``n`` times."""
        import numpy as np

        if isinstance(prompts, str):
            prompts = [prompts]
        toks = [self.llm.tokenize(self.format_prompt(p).encode("utf-8"), add_bos=True, special=True)
                for p in prompts]
        for t in toks:
            if self.config.n_ctx - len(t) < 1:
                raise InvalidParamsError(f"prompt has {len(t)} tokens, no room left in n_ctx={self.config.n_ctx}")
        jobs = [(i, 0 if params.greedy else params.seed_for(j))
                for i in range(len(prompts)) for j in range(1 if params.greedy else params.n)]
        done: list[Completion] = []
        arrays = [np.asarray(t, dtype=np.intc) for t in toks]
        for group in self._groups(jobs, toks, params.max_tokens):
            done += self._run_group(group, arrays, params)
        if params.greedy:
            return [[dataclasses.replace(c, token_ids=list(c.token_ids), logprobs=list(c.logprobs or []))
                     for _ in range(params.n)] for c in done]
        return [done[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def _groups(self, jobs: list[tuple[int, int]], toks: list[list[int]], max_tokens: int) -> list[list]:
        """Split `jobs` (prompt index, seed) in order into groups decoded together: at most ``max_seqs``
        sequences (1 without ``batch_samples``) whose prompts plus token budgets fit ``n_ctx`` cells."""
        cap, n_ctx = (self.config.max_seqs if self.config.batch_samples else 1), self.config.n_ctx
        groups: list[list] = []
        cells = 0
        for i, seed in jobs:
            need = min(max_tokens, n_ctx - len(toks[i])) + len(toks[i])
            if groups and len(groups[-1]) < cap:
                shared = need - len(toks[i]) if any(k == i for k, _ in groups[-1]) else need
                if cells + shared <= n_ctx:
                    groups[-1].append((i, seed))
                    cells += shared
                    continue
            groups.append([(i, seed)])
            cells = need
        return groups

    def _run_group(self, group: list[tuple[int, int]], toks: list[Any], params: SamplingParams) -> list[Completion]:
        """Decode one sequence per job (prompt index, seed) of `group`; sequence s is job s. Each prompt
        is evaluated alone (`PromptKV.evaluate`), then placed in the sequence of its first job and
        shared (cells, not copies) with its other jobs."""
        kv, lib = self._kv, self._lib
        first: dict[int, int] = {}  # prompt index -> its first sequence
        for s, (i, _) in enumerate(group):
            first.setdefault(i, s)
        placed = len(first) > 1
        try:
            prompts = {i: kv.evaluate(toks[i], save=placed) for i in first}
            if placed:
                kv.place([(prompts[i], s) for i, s in first.items()])
            for s, (i, _) in enumerate(group):
                if s != first[i]:
                    lib.llama_memory_seq_cp(kv.mem, first[i], s, 0, len(toks[i]))
            out = self._decode(group, toks, {i: p.logits for i, p in prompts.items()}, params)
        except BaseException:
            kv.reset()
            raise
        kv.finish(prompts[group[-1][0]], len(group), placed)
        return out

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

    def _decode(self, group: list[tuple[int, int]], toks: list[Any], logits: dict[int, Any],
                params: SamplingParams) -> list[Completion]:
        """Decode sequence s of `group` (prompt index, seed) after its prompt, whose KV it holds at
        positions [0, len(prompt)) and whose last-token logits are ``logits[prompt index]``: one
        ``llama_decode`` per step for all unfinished sequences."""
        import numpy as np

        llm, lib = self.llm, self._lib
        seqs = [_Sequence(self, params, seed, min(params.max_tokens, self.config.n_ctx - len(toks[i])))
                for i, seed in group]
        step_logits = [logits[i] for i, _ in group]
        active = list(range(len(seqs)))
        batch = lib.llama_batch_init(len(seqs), 0, 1)
        try:
            while active:
                fed = [(s, tok) for s in active if (tok := seqs[s].step(step_logits[s])) is not None]
                for k, (s, tok) in enumerate(fed):
                    batch.token[k], batch.pos[k] = tok, len(toks[group[s][0]]) + len(seqs[s].ids) - 1
                    batch.n_seq_id[k], batch.seq_id[k][0], batch.logits[k] = 1, s, True
                batch.n_tokens = len(fed)
                if fed and (rc := lib.llama_decode(llm.ctx, batch)) != 0:
                    raise ModelError(f"llama_decode failed ({rc}) on a batch of {len(fed)} sequences")
                for k, (s, _) in enumerate(fed):  # a view: read by step() before the next decode
                    step_logits[s] = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, k),
                                                           shape=(llm.n_vocab(),))
                active = [s for s, _ in fed]
        finally:
            lib.llama_batch_free(batch)
            for s in seqs:
                s.free()
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
