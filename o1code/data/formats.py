"""The one step format used everywhere: prompts, step parsing, code extraction.

A reasoning trace is a sequence of steps. In a prompt each step reads::

    ### Step 2: Refine the pseudocode (Action 2)
    <body>
    <Step_End>

The prompt given to a model always ends with the next step's header, ``### Step k:``, so a model
continues with the step's title and body and stops at `STEP_END` (pass it as a stop string). The
*step text* (what an agent returns, what a trajectory stores) is everything after ``### Step k:``
up to, not including, `STEP_END`. A step is terminal when it contains a code block
(`o1code.data.extract.has_code`); its code is what `o1code.data.extract.extract_code` keeps of it.

Prompt styles (`o1code.data.prompts`): ``fewshot`` (the default) is a raw continuation, the
instructions and worked examples as plain text; ``instruct`` renders the model's chat template
around an EvalPlus-style instruction and the question, and the steps continue inside the
assistant turn, so step headers, `STEP_END` and the step parsing are the same in both.

Modes:
- ``pseudocode``: the paper's three actions, Action 1 (structure) -> Action 2 (refine, repeatable)
  -> Action 3 (code); the step title names the action, e.g. ``(Action 2)``.
- ``vanilla``: step-by-step chain of thought with no action types; the last step holds the code.
- ``direct``: one step, the code.

At the last allowed step the header itself asks for the code (`final_header`), so a trace never
runs out of steps without being told to write code. The few-shot examples are MBPP prompt-split
tasks (1-10) worked by hand; the test suite checks that their code passes.
"""

from __future__ import annotations

import re
from typing import Sequence

from o1code.data.errors import DataError
from o1code.data.extract import extract_code, has_code  # noqa: F401  (re-exported: the step format's API)
from o1code.data.problems import Problem
from o1code.data.prompts import PROMPT_STYLES  # noqa: F401  (re-exported)
from o1code.data.prompts import DEFAULT_CHAT_TEMPLATE, DIRECT_INSTRUCTION, check_prompt_style, instruct_user_turn, render_chat

STEP_END = "<Step_End>"
#: Stop strings of a step's generation: its end, or the next step's header (which `clean_step` would
#: cut off anyway; instruct models often go on to "### Step 2: Test the function" without `STEP_END`).
STEP_STOPS = (STEP_END, "\n### Step ")
MODES = ("pseudocode", "vanilla", "direct")
SHOW_TESTS = ("none", "first", "all")

_NEXT_HEADER = re.compile(r"\n#{2,4} ?Step \d+\s*:")
_ACTION = re.compile(r"\(\s*Action\s*([123])\s*\)", re.IGNORECASE)


def check_mode(mode: str) -> str:
    """Return `mode` if it is one of `MODES`, else raise `DataError`."""
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    return mode


def step_header(k: int) -> str:
    """The header that opens step `k` (1-based); a prompt ends with it."""
    return f"### Step {k}:"


def final_header(k: int, mode: str) -> str:
    """The header of a step that must hold the code (the last allowed one, or the only one)."""
    title = {
        "pseudocode": " Generate the Python code (Action 3)",
        "vanilla": " Write the final Python code",
        "direct": " Write the Python code",
    }[check_mode(mode)]
    return f"{step_header(k)}{title}\n"


def clean_step(text: str) -> tuple[str, bool]:
    """Cut a raw model continuation down to one step.

    Returns ``(step_text, was_cut)``: the text before the first `STEP_END` or before a following
    ``### Step k:`` header, with trailing whitespace removed; `was_cut` says whether anything
    was dropped (the model wrote past the end of its step).
    """
    cut = len(text)
    end = text.find(STEP_END)
    if end >= 0:
        cut = end
    header = _NEXT_HEADER.search(text, 0, cut)
    if header:
        cut = header.start()
    rest = text[cut:]
    was_cut = bool(rest.replace(STEP_END, "", 1).strip())
    return text[:cut].rstrip(), was_cut


def action_type(step: str) -> int | None:
    """The action number a pseudocode step declares in its title (1, 2 or 3), or None."""
    first_line = step.strip().split("\n", 1)[0] if step.strip() else ""
    m = _ACTION.search(first_line)
    return int(m.group(1)) if m else None


