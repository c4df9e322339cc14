"""A scripted step policy for pipeline tests (collect -> PRM -> best-of-N, self-play): step 1 is a good or
a bad plan, step 2 the problem's reference code after a good plan and a wrong function after a bad one,
its title naming the plan. So a step's value is learnable from its text, and a PRM that learned it picks
the right answer on problems it never saw. Subclasses choose the plans (`good_plan`)."""

import re

from o1code.models import Completion

GOOD_PLAN = " Plan good: follow the statement (Action 1)"
BAD_PLAN = " Plan bad: return nothing (Action 1)"


class PlanPolicy:
    """Generator protocol (`generate(prompts, params)`); `problems` are those whose prompts it will see."""

    def __init__(self, problems):
        self.by_entry = {p.entry_point: p for p in problems}

    def good_plan(self, prompt: str, i: int, params) -> bool:
        raise NotImplementedError

    def on_call(self, entry: str) -> None:
        """Called once per prompt (a hook for crash tests)."""

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            solution = prompt.rsplit("### Solution\n", 1)[1]
            entry = re.findall(r"The function must be named `([^`]+)`", prompt)[-1]
            self.on_call(entry)
            depth = len(re.findall(r"^### Step \d+:", solution, flags=re.M)) - 1
            texts = []
            for i in range(params.n):
                if depth == 0:
                    texts.append(GOOD_PLAN if self.good_plan(prompt, i, params) else BAD_PLAN)
                else:
                    good = GOOD_PLAN in solution
                    code = self.by_entry[entry].reference if good else f"def {entry}(*args):\n    return None"
                    texts.append(f" Code of the {'good' if good else 'bad'} plan (Action 3)\n```python\n{code}\n```")
            out.append([Completion(text=t, token_ids=[1] * 4, finish_reason="stop") for t in texts])
        return out
