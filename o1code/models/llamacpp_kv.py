"""The llama.cpp KV cache of `LlamaCppGenerator`: prompts evaluated canonically, and the prefix cache.

llama.cpp's CPU results depend on how tokens are batched (llamafile's tinyBLAS matmul only serves
batches of 2+ tokens; flash attention has batch-size-dependent paths) and on where a sequence's
cells lie in the cache among other sequences' cells (SmolLM2-135M: a prompt evaluated beside another
prompt's cells moved its last logits by up to 0.4), so a prompt token's KV entries and the first
sampled token's logits depend on what was evaluated with them. Letting llama-cpp-python reuse "the
longest common prefix" therefore made a seed's samples depend on what the cache held. Here every
prompt is evaluated alone in the cache (sequence 0), in fixed chunks of ``cache_chunk`` tokens
aligned to absolute positions (``[0, C)``, ``[C, 2C)``, ...), and only whole chunks so computed are
ever reused (or all of a prompt, with its saved last-token logits, when the same prompt comes
again): every KV entry and logit is then computed by the same operations whatever came before.

A batch of several prompts is then assembled from their saved sequence states (llama.cpp's
``llama_state_seq_get_data``: a copy of the sequence's KV cells) into an emptied cache, one sequence
each, so that the batch's layout too depends only on its prompts.

The prefix cache keeps the saved states of the most recent prompts (up to ``keep_bytes`` of KV
cells, least recently used dropped first): a multi-step rollout's next prompt is the last one plus a
step, so each episode's round re-evaluates its new tokens only, and a search's siblings share theirs.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from .errors import ModelError


@dataclass(eq=False)
class Prompt:
    """An evaluated prompt: its tokens, the logits after its last token, and (when saved) the state of
    the sequence that holds its KV cells, to restore it into another sequence or later."""

    tokens: Any  # np.ndarray of intc
    logits: Any
    state: Any = None  # ctypes uint8 array


class PromptKV:
    """Evaluates prompts into sequence 0 of `llm`'s KV cache (see the module docstring) and places them
    into the sequences of a batch. Between batches only sequence 0 holds cells: `held`, exactly."""

    def __init__(self, llm: Any, lib: Any, chunk: int, prefix_cache: bool, keep_bytes: int = 256 << 20) -> None:
        self.llm, self.lib, self.chunk, self.prefix_cache, self.keep_bytes = llm, lib, chunk, prefix_cache, keep_bytes
        self.mem = lib.llama_get_memory(llm.ctx)
        self.n_evaluated = 0  # running count of prompt tokens evaluated, to check/measure reuse
        self.reset()

    def reset(self) -> None:
        """Empty the KV cache and forget every prompt."""
        self.lib.llama_memory_clear(self.mem, True)
        self.held: Prompt | None = None  # what sequence 0 holds, exactly (other sequences are empty)
        self.cached: Prompt | None = None  # the last batch's last prompt
        self.batch: list[Prompt] = []  # the prompts evaluated for the batch being assembled
        self.recent: list[Prompt] = []  # saved prompts of earlier batches, least recently used first

    def _reusable(self) -> list[Prompt]:
        if not self.prefix_cache:
            return []
        out = [p for p in (self.held, self.cached, *self.batch, *reversed(self.recent)) if p is not None]
        return [p for i, p in enumerate(out) if p not in out[:i] and (p is self.held or p.state is not None)]

    def _save(self, p: Prompt) -> None:
        size = self.lib.llama_state_seq_get_size(self.llm.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        if self.lib.llama_state_seq_get_data(self.llm.ctx, buf, size, 0) != size:
            raise ModelError("llama.cpp could not copy a prompt's KV cells")
        p.state = buf

    def _restore(self, p: Prompt, seq: int) -> None:
        if self.lib.llama_state_seq_set_data(self.llm.ctx, p.state, len(p.state), seq) == 0:
            raise ModelError(f"llama.cpp could not place a {len(p.tokens)}-token prompt in the KV cache (n_ctx full?)")

    def evaluate(self, tokens: Any, save: bool) -> Prompt:
        """Bring sequence 0 to exactly `tokens` (the cache holding nothing else) and return the evaluated
        `Prompt`, its state saved when `save`. Reuses the longest run of whole canonical chunks it
        shares with a reusable prompt (held, cached, or earlier in this batch), or all of an identical one."""
        import numpy as np

        c, n = self.chunk, len(tokens)
        best, keep = None, 0
        for p in self._reusable():
            if np.array_equal(p.tokens, tokens):
                best, keep = p, n
                break
            m = min(len(p.tokens) // c * c, n - 1)  # re-evaluate >= 1 token: its logits start the sampling
            diff = np.flatnonzero(p.tokens[:m] != tokens[:m])
            k = (int(diff[0]) if diff.size else m) // c * c
            if k > keep or (k == keep and k and p is self.held):  # the held one needs no restoring
                best, keep = p, k
        if best is not None and best is not self.held:
            self.lib.llama_memory_clear(self.mem, True)
            self._restore(best, 0)
        elif best is None:
            self.lib.llama_memory_clear(self.mem, True)
        if keep == n:
            prompt = best
        else:
            self.lib.llama_memory_seq_rm(self.mem, 0, keep, -1)
            self.held = None
            prompt = Prompt(tokens, self._decode_chunks(tokens, keep))
        self.held = prompt
        if (save or self.prefix_cache) and prompt.state is None:
            self._save(prompt)
        self.batch.append(prompt)
        return prompt

    def _remember(self, prompts: list[Prompt]) -> None:
        """Move `prompts` (saved) to the most recent end of `recent`, then drop the least recently used
        beyond ``keep_bytes``."""
        kept = [p for p in self.recent if not any(p is q for q in prompts)]
        kept += [p for i, p in enumerate(prompts) if p.state is not None and not any(p is q for q in prompts[:i])]
        total = 0
        for i in range(len(kept) - 1, -1, -1):
            total += len(kept[i].state)
            if total > self.keep_bytes:
                kept = kept[i + 1:]
                break
        self.recent = kept

    def _decode_chunks(self, tokens: Any, start: int) -> Any:
        """Evaluate ``tokens[start:]`` into sequence 0, one ``llama_decode`` per aligned chunk; the logits
        after the last token."""
        import numpy as np

        lib, c, n = self.lib, self.chunk, len(tokens)
        batch = lib.llama_batch_init(c, 0, 1)
        try:
            for i in range(start, n, c):
                chunk = tokens[i:i + c]
                for j, tok in enumerate(chunk):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.seq_id[j][0] = int(tok), i + j, 1, 0
                    batch.logits[j] = i + j == n - 1
                batch.n_tokens = len(chunk)
                if (rc := lib.llama_decode(self.llm.ctx, batch)) != 0:
                    raise ModelError(f"llama_decode failed ({rc}) on a prompt chunk of {len(chunk)} tokens")
                self.n_evaluated += len(chunk)
        finally:
            lib.llama_batch_free(batch)
        return np.ctypeslib.as_array(lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),)).copy()

    def place(self, placements: list[tuple[Prompt, int]]) -> None:
        """Empty the cache and restore each (saved prompt, sequence) in order: a batch's layout that
        depends on its prompts only."""
        self.lib.llama_memory_clear(self.mem, True)
        self.held = None
        for p, seq in placements:
            self._restore(p, seq)

    def finish(self, last: Prompt, n_seqs: int, placed: bool) -> None:
        """After a batch of `n_seqs` sequences: keep `last` (the batch's last prompt) as the prefix cache.
        `placed`: the batch was assembled by `place` (the cache is emptied; `last` restores from its
        state), else sequence 0 holds `last` and keeps it."""
        if placed:
            self.lib.llama_memory_clear(self.mem, True)
            self.held = None
        else:
            for s in range(1, n_seqs):
                self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
            self.lib.llama_memory_seq_rm(self.mem, 0, len(last.tokens), -1)
            self.held = last
        if self.prefix_cache:
            self._remember(self.batch)
        self.cached, self.batch = last, []


__all__ = ["Prompt", "PromptKV"]