def describe_problem(problem: Problem, show_tests: str = "all") -> str:
    """The question as shown to a model: statement, the function to write, and visible tests."""
    if show_tests not in SHOW_TESTS:
        raise DataError(f"unknown show_tests {show_tests!r}; choose one of: {', '.join(SHOW_TESTS)}")
    lines = [problem.text.strip(), f"The function must be named `{problem.entry_point}`."]
    shown = {"none": (), "first": problem.visible(), "all": problem.tests}[show_tests]
    if shown:
        lines.append("Your code should pass these tests:")
        lines += [t.strip() for t in shown]
    return "\n".join(lines)


def format_steps(steps: Sequence[str], start: int = 1) -> str:
    """Render completed steps in the prompt format (header, text, `STEP_END`)."""
    return "".join(f"{step_header(start + i)}{s}\n{STEP_END}\n\n" for i, s in enumerate(steps))


_INSTRUCTIONS = {
    "pseudocode": (
        "Solve the programming question by refining pseudocode step by step. At each step choose "
        "exactly one action and explain your reasoning:\n"
        "- Action 1: define the algorithm structure in pseudocode: the main functions, their "
        "inputs, outputs and job, without implementation details.\n"
        "- Action 2: refine the pseudocode: make the steps, logic and operations of each function "
        "more detailed. It may be used several times.\n"
        "- Action 3: generate the Python code from the pseudocode, in one ```python block, with "
        "the exact function name and argument order the question uses.\n"
        f"Start each step with its title and action, and end it with {STEP_END}."
    ),
    "vanilla": (
        "Solve the programming question by reasoning step by step. Each step is one short piece "
        "of reasoning. The last step gives the complete solution in one ```python block, with the "
        f"exact function name the question uses. End each step with {STEP_END}."
    ),
    "direct": (
        "Solve the programming question. Answer with the complete solution in one ```python "
        f"block, with the exact function name the question uses, then {STEP_END}."
    ),
}

# Worked examples from MBPP's prompt split (task ids 1-10); their code passes the task's tests.
_EXAMPLES: dict[str, list[tuple[str, list[str]]]] = {
    "pseudocode": [
        (
            "mbpp/2",
            [
                " Define the function structure (Action 1)\n"
                "similar_elements(test_tup1, test_tup2) takes two tuples and returns a tuple of the "
                "elements found in both.\n```pseudo\nfunction similar_elements(a, b) -> tuple\n"
                "    find the common elements of a and b\n    return them as a sorted tuple\n```",
                " Refine the pseudocode (Action 2)\nSet intersection finds the common elements; "
                "sorting makes the order match the expected tuples.\n```pseudo\n"
                "function similar_elements(a, b):\n    common = set(a) intersect set(b)\n"
                "    return tuple(sorted(common))\n```",
                " Generate the Python code (Action 3)\n```python\n"
                "def similar_elements(test_tup1, test_tup2):\n"
                "    return tuple(sorted(set(test_tup1) & set(test_tup2)))\n```",
            ],
        ),
        (
            "mbpp/3",
            [
                " Define the function structure (Action 1)\nis_not_prime(n) returns True when n "
                "has a divisor other than 1 and itself.\n```pseudo\nfunction is_not_prime(n) -> bool\n"
                "    look for a divisor of n\n```",
                " Refine the pseudocode (Action 2)\nNumbers below 2 are not prime, and a divisor, "
                "if any, is at most sqrt(n).\n```pseudo\nfunction is_not_prime(n):\n"
                "    if n < 2: return True\n    for i from 2 to floor(sqrt(n)):\n"
                "        if n mod i == 0: return True\n    return False\n```",
                " Generate the Python code (Action 3)\n```python\nimport math\n\n"
                "def is_not_prime(n):\n    if n < 2:\n        return True\n"
                "    for i in range(2, math.isqrt(n) + 1):\n        if n % i == 0:\n"
                "            return True\n    return False\n```",
            ],
        ),
    ],
    "vanilla": [
        (
            "mbpp/2",
            [
                " The elements present in both tuples are the intersection of their sets.",
                " The expected tuples are in ascending order, so sort the intersection before "
                "turning it into a tuple.",
                " Write the final Python code\n```python\ndef similar_elements(test_tup1, test_tup2):\n"
                "    return tuple(sorted(set(test_tup1) & set(test_tup2)))\n```",
            ],
        ),
        (
            "mbpp/3",
            [
                " A number is not prime when it is below 2 or has a divisor between 2 and its "
                "square root.",
                " Write the final Python code\n```python\nimport math\n\ndef is_not_prime(n):\n"
                "    if n < 2:\n        return True\n    for i in range(2, math.isqrt(n) + 1):\n"
                "        if n % i == 0:\n            return True\n    return False\n```",
            ],
        ),
    ],
    "direct": [
        (
            "mbpp/2",
            [
                " Write the Python code\n```python\ndef similar_elements(test_tup1, test_tup2):\n"
                "    return tuple(sorted(set(test_tup1) & set(test_tup2)))\n```",
            ],
        ),
        (
            "mbpp/8",
            [
                " Write the Python code\n```python\ndef square_nums(nums):\n"
                "    return list(map(lambda x: x ** 2, nums))\n```",
            ],
        ),
    ],
}


