"""What the TCG produced for one problem: `TCGCounts` and `TCGResult` (the disk cache's schema)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from o1code.rewards.errors import TCGError
from o1code.rewards.tcg.parse import parse_literal
from o1code.sandboxes import TestCase


@dataclass(frozen=True)
class TCGCounts:
    """What happened to the generated cases of one problem.

    Attributes:
        generated: Cases found in the model output (all completions).
        malformed: Cases whose input is not a literal-argument call of the entry point (skipped).
        duplicates: Well-formed cases whose call repeats an earlier one (skipped).
        invalid_input: Distinct inputs on which the reference errored or timed out (dropped).
        unrepresentable: Inputs whose reference value has no round-tripping literal or is too long.
        output_malformed: Cases with a usable input but no parseable ``# output:`` literal.
        checked: Distinct inputs the reference ran on (the denominator of the paper's figure).
        model_output_matches_reference: Of `checked`, those where the model's output equals the
            reference's value (the paper's 80.8% / 89.2% figure is this over `checked`). A copy
            of the example shown in the prompt counts here too; ``cases`` marks it (`TCGResult`),
            so evaluations can leave it out.
        kept: Tests kept.
    """

    generated: int = 0
    malformed: int = 0
    duplicates: int = 0
    invalid_input: int = 0
    unrepresentable: int = 0
    output_malformed: int = 0
    checked: int = 0
    model_output_matches_reference: int = 0
    kept: int = 0


@dataclass(frozen=True)
class TCGResult:
    """The generated tests of one problem.

    Attributes:
        task_id: The problem.
        tests: The kept tests (``TestCase(call, expected)``).
        counts: See `TCGCounts`.
        verified: True when the expected values come from running the reference; False when they are
            the model's own outputs (no reference).
        completions: The raw model outputs.
        cases: Per distinct well-formed input: ``{"call", "model_output" (repr or None),
            "reference_output" (repr or None), "error" ("" or why it was dropped), "shown_example"
            (the call is the example shown in the prompt, see `shown_example_call`), "matched" (the
            model's output equals the reference's value; None when the reference did not run on it or
            there is no reference)}``. Entries cached before these last two keys existed lack them:
            read them with ``.get`` (missing = not shown / unknown).
        cached: True when this result was read from the disk cache.
    """

    task_id: str
    tests: tuple[TestCase, ...]
    counts: TCGCounts
    verified: bool
    completions: tuple[str, ...] = ()
    cases: tuple[dict, ...] = ()
    cached: bool = False

    @property
    def asserts(self) -> list[str]:
        """The kept tests as assert statements (``TestCase.as_assert``)."""
        return [t.as_assert() for t in self.tests]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (expected values as literal text); `from_dict` reads it back."""
        return {
            "task_id": self.task_id,
            "tests": [{"call": t.call, "expected": repr(t.expected)} for t in self.tests],
            "counts": dataclasses.asdict(self.counts),
            "verified": self.verified,
            "completions": list(self.completions),
            "cases": list(self.cases),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> "TCGResult":
        tests = []
        for t in d["tests"]:
            ok, value = parse_literal(t["expected"])
            if not ok:
                raise TCGError(f"cached expected value does not parse: {t['expected'][:100]!r}")
            tests.append(TestCase(t["call"], value))
        return cls(d["task_id"], tuple(tests), TCGCounts(**d["counts"]), bool(d["verified"]),
                   tuple(d.get("completions", ())), tuple(d.get("cases", ())), cached)
