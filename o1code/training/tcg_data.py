"""Training records of the Test Case Generator: SFT (problem + reference -> test cases) and DPO (the
paper's negatives: the same inputs with the outputs shuffled so that at least one pair mismatches).

Built from problems with a reference and ``assert f(literals) == literal`` tests (MBPP's form); the
prompt is exactly the one the TCG sends at inference (`o1code.rewards.tcg.build_prompt`).
"""

from __future__ import annotations

import random
from typing import Sequence

from o1code.data import Problem
from o1code.rewards.tcg import build_prompt, cases_from_asserts, format_completion, parse_assert


def _case_list(problem: Problem, show_example: bool, include_example: bool) -> list[tuple[str, str]]:
    """(call, output literal) pairs for a problem's SFT target: its parseable dataset asserts; without
    `include_example`, minus the one shown as the prompt's example when others remain."""
    pairs = [(c, repr(v)) for c, v in cases_from_asserts(problem)]
    if show_example and not include_example and problem.visible() and len(pairs) > 1:
        shown = parse_assert(problem.visible()[0], problem.entry_point)  # what build_prompt shows
        if shown is not None:
            rest = [p for p in pairs if p[0] != shown[0]]
            pairs = rest or pairs
    return pairs


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A permutation with no fixed point (n >= 2), drawn uniformly by rejection."""
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def build_tcg_examples(problems: Sequence[Problem], seed: int = 0, show_example: bool = True,
                       include_example: bool = True) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Build the SFT and DPO records from problems with a reference and parseable asserts.

    Returns ``(sft, dpo)``. An SFT record is ``{"prompt", "completion"}`` (the prompt is `build_prompt`
    with k = the number of cases, the completion the ```case blocks). A DPO record is
    ``{"prompt", "chosen", "rejected"}``: chosen is the SFT completion, rejected pairs the same inputs
    with the outputs deranged (every pair mismatched when the values allow; problems whose outputs are
    all equal give no DPO record, since no shuffle can make a wrong pair). Records are shuffled with `seed`.
    `include_example`: the target also holds the test shown in the prompt (MBPP has 3 tests, so the
    model then learns to write the 3 cases inference asks for; without it targets have 2).
    """
    rng = random.Random(seed)
    sft: list[dict[str, str]] = []
    dpo: list[dict[str, str]] = []
    for p in problems:
        if not p.reference or not p.entry_point:
            continue
        pairs = _case_list(p, show_example, include_example)
        if not pairs:
            continue
        prompt = build_prompt(p, len(pairs), show_example=show_example)
        chosen = format_completion(pairs)
        sft.append({"prompt": prompt, "completion": chosen})
        outputs = [o for _, o in pairs]
        if len(set(outputs)) < 2:
            continue
        for _ in range(20):  # a derangement can still pair equal outputs: retry for a real mismatch
            perm = _derangement(len(pairs), rng)
            shuffled = [outputs[j] for j in perm]
            if any(a != b for a, b in zip(shuffled, outputs)):
                break
        dpo.append({"prompt": prompt, "chosen": chosen,
                    "rejected": format_completion([(c, o) for (c, _), o in zip(pairs, shuffled)])})
    rng.shuffle(sft)
    rng.shuffle(dpo)
    return sft, dpo


__all__ = ["build_tcg_examples"]
