"""Chat-template rendering for the ``instruct`` prompt style (`o1code.data.formats` builds the prompts).

A prompt style says how a problem becomes the text a model continues:

- ``fewshot``: a raw continuation: instructions, worked examples and the question as plain text.
- ``instruct``: the model's chat template (a Jinja string: a GGUF's ``tokenizer.chat_template``, a
  Hugging Face tokenizer's ``chat_template``) around a standard instruction and the question, as
  EvalPlus prompts instruct models, rendered here to raw text that ends inside the assistant turn;
  the step headers continue there. Generators stay raw (``chat_template=False``): the rendered text
  is exactly what the model continues, so log-probs of a step are those of the env's prompt.

The data layer cannot ask a model for its template, so the caller passes the string (the
pipelines read it off their generator, `o1code.models.chat_template_of`); None means
`DEFAULT_CHAT_TEMPLATE`, the default model's (Qwen2.5's ChatML, with its default system message).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from o1code.data.errors import DataError

PROMPT_STYLES = ("fewshot", "instruct")

#: Qwen2.5(-Coder)-Instruct's template, cut to what a conversation without tools renders: the same
#: text as the GGUF's own template (a test checks it on the default model) for these prompts.
DEFAULT_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: EvalPlus's instruction to instruct models (its ``instruction_prefix``).
DIRECT_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a "
                      "markdown code block:")


def check_prompt_style(style: str) -> str:
    """Return `style` if it is one of `PROMPT_STYLES`, else raise `DataError`."""
    if style not in PROMPT_STYLES:
        raise DataError(f"unknown prompt_style {style!r}; choose one of: {', '.join(PROMPT_STYLES)}")
    return style


def render_chat(template: str, messages: str | Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                **extra: Any) -> str:
    """Render a Jinja chat template (Hugging Face / GGUF style) over `messages` (a string: one user
    turn), with the generation prompt (the opening of the assistant turn) when asked. ``bos_token``
    and ``eos_token`` default to ``""``: a raw generator adds the BOS token itself when it tokenizes."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str) -> None:
        raise DataError(f"chat template refused the conversation: {msg}")

    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                **{"bos_token": "", "eos_token": "", **extra})
    except TemplateError as e:
        raise DataError(f"cannot render the chat template: {e}") from e


def instruct_user_turn(instruction: str, question: str) -> str:
    """A user turn in EvalPlus's shape: the instruction, then the question in a bare fence."""
    return f"{instruction}\n```\n{question.strip()}\n```\n"
