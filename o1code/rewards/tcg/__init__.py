"""Test Case Generator (TCG, o1-Coder section 2): a model writes test inputs, the reference writes outputs.

The prompt follows the paper's template (``### Instruction`` / ``### Problem`` / ``### Code Part`` /
``### Test Part``), adapted to MBPP's function-call form: each test case is a ```` ```case ```` fenced
block with a ``# input:`` line (a call of the entry point with literal arguments, e.g.
``f(1, [2, 3])``) and a ``# output:`` line (a Python literal).

With a reference solution, every kept test's expected value is the value the reference returns on the
generated input, computed in the sandbox (`LocalSandbox.evaluate`), so the tests are correct by
construction; inputs on which the reference errors or times out are dropped. Without one, the model's
own outputs are kept and the result is flagged ``verified=False``.

```python
tcg = TestCaseGenerator(load_generator("default"), sandbox)
result = tcg.generate(problem)        # TCGResult: result.tests, result.counts, result.verified
tcg.tests_for(problem)                # the kept TestCases: a TestSource for CodeEnv
```

Modules, by concern: `config` (`TCGConfig`, cache location), `prompt` (the template), `parse`
(model output and dataset asserts -> cases, literals), `values` (the reference's values in the
sandbox), `result` (`TCGCounts`, `TCGResult`), `generator` (`TestCaseGenerator` and its disk cache).
"""

from o1code.rewards.tcg.config import TCG_FORMAT_VERSION, TCGConfig, default_cache_dir
from o1code.rewards.tcg.generator import GeneratorLike, SandboxLike, TestCaseGenerator
from o1code.rewards.tcg.parse import (
    ParsedCase,
    cases_from_asserts,
    normal_call,
    parse_assert,
    parse_call,
    parse_cases,
    parse_literal,
    value_literal,
)
from o1code.rewards.tcg.prompt import INSTRUCTION, build_prompt, format_case, format_completion, shown_example_call
from o1code.rewards.tcg.result import TCGCounts, TCGResult
from o1code.rewards.tcg.values import evaluate_calls
from o1code.sandboxes import CallResult

__all__ = [
    "CallResult", "ParsedCase", "TCGConfig", "TCGCounts", "TCGResult", "TestCaseGenerator",
    "build_prompt", "cases_from_asserts", "evaluate_calls", "format_case", "format_completion",
    "normal_call", "parse_assert", "parse_call", "parse_cases", "shown_example_call", "value_literal",
    # also importable, as before the split: settings and helpers
    "INSTRUCTION", "TCG_FORMAT_VERSION", "GeneratorLike", "SandboxLike", "default_cache_dir", "parse_literal",
]
