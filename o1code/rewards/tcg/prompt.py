"""The TCG prompt (the paper's template, adapted to MBPP's function-call form) and its completions.

Each test case is a ```` ```case ```` fenced block with a ``# input:`` line (a call of the entry
point with literal arguments) and a ``# output:`` line (a Python literal).
"""

from __future__ import annotations

from typing import Sequence

from o1code.data import Problem
from o1code.rewards.tcg.parse import normal_call, parse_assert

INSTRUCTION = (
    "Please complete the task in the code part and generate test cases in the test part that can be "
    "used to test the quality of the generated code."
)


def format_case(call: str, output: str) -> str:
    """One test case block in the template's format (``case`` fence, ``# input:`` / ``# output:``)."""
    return f"```case\n# input:\n{call}\n# output:\n{output}\n```"


def build_prompt(problem: Problem, k: int = 3, *, show_example: bool = True, use_reference: bool = True) -> str:
    """Return the TCG prompt for `problem`: the paper's four sections, ending where the cases start.

    The Code Part holds the reference in a python fence (or says there is none). The Test Part is a
    bracketed request for `k` cases followed by a newline; the model's completion are the case blocks.
    """
    example = ""
    if show_example and problem.visible():  # a visible test only: the judging tests stay hidden
        example = f"\nExample test:\n{problem.visible()[0]}\n"
    reference = problem.reference if (use_reference and problem.reference) else None
    code = f"```python\n{reference.strip()}\n```" if reference else "(no reference solution is given)"
    return (
        f"### Instruction\n{INSTRUCTION}\n\n"
        f"### Problem\n{problem.text.strip()}\n"
        f"The function to test is `{problem.entry_point}`.\n{example}\n"
        f"### Code Part\n{code}\n\n"
        f"### Test Part\n"
        f"[Generate {k} test cases. Each is a ```case block: after `# input:` one call of "
        f"`{problem.entry_point}` with literal arguments, after `# output:` the Python literal it returns.]\n"
    )


def format_completion(cases: Sequence[tuple[str, str]]) -> str:
    """The Test Part body for (call, output-literal) pairs: the SFT target and the DPO responses."""
    return "\n".join(format_case(c, o) for c, o in cases) + "\n"


def shown_example_call(problem: Problem, show_example: bool = True) -> str | None:
    """The canonical call of the example the TCG prompt shows (``problem.visible()[0]``), or None.

    None when `show_example` is off, the problem has no visible test, or the test is not of the
    ``assert f(literals) == literal`` form (`parse_assert`); then no generated case counts as a copy.
    """
    if not show_example or not problem.visible():
        return None
    parsed = parse_assert(problem.visible()[0], problem.entry_point)
    return normal_call(parsed[0]) if parsed is not None else None