def few_shot_examples(mode: str) -> list[tuple[str, list[str]]]:
    """The worked examples of a mode: ``(task_id, step_texts)`` pairs (copies)."""
    return [(tid, list(steps)) for tid, steps in _EXAMPLES[check_mode(mode)]]


def instruction(mode: str, prompt_style: str = "fewshot") -> str:
    """The instruction of a mode's prompts: for ``instruct`` direct mode, EvalPlus's; for the step
    modes the step format's, which ``instruct`` completes with the header the steps start with."""
    if check_prompt_style(prompt_style) == "fewshot":
        return _INSTRUCTIONS[check_mode(mode)]
    if check_mode(mode) == "direct":
        return DIRECT_INSTRUCTION
    return f"{_INSTRUCTIONS[mode]} Start step k with a line `{step_header(1).replace('1', 'k')} <title>`."


def build_prompt_prefix(problem: Problem, mode: str, show_tests: str = "all", examples: bool | None = None,
                        prompt_style: str = "fewshot", chat_template: str | None = None) -> str:
    """The fixed part of a prompt, before the steps.

    ``fewshot``: instructions, worked examples, the question, ``### Solution``. ``instruct``: the
    chat template (`chat_template`, None: `DEFAULT_CHAT_TEMPLATE`) rendered over a user turn with
    `instruction` and the question, up to the opening of the assistant turn; with `examples`, the
    worked examples come first as earlier user/assistant turns. `examples` None: the style's
    default (fewshot: with, instruct: without, as EvalPlus prompts instruct models).
    """
    from o1code.data.problems import get_problem  # the examples are bundled MBPP tasks

    style = check_prompt_style(prompt_style)
    text = instruction(mode, style)
    shots = [(get_problem(tid), steps) for tid, steps in _EXAMPLES[check_mode(mode)]] if (
        examples if examples is not None else style == "fewshot") else []
    if style == "instruct":
        turns: list[dict[str, str]] = []
        for example, steps in shots:
            turns += [{"role": "user", "content": instruct_user_turn(text, describe_problem(example, show_tests))},
                      {"role": "assistant", "content": format_steps(steps).rstrip("\n")}]
        turns.append({"role": "user", "content": instruct_user_turn(text, describe_problem(problem, show_tests))})
        return render_chat(chat_template or DEFAULT_CHAT_TEMPLATE, turns)
    parts = ["### Instruction\n" + text + "\n"]
    if shots:
        parts.append("### Examples\n")
        for example, steps in shots:
            parts.append(
                f"### Question\n{describe_problem(example, show_tests)}\n\n### Solution\n{format_steps(steps)}---\n"
            )
    parts.append(f"### Question\n{describe_problem(problem, show_tests)}\n\n### Solution\n")
    return "\n".join(parts)


def build_prompt(
    problem: Problem,
    mode: str,
    steps: Sequence[str] = (),
    max_steps: int | None = None,
    show_tests: str = "all",
    examples: bool | None = None,
    prefix: str | None = None,
    prompt_style: str = "fewshot",
    chat_template: str | None = None,
) -> str:
    """The exact text a model continues: prefix (`build_prompt_prefix`), completed steps, and the
    next step's header (inside the assistant turn in the ``instruct`` style).

    The header is `final_header` when the next step is the last allowed (`max_steps`) or the
    mode is ``direct``; else `step_header`. Pass a precomputed `prefix` to skip rebuilding it.
    """
    if prefix is None:
        prefix = build_prompt_prefix(problem, mode, show_tests, examples, prompt_style, chat_template)
    k = len(steps) + 1
    last = mode == "direct" or (max_steps is not None and k >= max_steps)
    header = final_header(k, mode) if last else step_header(k)
    return prefix + format_steps(steps) + header
