"""Test Case Generator: parsing, execution-verified outputs, dedupe, cache, env source, mutants, eval."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import gymnasium as gym
import pytest

import o1code  # noqa: F401  (registers the env ids)
from o1code.data import Problem, get_problem
from o1code.models import Completion
from o1code.pipeline.tcg import (
    TCGEvalConfig,
    TCGTrainConfig,
    build_tcg_examples,
    evaluate_problem,
    run_tcg_eval,
    sample_prompt,
    sample_wrong_solutions,
    summarise_tcg,
    tcg_markdown,
)
from o1code import rewards
from o1code.rewards import TCGConfig, TCGError, TestCaseGenerator
from o1code.rewards.mutants import mutants
from o1code.rewards.tcg import (
    build_prompt,
    evaluate_calls,
    parse_assert,
    parse_cases,
    value_literal,
)
from o1code.sandboxes import InvalidTestError, LocalSandbox, TestCase, Verdict


class ScriptedGenerator:
    """A deterministic stand-in model: returns canned text, records what it was asked."""

    name = "scripted"

    def __init__(self, texts: list[str] | dict[str, list[str]]) -> None:
        self.texts = texts
        self.calls: list[tuple[list[str], object]] = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            if isinstance(self.texts, dict):
                texts = next(v for k, v in self.texts.items() if f"`{k}`" in p)
            else:
                texts = self.texts
            out.append([Completion(texts[j % len(texts)], finish_reason="stop") for j in range(params.n)])
        return out


class ExplodingGenerator:
    name = "scripted"

    def generate(self, prompts, params):
        raise AssertionError("the model must not be called: the result is cached")


def case(call: str, out: str) -> str:
    return f"```case\n# input:\n{call}\n# output:\n{out}\n```\n"


DOUBLE = Problem(
    task_id="t/double", text="Double a number; negative numbers are an error.", entry_point="double",
    tests=("assert double(2) == 4",),
    reference=(
        "def double(x):\n"
        "    if x < 0:\n        raise ValueError('negative')\n"
        "    if x == 99:\n        while True: pass\n"
        "    return 2 * x\n"
    ),
)


@pytest.fixture(scope="module")
def sandbox():
    with LocalSandbox(workers=2) as sb:
        yield sb


def tcg_for(texts, sandbox, **cfg) -> TestCaseGenerator:
    cfg.setdefault("cache_dir", "")
    return TestCaseGenerator(ScriptedGenerator(texts), sandbox, TCGConfig(**cfg))


# ------------------------------------------------------------------------------------ parsing


def test_parse_messy_model_output():
    text = (
        "Sure! Here are the tests you asked for.\n"
        + case("double(3)", "6")
        + "```case\n# input: double( 4 )\n# output: 8\n```\n"         # same line, odd spacing
        + "```case\n# Input:\n>>> double(5)\n# Output:\n10  # ten\n```\n"  # prompt marker, comment
        + case("triple(3)", "9")                                        # wrong function
        + case("double(x)", "0")                                        # non-literal argument
        + case("double(*[1])", "2")                                     # starred
        + case("double(1) + 1", "3")                                    # not a single call
        + case("double(7)", "fourteen")                                 # output not a literal
        + "```case\n# input:\ndouble(8)\n"                              # truncated: no output
    )
    cases = parse_cases(text, "double")
    assert [c.input_ok for c in cases] == [True, True, True, False, False, False, False, True, True]
    assert [c.call for c in cases if c.input_ok] == ["double(3)", "double(4)", "double(5)", "double(7)", "double(8)"]
    good = [c for c in cases if c.input_ok]
    assert [c.output for c in good[:3]] == [6, 8, 10]
    assert [c.output_ok for c in good] == [True, True, True, False, False]
    assert "triple" in cases[3].error
    assert cases[4].error == "an argument is not a literal"


def test_parse_falls_back_to_asserts_and_never_raises():
    cases = parse_cases("assert double(2) == 4\nassert double(3)==6\nblah", "double")
    assert [(c.call, c.output) for c in cases] == [("double(2)", 4), ("double(3)", 6)]
    for junk in ["", "\x00\xff" * 50, "# input:" * 1000, "```case\n# input:\n(((((\n# output:\n]]]\n```",
                 "# input:\n" + "[" * 5000 + "\n# output:\n1"]:
        for c in parse_cases(junk, "double"):
            assert not c.input_ok


def test_parse_assert_and_value_literals():
    assert parse_assert("assert f([1, 2], k=3) == (1, 'a')", "f") == ("f([1, 2], k=3)", (1, "a"))
    assert parse_assert("assert f(1) != 2", "f") is None
    assert parse_assert("assert set(f(1)) == {1}", "f") is None
    assert parse_assert("assert math.isclose(f(1), 2.0)", "f") is None
    assert value_literal({1, 2}) == "{1, 2}"
    assert value_literal(set()) == "set()" and value_literal(frozenset({3})) == "frozenset({3})"
    assert value_literal(float("nan")) is None and value_literal(math.inf) is None
    assert value_literal(object()) is None
    assert value_literal(True) == "True"


def test_prompt_follows_the_paper_template():
    p = get_problem("mbpp/11")
    prompt = build_prompt(p, 3)
    heads = ["### Instruction", "### Problem", "### Code Part", "### Test Part"]
    assert [prompt.index(h) for h in heads] == sorted(prompt.index(h) for h in heads)
    assert "```python\n" + p.reference.strip() in prompt and p.tests[0] in prompt
    assert "[Generate 3 test cases" in prompt and "remove_Occ" in prompt
    bare = build_prompt(replace(p, reference=None), 2, show_example=False)
    assert "no reference" in bare and p.tests[0] not in bare


# ------------------------------------------------------------------------------- verification


def test_outputs_come_from_the_reference(sandbox):
    text = (
        case("double(3)", "6")       # model right
        + case("double(4)", "9")     # model wrong: the test still gets the reference's 8
        + case("double(-1)", "-2")   # reference raises: dropped
        + case("double(99)", "198")  # reference loops: dropped, and the others survive it
        + case("double(5)", "oops")  # output unparseable: the input is still used
        + case("double(2.5)", "5.0")
    )
    res = tcg_for([text], sandbox, timeout_s=1.0).generate(DOUBLE)
    assert res.verified
    assert res.tests == (TestCase("double(3)", 6), TestCase("double(4)", 8), TestCase("double(5)", 10),
                         TestCase("double(2.5)", 5.0))
    c = res.counts
    assert (c.generated, c.malformed, c.duplicates, c.invalid_input) == (6, 0, 0, 2)
    assert (c.checked, c.model_output_matches_reference, c.output_malformed, c.kept) == (4, 2, 1, 4)
    assert res.asserts[1] == "assert double(4) == 8"
    errors = {e["call"]: e["error"] for e in res.cases}
    assert errors["double(-1)"].startswith("runtime_error") and errors["double(99)"].startswith("timeout")
    # Every kept test is correct by construction: the reference passes all of them.
    assert sandbox.run(DOUBLE.reference, list(res.tests)).verdict is Verdict.PASSED


def test_evaluate_calls_returns_plain_values(sandbox):
    code = "def f(x):\n    return {'k': [x, (x,)], 's': {x}}\n"
    out = evaluate_calls(sandbox, code, ["f(1)", "f([])", "g(1)"])
    assert out[0].ok and out[0].value == {"k": [1, (1,)], "s": {1}}
    assert not out[1].ok  # unhashable in a set: the call raised
    assert not out[2].ok and out[2].verdict is Verdict.RUNTIME_ERROR and "NameError" in out[2].error


def test_sandbox_evaluate_gives_each_call_its_own_result(sandbox):
    code = ("import os\ndef f(x):\n    if x == 2:\n        while True: pass\n"
            "    if x == 3:\n        os._exit(3)\n    return x * 2\n")
    out = sandbox.evaluate(code, ["f(1)", "f(2)", "f(3)", "f( 4 )", "f('a')"], timeout_s=1.0)
    assert [r.ok for r in out] == [True, False, False, True, True]
    assert (out[0].value, out[3].value, out[4].value) == (2, 8, "aa")
    # the calls the timeout took down were run again one by one: each failure is the call's own
    assert out[1].verdict is Verdict.TIMEOUT and out[1].message == "time limit exceeded (1 s)"
    assert out[2].verdict is Verdict.RUNTIME_ERROR and out[2].message.startswith("process exited (status 3)")
    assert sandbox.evaluate(code, []) == []
    bad = sandbox.evaluate("def f(:\n", ["f(1)", "f(2)"])
    assert [r.verdict for r in bad] == [Verdict.SYNTAX_ERROR] * 2 and bad[0].value is None
    setup = sandbox.evaluate(code, ["f(1)"], setup_code="raise KeyError('k')")[0]
    assert setup.verdict is Verdict.RUNTIME_ERROR and setup.message.startswith("setup code: KeyError")
    with pytest.raises(InvalidTestError):
        sandbox.evaluate(code, ["x = 1"])


def test_tcg_needs_a_sandbox_that_evaluates():
    class RunOnly:
        def run(self, *a, **k): ...
        def run_many(self, jobs): ...
        def close(self): ...

    with pytest.raises(TCGError, match="evaluate"):
        evaluate_calls(RunOnly(), "def f(x):\n    return x\n", ["f(1)"])


def test_duplicates_are_removed_across_samples(sandbox):
    a = case("double(3)", "6") + case("double( 3 )", "6") + case("double(4)", "8")
    b = case("double(4)", "8") + case("double(6)", "12")
    res = tcg_for([a, b], sandbox, n_samples=2).generate(DOUBLE)
    assert [t.call for t in res.tests] == ["double(3)", "double(4)", "double(6)"]
    assert res.counts.duplicates == 2 and res.counts.generated == 5


def test_without_reference_the_model_outputs_are_kept_unverified(sandbox):
    p = replace(DOUBLE, reference=None)
    res = tcg_for([case("double(3)", "7") + case("double(4)", "what")], sandbox).generate(p)
    assert not res.verified
    assert res.tests == (TestCase("double(3)", 7),)
    assert res.counts.checked == 0 and res.counts.unrepresentable == 1


def test_garbage_output_counts_and_never_crashes(sandbox):
    res = tcg_for(["I cannot help with that.", "```case\n# input:\nprint(1)\n```"], sandbox, n_samples=2).generate(DOUBLE)
    assert res.tests == () and res.counts.generated == 1 and res.counts.malformed == 1
    with pytest.raises(TCGError):
        tcg_for([""], sandbox).generate(replace(DOUBLE, entry_point=""))
    with pytest.raises(TCGError):
        TCGConfig(k=0)


def test_cache_on_disk(sandbox, tmp_path):
    text = [case("double(3)", "6")]
    first = tcg_for(text, sandbox, cache_dir=str(tmp_path), seed=1).generate(DOUBLE)
    assert not first.cached
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("t_double-")  # no temp file left behind
    again = TestCaseGenerator(ExplodingGenerator(), sandbox, TCGConfig(cache_dir=str(tmp_path), seed=1)).generate(DOUBLE)
    assert again.cached and again.tests == first.tests and again.counts == first.counts
    gen = ScriptedGenerator(text)
    TestCaseGenerator(gen, sandbox, TCGConfig(cache_dir=str(tmp_path), seed=2)).generate(DOUBLE)
    assert len(gen.calls) == 1 and gen.calls[0][1].seed == 2  # another seed is another entry
    assert len(list(tmp_path.iterdir())) == 2
    files[0].write_text("{not json")  # a corrupt entry is ignored and rewritten
    fresh = TestCaseGenerator(ScriptedGenerator(text), sandbox, TCGConfig(cache_dir=str(tmp_path), seed=1)).generate(DOUBLE)
    assert not fresh.cached and json.loads(files[0].read_text())["tests"] == [{"call": "double(3)", "expected": "6"}]


# ----------------------------------------------------------------------------------- env source


def test_env_rewards_with_generated_tests_and_reports_dataset_tests(sandbox):
    # Generated tests only use characters absent from the string, so a do-nothing solution passes
    # them while the dataset tests still catch it.
    texts = {"remove_Occ": [case('remove_Occ("abc", "z")', "'abc'") + case('remove_Occ("", "a")', "''")]}
    tcg = TestCaseGenerator(ScriptedGenerator(texts), sandbox, TCGConfig(cache_dir=""))
    assert isinstance(tcg, rewards.TestSource)
    env = gym.make("O1Code-MBPP-Direct-v0", task_ids=["mbpp/11"], sandbox=sandbox, tests=tcg)
    env.reset(seed=0)
    _, reward, term, _, info = env.step("```python\ndef remove_Occ(s, ch):\n    return s\n```")
    assert term and reward == 1.0
    assert info["tests"] == ["assert remove_Occ('abc', 'z') == 'abc'", "assert remove_Occ('', 'a') == ''"]
    assert info["eval"]["verdict"] == "failed" and info["eval"]["total"] == 3
    env.close()


def test_env_accepts_tcg_string_lazily(sandbox):
    env = gym.make("O1Code-MBPP-Direct-v0", task_ids=["mbpp/11"], sandbox=sandbox, tests="tcg:hf:/nonexistent")
    src = env.unwrapped.test_source
    assert isinstance(src, TestCaseGenerator) and src.model_name == "hf:/nonexistent"
    assert src.sandbox is sandbox  # the env's sandbox runs the reference; no model loaded yet
    env.close()


def test_fallback_to_dataset_tests_when_nothing_is_kept(sandbox):
    p = get_problem("mbpp/11")
    assert tcg_for(["nothing"], sandbox).tests_for(p) == p.tests
    assert list(tcg_for(["nothing"], sandbox, fallback_to_dataset=False).tests_for(p)) == []


# -------------------------------------------------------------------------------------- mutants


def test_mutants():
    code = "def f(a, b):\n    if a < b and a > 0:\n        return (a + 1, b)\n    return (b, a)\n"
    ms = mutants(code)
    srcs = [m for m, _ in ms]
    assert len(srcs) == len(set(srcs)) and all(compile(s, "m", "exec") for s in srcs)
    kinds = {d.split(" ")[0] for _, d in ms}
    assert {"flip", "swap", "int", "drop"} <= kinds
    assert "if a <= b and a > 0" in "\n".join(srcs) and "if a < b or a > 0" in "\n".join(srcs)
    assert "return (a + 1,)" in "\n".join(srcs) and "return (a - 1, b)" in "\n".join(srcs)
    few = mutants(code, max_mutants=3, seed=7)
    assert len(few) == 3 and few == mutants(code, max_mutants=3, seed=7) and set(few) <= set(ms)
    assert mutants("def broken(:") == []


def test_mutant_set_on_mbpp_fails_dataset_tests(sandbox):
    p = get_problem("mbpp/11")
    tcg = tcg_for([case('remove_Occ("hello", "l")', "'heo'") + case('remove_Occ("abcda", "a")', "'bcd'")
                   + case('remove_Occ("xyz", "q")', "'xyz'")], sandbox)
    row = evaluate_problem(tcg, p, sandbox, wrong=["def remove_Occ(s, ch):\n    return s[1:-1]\n",
                                                  p.reference], max_mutants=4)
    # The reference itself is not "wrong" (it passes the dataset tests), so it is not counted.
    assert row["n_mutants"] == 4 and row["n_wrong"] == 5
    assert row["wrong"]["mutant"]["n"] == 4 and row["wrong"]["sample"]["n"] == 1
    assert (row["samples_given"], row["samples_correct"]) == (2, 1)
    assert "rejected_dataset" not in row  # 100% by selection: not a figure
    assert 0 < sum(t["rejected_generated"] for t in row["wrong"].values()) <= 5
    assert [w["kind"] for w in row["wrong_solutions"]].count("mutant") == 4
    assert row["reference_rejected"] == 0
    assert row["counts"]["kept"] == 3 and row["counts"]["model_output_matches_reference"] == 3


# ------------------------------------------------------------------------------------ eval figures


def _tally(n=0, gen=0, vis=0, beyond=0):
    return dict(n=n, rejected_generated=gen, rejected_visible=vis, caught_beyond_visible=beyond)


def _row(tid, generated, malformed, invalid, checked, matches, kept, samples=None, mutants_=None,
         copied=0, copied_matched=0, shown=True, ref_rej=0):
    counts = dict(generated=generated, malformed=malformed, duplicates=0, invalid_input=invalid, unrepresentable=0,
                  output_malformed=0, checked=checked, model_output_matches_reference=matches, kept=kept)
    wrong = {"sample": samples or _tally(), "mutant": mutants_ or _tally()}
    return dict(task_id=tid, verified=True, counts=counts, wrong=wrong,
                n_wrong=wrong["sample"]["n"] + wrong["mutant"]["n"], reference_rejected=ref_rej,
                example=dict(shown=shown, copied=copied, copied_matched=copied_matched))


def test_summary_figures_hand_computed():
    rows = [_row("a", 3, 0, 1, 2, 2, 2, samples=_tally(4, 3, 1, 2), mutants_=_tally(2, 1, 1, 0),
                 copied=1, copied_matched=1),
            _row("b", 4, 1, 0, 3, 1, 3, samples=_tally(2, 2, 2, 0), mutants_=_tally(3, 3, 0, 3)),
            _row("c", 2, 2, 0, 0, 0, 0, shown=False)]
    s = summarise_tcg(rows, k=3, model="m", split="validation")
    assert s["output_match_with_example"] == pytest.approx(3 / 5)  # (2 + 1) / (2 + 3)
    assert s["output_match"] == pytest.approx(2 / 4)               # a's copied example left out
    assert s["example_copied"] == pytest.approx(1 / 2)             # a of a, b (c showed none)
    assert s["all_correct"] == pytest.approx(1 / 2)                # a yes, b no, c has none checked
    assert s["input_validity"] == pytest.approx(5 / 6)             # 5 ran of 5 + 1 well-formed distinct
    assert s["malformed_rate"] == pytest.approx(3 / 9)
    assert s["at_least_k"] == pytest.approx(1 / 3)
    # (d), per category: shares of that category's wrong solutions.
    assert (s["wrong_samples"], s["wrong_mutants"], s["wrong_solutions"]) == (6, 5, 11)
    assert s["samples_rejected_generated"] == pytest.approx(5 / 6)
    assert s["samples_rejected_visible"] == pytest.approx(3 / 6)
    assert s["samples_caught_beyond_visible"] == pytest.approx(2 / 6)
    assert s["samples_caught_of_visible_passing"] == pytest.approx(2 / 3)
    assert s["mutants_rejected_generated"] == pytest.approx(4 / 5)
    assert s["mutants_rejected_visible"] == pytest.approx(1 / 5)
    assert s["mutants_caught_beyond_visible"] == pytest.approx(3 / 5)
    assert "rejected_dataset" not in s and s["reference_false_rejections"] == 0
    z = summarise_tcg([_row("z", 0, 0, 0, 0, 0, 0)], 3)
    assert z["output_match"] is None and z["samples_rejected_generated"] is None and z["wrong_mutants"] == 0
    md = tcg_markdown([s])
    assert "| (d) sampled solutions: caught by the generated tests, missed by the visible test | 33.3% |" in md
    assert "| (d) mutants of the reference: wrong solutions | 5 |" in md
    assert "dataset tests reject 100% of them by construction" in md


def test_figure_a_leaves_out_the_copied_example(sandbox):
    # The shown example (double(2) == 4, the visible test) is copied with its right output (spelled
    # differently); the model's other outputs are half wrong.
    text = (case("double( 2 )", "4") + case("double(3)", "7") + case("double(4)", "8") + case("double(5)", "11"))
    tcg = tcg_for([text], sandbox)
    res = tcg.generate(DOUBLE)
    flags = {c["call"]: (c["shown_example"], c["matched"]) for c in res.cases}
    assert flags == {"double(2)": (True, True), "double(3)": (False, False), "double(4)": (False, True),
                     "double(5)": (False, False)}
    row = evaluate_problem(tcg, DOUBLE, sandbox, max_mutants=0)
    assert row["example"] == {"shown": True, "copied": 1, "copied_matched": 1}
    s = summarise_tcg([row], k=3)
    assert s["output_match_with_example"] == pytest.approx(2 / 4)
    assert s["output_match"] == pytest.approx(1 / 3) and s["output_match"] < s["output_match_with_example"]
    assert s["example_copied"] == 1.0 and s["all_correct"] == 0.0
    # Not shown in the prompt: no case is a copy, and both figures agree.
    hidden = tcg_for([text], sandbox, show_example=False)
    row2 = evaluate_problem(hidden, DOUBLE, sandbox, max_mutants=0)
    assert row2["example"] == {"shown": False, "copied": 0, "copied_matched": 0}
    s2 = summarise_tcg([row2], k=3)
    assert s2["output_match"] == s2["output_match_with_example"] == pytest.approx(2 / 4)
    assert s2["example_copied"] is None


def test_old_cache_entries_without_example_flags_still_read(sandbox, tmp_path):
    text = [case("double(2)", "4") + case("double(3)", "7")]
    tcg_for(text, sandbox, cache_dir=str(tmp_path)).generate(DOUBLE)
    (entry,) = tmp_path.iterdir()
    d = json.loads(entry.read_text())
    for c in d["cases"]:
        del c["shown_example"], c["matched"]
    entry.write_text(json.dumps(d))
    tcg = TestCaseGenerator(ExplodingGenerator(), sandbox, TCGConfig(cache_dir=str(tmp_path)))
    row = evaluate_problem(tcg, DOUBLE, sandbox, max_mutants=0)
    assert row["example"] == {"shown": True, "copied": 0, "copied_matched": 0}  # unknown: not left out
    s = summarise_tcg([row], k=3)
    assert s["output_match"] == s["output_match_with_example"] == pytest.approx(1 / 2)


# A problem whose visible test (double(2) == 4) misses bugs the hidden tests catch.
BRANCHY = Problem(
    task_id="t/branchy", text="Double a number.", entry_point="double",
    tests=("assert double(2) == 4", "assert double(3) == 6", "assert double(10) == 20"),
    reference="def double(x):\n    if x >= 10:\n        return x + x\n    return 2 * x\n",
)
PLUS2 = "def double(x):\n    return x + 2\n"                    # passes the visible test, fails double(3)
TRIPLE = "def double(x):\n    return 3 * x\n"                   # fails the visible test too
BIG = "def double(x):\n    return 2 * x if x < 10 else 0\n"     # passes visible; only double(10) catches it
RIGHT = "def double(x):\n    return x * 2\n"                    # not wrong at all


def test_caught_beyond_the_visible_test(sandbox):
    tcg = tcg_for([case("double(3)", "6") + case("double(5)", "10")], sandbox)
    row = evaluate_problem(tcg, BRANCHY, sandbox, wrong=[PLUS2], max_mutants=0)
    assert row["wrong"]["sample"] == _tally(1, 1, 0, 1)  # generated tests catch what the visible test misses
    row = evaluate_problem(tcg, BRANCHY, sandbox, wrong=[TRIPLE], max_mutants=0)
    assert row["wrong"]["sample"] == _tally(1, 1, 1, 0)  # rejected by both: nothing gained over the visible test
    s = summarise_tcg([row], k=2)
    assert s["samples_rejected_generated"] == s["samples_rejected_visible"] == 1.0
    assert s["samples_caught_beyond_visible"] == 0.0


def test_figure_d_per_category_and_not_constant(sandbox):
    # Generated tests only try small inputs: they miss BIG and the mutant `x - x` of the x >= 10 branch.
    tcg = tcg_for([case("double(3)", "6") + case("double(5)", "10")], sandbox)
    row = evaluate_problem(tcg, BRANCHY, sandbox, wrong=[PLUS2, TRIPLE, BIG, RIGHT], max_mutants=20)
    assert (row["samples_given"], row["samples_correct"]) == (4, 1)
    assert row["wrong"]["sample"] == _tally(3, 2, 1, 1)
    # Mutants: `x > 10`, `x >= 11`, `x >= 9` are equivalent on the tests (dropped); `x - x`, `3 * x`,
    # `1 * x` fail the hidden tests; the generated tests catch the last two, the visible test too.
    assert row["wrong"]["mutant"] == _tally(3, 2, 2, 0) and row["n_mutants"] == 3
    s = summarise_tcg([row], k=2)
    assert s["samples_rejected_generated"] == pytest.approx(2 / 3)
    assert s["samples_rejected_visible"] == pytest.approx(1 / 3)
    assert s["samples_caught_beyond_visible"] == pytest.approx(1 / 3)
    assert s["samples_caught_of_visible_passing"] == pytest.approx(1 / 2)
    assert s["mutants_rejected_generated"] == pytest.approx(2 / 3) and s["mutants_caught_beyond_visible"] == 0.0
    # Better generated tests raise (d); the samples alone, without mutants, keep their own figures.
    better = tcg_for([case("double(3)", "6") + case("double(12)", "24")], sandbox)
    row2 = evaluate_problem(better, BRANCHY, sandbox, wrong=[PLUS2, TRIPLE, BIG, RIGHT], max_mutants=0)
    assert row2["wrong"]["sample"] == _tally(3, 3, 1, 2) and row2["wrong"]["mutant"] == _tally()
    assert summarise_tcg([row2], k=2)["mutants_rejected_generated"] is None


def test_sampling_prompt_shows_only_the_visible_test():
    p = get_problem("mbpp/11")
    prompt = sample_prompt(p)
    assert p.tests[0] in prompt and p.tests[1] not in prompt and p.tests[2] not in prompt
    q = replace(BRANCHY, visible_tests=("assert double(1) == 2",))
    gen = ScriptedGenerator(["```python\n" + RIGHT + "```"])
    out = sample_wrong_solutions([q], gen, 3, seed=5)
    assert out == {"t/branchy": [RIGHT.strip("\n")] * 3}
    (prompts, params), = gen.calls
    assert "assert double(1) == 2" in prompts[0] and not any(t in prompts[0] for t in q.tests)
    assert params.n == 3 and params.seed == 5


class TCGAndSolver(ScriptedGenerator):
    """Writes test cases for TCG prompts and solutions (one right, one wrong) for solving prompts."""

    def __init__(self, cases: str, solutions: list[str]) -> None:
        super().__init__([cases])
        self.solutions = solutions

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        return [[Completion(self.texts[0] if "### Test Part" in p else self.solutions[j % len(self.solutions)],
                            finish_reason="stop") for j in range(params.n)] for p in prompts]


def test_run_tcg_eval_samples_wrong_solutions_from_the_tcg_model_by_default(sandbox, tmp_path):
    p = get_problem("mbpp/11")
    hardcoded = "```python\ndef remove_Occ(s, ch):\n    return 'heo'\n```"  # passes the visible test only
    gen = TCGAndSolver(case('remove_Occ("hello", "l")', "'heo'") + case('remove_Occ("aa", "a")', "''"),
                       ["```python\n" + p.reference + "\n```", hardcoded])
    cfg = TCGEvalConfig(model="scripted", split="test", limit=1, run_dir=str(tmp_path / "run"), max_mutants=0)
    assert cfg.sample_wrong == 4 and cfg.wrong_model == ""
    s = run_tcg_eval(cfg, generator=gen, sandbox=sandbox, progress=False)
    solve = [(prompts, params) for prompts, params in gen.calls if "### Test Part" not in prompts[0]]
    assert len(solve) == 1 and solve[0][1].n == 4
    assert p.tests[0] in solve[0][0][0] and p.tests[1] not in solve[0][0][0]
    assert (s["samples_given"], s["samples_correct"], s["wrong_samples"]) == (4, 2, 2)
    assert s["samples_caught_beyond_visible"] == 1.0 and s["samples_rejected_visible"] == 0.0
    assert s["wrong_mutants"] == 0 and s["wrong_model"] == "scripted"
    assert s["output_match"] == 1.0 and s["example_copied"] == 1.0


def test_run_tcg_eval_writes_report_and_resumes(sandbox, tmp_path):
    texts = {"remove_Occ": [case('remove_Occ("hello", "l")', "'heo'") + case('remove_Occ("aa", "a")', "'a'")],
             "sort_matrix": [case("sort_matrix([[3], [1]])", "[[1], [3]]") + case("sort_matrix([])", "[]")
                             + case("sort_matrix([[1, 2], [0]])", "[[0], [1, 2]]")]}
    gen = ScriptedGenerator(texts)
    cfg = TCGEvalConfig(model="scripted", problems_jsonl="", split="test", limit=2, run_dir=str(tmp_path / "run"),
                        max_mutants=3, sample_wrong=0)
    run = tmp_path / "run"
    run.mkdir()
    # A row written before the per-category figures is evaluated again, not summarised.
    (run / "results.jsonl").write_text(json.dumps({"task_id": "mbpp/11", "counts": {}, "rejected_dataset": 1}) + "\n")
    s = run_tcg_eval(cfg, generator=gen, sandbox=sandbox, progress=False)
    assert len(gen.calls) == 2  # mbpp/11 too: its old row is not reused
    assert s["problems"] == 2 and s["reference_false_rejections"] == 0
    # remove_Occ("aa", "a") is '' not 'a'; remove_Occ("hello", "l") is the shown example, copied.
    assert s["output_match_with_example"] == pytest.approx(4 / 5)
    assert s["output_match"] == pytest.approx(3 / 4)
    assert s["at_least_k"] == pytest.approx(1 / 2)
    assert s["wrong_samples"] == 0 and 0 < s["wrong_mutants"] <= 6 and s["samples_rejected_generated"] is None
    for name in ("results.jsonl", "summary.json", "summary.md", "summary.png"):
        assert (run / name).stat().st_size > 0
    md = (run / "summary.md").read_text()
    assert "| (a) model outputs matching the reference (copied shown example left out) | 75.0% |" in md
    assert "| (a) ... counting a copied shown example | 80.0% |" in md
    assert json.loads((run / "summary.json").read_text())["output_match"] == pytest.approx(3 / 4)
    again = run_tcg_eval(cfg, generator=ExplodingGenerator(), sandbox=sandbox, progress=False)
    assert again["output_match"] == s["output_match"]
    assert len((run / "results.jsonl").read_text().splitlines()) == 3


# ------------------------------------------------------------------------------- training data, CLI


def test_sft_and_dpo_records():
    good = get_problem("mbpp/602")
    same = Problem("t/same", "Always true.", "yes", ("assert yes(1) == True", "assert yes(2) == True"),
                   reference="def yes(x):\n    return True\n")
    sft, dpo = build_tcg_examples([good, same, replace(good, task_id="t/noref", reference=None)], seed=0)
    assert len(sft) == 2 and len(dpo) == 1  # no reference: no record; all outputs equal: no negative
    rec = dpo[0]
    chosen, rejected = parse_cases(rec["chosen"], good.entry_point), parse_cases(rec["rejected"], good.entry_point)
    assert [c.call for c in chosen] == [c.call for c in rejected] and len(chosen) >= 2
    assert sorted(map(repr, (c.output for c in chosen))) == sorted(map(repr, (c.output for c in rejected)))
    assert any(a.output != b.output for a, b in zip(chosen, rejected))
    # By default the target holds every dataset test (k = 3 as at inference); optionally not the shown one.
    shown = parse_assert(good.tests[0], good.entry_point)[0]
    assert "[Generate 3 test cases" in rec["prompt"] and shown in [c.call for c in chosen]
    sft2, _ = build_tcg_examples([good], seed=0, include_example=False)
    assert "[Generate 2 test cases" in sft2[0]["prompt"]
    assert shown not in [c.call for c in parse_cases(sft2[0]["completion"], good.entry_point)]


def _tcg_parser():
    import argparse

    from o1code.cli.tcg import add_tcg_command

    parser = argparse.ArgumentParser()
    add_tcg_command(parser.add_subparsers(dest="command"))
    return parser


def test_cli_parsers():
    from o1code.cli.tcg import eval_config, train_config

    parser = _tcg_parser()
    # The README's two commands.
    a = parser.parse_args(["tcg", "eval", "--model", "hf:runs/tcg/final", "--split", "validation", "--limit", "20",
                           "--run-dir", "runs/tcg-eval"])
    e = eval_config(a)
    assert (e.model, e.split, e.limit, e.run_dir, e.tcg.k, a.func.__name__) == (
        "hf:runs/tcg/final", "validation", 20, "runs/tcg-eval", 3, "cmd_eval")
    assert (e.sample_wrong, e.wrong_model, e.max_mutants) == (4, "", 5)  # real wrong solutions by default
    assert e == TCGEvalConfig(model="hf:runs/tcg/final", limit=20)
    t = parser.parse_args(["tcg", "train", "--model", "default", "--split", "train", "--sft-steps", "60",
                           "--dpo-steps", "40", "--out-dir", "runs/tcg"])
    c = train_config(t)
    assert (c.sft_max_steps, c.dpo_max_steps, c.learning_rate, c.beta, t.func.__name__) == (60, 40, 5e-4, 0.1,
                                                                                            "cmd_train")
    assert c == TCGTrainConfig(sft_max_steps=60, dpo_max_steps=40)


def test_cli_flag_aliases_and_shortcuts():
    from o1code.cli.tcg import eval_config, train_config

    parser = _tcg_parser()
    c = train_config(parser.parse_args(["tcg", "train", "--lr", "1e-3", "--full", "--exclude-example", "--epochs", "2",
                                        "--extra-jsonl", "a.jsonl,b.jsonl", "--extra-jsonl", "c.jsonl"]))
    assert (c.learning_rate, c.lora, c.include_example, c.sft_epochs, c.dpo_epochs) == (1e-3, False, False, 2.0, 2.0)
    assert c.extra_jsonl == ["a.jsonl", "b.jsonl", "c.jsonl"]
    c = train_config(parser.parse_args(["tcg", "train", "--learning-rate", "2e-3", "--no-lora", "--no-include-example",
                                        "--sft-max-steps", "5", "--epochs", "2", "--dpo-epochs", "3"]))
    assert (c.learning_rate, c.lora, c.include_example, c.sft_max_steps) == (2e-3, False, False, 5)
    assert (c.sft_epochs, c.dpo_epochs) == (2.0, 3.0)  # a stage's own flag beats --epochs
    assert train_config(parser.parse_args(["tcg", "train"])) == TCGTrainConfig()
    # timeout_s is the eval's own (the wrong solutions' limit); the TCG's stays its default.
    e = eval_config(parser.parse_args(["tcg", "eval", "--problems", "p.jsonl", "--timeout-s", "9", "--k", "4",
                                       "--n-samples", "2", "--temperature", "0.2", "--max-tokens", "99", "--seed", "7",
                                       "--wrong-samples", "w.jsonl"]))
    assert (e.problems_jsonl, e.timeout_s, e.wrong_samples) == ("p.jsonl", 9.0, "w.jsonl")
    assert e.tcg == TCGConfig(k=4, n_samples=2, temperature=0.2, max_tokens=99, seed=7)
    assert eval_config(parser.parse_args(["tcg", "eval"])) == TCGEvalConfig()


def test_cli_config_file(tmp_path):
    from o1code.cli.tcg import eval_config, train_config
    from o1code.errors import ConfigError

    parser = _tcg_parser()
    path = tmp_path / "tcg.toml"
    path.write_text('model = "hf:m"\nlimit = 7\ntimeout_s = 6.0\n[tcg]\nk = 5\ntemperature = 0.1\n')
    e = eval_config(parser.parse_args(["tcg", "eval", "--config", str(path), "--limit", "2", "--temperature", "0.3"]))
    assert (e.model, e.limit, e.timeout_s, e.tcg.k, e.tcg.temperature, e.tcg.timeout_s) == ("hf:m", 2, 6.0, 5, 0.3, 4.0)
    path.write_text("[tcg]\nkk = 5\n")
    with pytest.raises(ConfigError, match=r"\[tcg\]: unknown config keys: kk"):
        eval_config(parser.parse_args(["tcg", "eval", "--config", str(path)]))
    path.write_text("sft_max_steps = 3\nsft_epochs = 4.0\nlora_targets = [\"q_proj\"]\n")
    c = train_config(parser.parse_args(["tcg", "train", "--config", str(path), "--epochs", "2"]))
    assert (c.sft_max_steps, c.sft_epochs, c.dpo_epochs, c.lora_targets) == (3, 2.0, 2.0, ["q_proj"])
    path.write_text("epochs = 2\n")
    with pytest.raises(ConfigError, match="unknown config keys: epochs"):
        train_config(parser.parse_args(["tcg", "train", "--config", str(path)]))
