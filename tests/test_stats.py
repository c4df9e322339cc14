"""Evaluation statistics: pass@k, bootstrap CIs, McNemar, `o1code compare` and `o1code eval --samples`."""

import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest

from o1code.cli import main
from o1code.data import load_mbpp
from o1code.data.trajectories import read_trajectories
from o1code.models import Completion
from o1code.pipeline import EvalConfig, run_eval
from o1code.pipeline.compare import compare_runs
from o1code.pipeline.errors import ComparisonError
from o1code.pipeline.stats import bootstrap_ci, ks_up_to, mcnemar_exact, paired_bootstrap_ci, pass_at_k, ratio_ci

TASKS = [f"mbpp/{i}" for i in range(11, 19)]


# ---------------------------------------------------------------- the estimators
@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 0.4),  # c / n
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2) / C(5,2)
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5) / C(10,5)
    (10, 0, 3, 0.0),
    (4, 3, 2, 1.0),  # n - c < k: every pair holds a pass
    (1, 1, 1, 1.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_combinatorial_form_where_that_is_exact():
    for n in range(1, 30):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-9)
    assert 0 < pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)  # no overflow where C(n, k) is huge


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in ((5, 6, 1), (5, 2, 6), (5, 2, 0)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_ks_up_to():
    assert ks_up_to(1) == [1] and ks_up_to(4) == [1, 2] and ks_up_to(10) == [1, 2, 5, 10]
    assert ks_up_to(25) == [1, 2, 5, 10, 20]


def test_mcnemar_exact_hand_computed():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)


def test_bootstrap_ci_covers_the_true_rate_about_95_percent_of_the_time():
    true_p, n, trials = 0.37, 90, 200  # off the k/90 lattice, so no interval end lands on it exactly
    rng = np.random.default_rng(1234)
    hits = 0
    for t in range(trials):
        verdicts = (rng.random(n) < true_p).astype(float)
        lo, hi = bootstrap_ci(verdicts, seed=t, n_boot=2000)
        assert lo <= verdicts.mean() <= hi
        hits += lo <= true_p <= hi
    assert 0.91 <= hits / trials <= 0.99, hits / trials


def test_bootstrap_ci_is_seeded_and_shrinks_with_n():
    v = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    narrow = bootstrap_ci(v * 10, seed=3)
    wide = bootstrap_ci(v, seed=3)
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_ratio_ci_resamples_problems_not_pairs():
    """One problem with many pairs all won and many problems with one pair each all lost: the pooled
    share is high, but resampling problems shows how much it rests on that one problem."""
    wins, counts = [50.0] + [0.0] * 9, [50] + [1] * 9
    lo, hi = ratio_ci(wins, counts)
    assert lo < 50 / 59 < hi and hi - lo > 0.1
    assert ratio_ci([3.0, 3.0], [3, 3]) == (1.0, 1.0) and ratio_ci([1.0], [4], seed=1) == (0.25, 0.25)
    assert all(math.isnan(v) for v in ratio_ci([], []))


def test_paired_ci_sees_a_difference_that_unpaired_intervals_hide():
    # B solves everything A solves plus 6 of 60 more: per-run CIs overlap, the paired CI excludes 0.
    a = [1.0] * 30 + [0.0] * 30
    b = [1.0] * 36 + [0.0] * 24
    ca, cb = bootstrap_ci(a), bootstrap_ci(b)
    assert ca[1] > cb[0]  # the unpaired intervals overlap
    lo, hi = paired_bootstrap_ci(a, b)
    assert 0 < lo <= 0.1 <= hi
    with pytest.raises(ValueError):
        paired_bootstrap_ci(a, b[:-1])


# ---------------------------------------------------------------- compare on run directories
def write_run(path, passed, **settings):
    """A run directory in `run_eval`'s format: config.json (pinned settings) and one results row per task."""
    cfg = EvalConfig(run_dir=str(path), **settings)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**asdict(cfg), "oracle": cfg.oracle}))
    rows = [{"task_id": f"mbpp/{11 + i}", "known_bad": False, "passed": bool(p), "verdict": "passed" if p else "failed",
             "tests_digest": f"d{i}"} for i, p in enumerate(passed)]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_compare_finds_a_planted_difference(tmp_path):
    rng = np.random.default_rng(7)
    a = rng.random(90) < 0.3
    b = a | (rng.random(90) < 0.35)  # B keeps A's passes and gains about a quarter more
    c = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))
    assert c.problems == 90 and c.pass_b - c.pass_a == pytest.approx(c.diff)
    assert c.diff_ci[0] > 0 and c.significant and c.p_value < 1e-4
    assert c.a_only == [] and len(c.b_only) == int((b & ~a).sum())


def test_compare_finds_nothing_between_equal_runs(tmp_path):
    rng = np.random.default_rng(8)
    a = rng.random(90) < 0.4
    b = a.copy()
    flip = rng.choice(90, size=6, replace=False)  # the same rate, 3 problems flipped each way
    b[flip[:3]], b[flip[3:]] = True, False
    a[flip[:3]], a[flip[3:]] = False, True
    c = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))
    assert c.diff == 0 and c.diff_ci[0] < 0 < c.diff_ci[1] and not c.significant and c.p_value == 1.0
    assert len(c.a_only) == len(c.b_only) == 3


@pytest.mark.parametrize("field, value", [("dataset", "humaneval"), ("sanitized", True), ("timeout_s", 10.0),
                                          ("include_known_bad", True)])
def test_compare_refuses_runs_judged_differently_naming_the_field(tmp_path, field, value):
    a = write_run(tmp_path / "a", [1, 0, 1])
    b = write_run(tmp_path / "b", [1, 1, 1], **{field: value})
    with pytest.raises(ComparisonError, match=f"{field} is"):
        compare_runs(a, b)


def test_compare_refuses_a_problem_judged_on_other_tests(tmp_path):
    a = write_run(tmp_path / "a", [1, 0, 1])
    b = write_run(tmp_path / "b", [1, 1, 1])
    rows = [json.loads(line) for line in (b / "results.jsonl").read_text().splitlines()]
    rows[1]["tests_digest"] = "other"
    (b / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ComparisonError, match="tests_digest of mbpp/12"):
        compare_runs(a, b)
    with pytest.raises(ComparisonError, match="not an evaluation run"):
        compare_runs(a, tmp_path / "missing")


# ---------------------------------------------------------------- end to end through run_eval and the CLI
class ReferenceGenerator:
    """A scripted model: the problem's reference code for the tasks in `good`, a wrong function otherwise; with
    `flaky`, a sampled call (temperature > 0) passes only when its seed is even."""

    def __init__(self, good, flaky=False):
        self.by_entry = {p.entry_point: p for p in load_mbpp("test")}
        self.good, self.flaky, self.calls = set(good), flaky, 0

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            self.calls += 1
            p = self.by_entry[re.findall(r"The function must be named `([^`]+)`", prompt)[-1]]
            ok = p.task_id in self.good and not (self.flaky and params.temperature > 0 and params.seed % 2)
            code = p.reference if ok else f"def {p.entry_point}(*a):\n    return None\n"
            out.append([Completion(text=f"```python\n{code}\n```", token_ids=[1] * 3, finish_reason="stop")] * params.n)
        return out


def test_compare_cli_end_to_end_on_real_runs(tmp_path, capsys):
    base = dict(agent="greedy", mode="direct", tasks=TASKS)
    run_eval(EvalConfig(run_dir=str(tmp_path / "a"), **base), generator=ReferenceGenerator([]), progress=False)
    run_eval(EvalConfig(run_dir=str(tmp_path / "b"), **base), generator=ReferenceGenerator(TASKS), progress=False)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == 8 and out["pass_a"] == 0 and out["pass_b"] == 1 and out["diff_ci"] == [1.0, 1.0]
    assert out["b_only"] == TASKS and out["p_value"] == pytest.approx(2 / 2**8) and out["significant"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "+100.0 points" in text and "mbpp/11" in text and "McNemar" in text

    run_eval(EvalConfig(run_dir=str(tmp_path / "c"), timeout_s=8.0, **base), generator=ReferenceGenerator(TASKS),
             progress=False)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("o1code: error: ") and "timeout_s is 4.0" in err and "Traceback" not in err


def test_eval_samples_reports_pass_at_k_and_resumes(tmp_path):
    cfg = EvalConfig(agent="greedy", mode="direct", tasks=TASKS[:4], run_dir=str(tmp_path), samples=4,
                     temperature=0.8)
    gen = ReferenceGenerator(TASKS[:2], flaky=True)
    summary = run_eval(cfg, generator=gen, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(len(r["sample_passed"]) == 4 and len(r["sample_verdicts"]) == 4 for r in rows)
    assert not any(any(r["sample_passed"]) for r in rows[2:])  # the wrong tasks never pass
    # each sample's path is kept and reads as a trajectory (a rejection-sampling harvest in one run)
    records = read_trajectories(tmp_path / "results.jsonl")
    assert len(records) == 4 * (1 + 4)
    for i, r in enumerate(rows):
        own = records[5 * i: 5 * i + 5]
        assert {x.task_id for x in own} == {r["task_id"]}
        assert [x.eval_passed for x in own[1:]] == r["sample_passed"]
        assert [x.code for x in own[1:]] == [e["code"] for e in r["sample_episodes"]]
        assert all(x.steps for x in own)
    per_problem = {k: [pass_at_k(4, sum(r["sample_passed"]), k) for r in rows] for k in (1, 2, 4)}
    assert set(summary["pass_at_k"]) == {"1", "2"} and summary["samples_per_problem"] == 4
    for k in ("1", "2"):
        assert summary["pass_at_k"][k] == pytest.approx(np.mean(per_problem[int(k)]))
        lo, hi = summary["pass_at_k_ci"][k]
        assert lo <= summary["pass_at_k"][k] <= hi
    assert summary["pass_at_1"] == 0.5 and summary["counted"] == 4  # greedy: the two good tasks
    assert summary["pass_at_1_ci"][0] <= 0.5 <= summary["pass_at_1_ci"][1]
    md = (tmp_path / "summary.md").read_text()
    assert "Pass@1 [95% CI]" in md and "(n=4, T=0.8)" in md
    calls = gen.calls
    again = run_eval(cfg, generator=gen, progress=False)  # resume: everything done, nothing generated
    assert gen.calls == calls and again["pass_at_k"] == summary["pass_at_k"]
    with pytest.raises(Exception, match="samples"):
        run_eval(EvalConfig(**{**asdict(cfg), "samples": 2}), generator=gen, progress=False)
    with pytest.raises(Exception, match="temperature > 0"):
        EvalConfig(samples=2, temperature=0.0).validate()


def test_ppo_report_carries_cis_and_the_paired_before_after_line(tmp_path):
    from o1code.pipeline.ppo import PPORunConfig, plot_curves, summary_markdown

    rng = np.random.default_rng(9)
    before = rng.random(90) < 0.3
    after = before | (rng.random(90) < 0.4)
    evals = []
    for update, passed in ((0, before), (6, after)):
        run = write_run(tmp_path / "evals" / f"update-{update:04d}", passed)
        c = compare_runs(run, run)
        evals.append({"update": update, "pass_at_1": c.pass_a, "pass_at_1_ci": list(c.ci_a), "run_dir": str(run),
                      "reward_pass_rate": 0.5, "problems": 90})
    history = [{"update": u, "reward": 0.1, "reward_test_pass": 0.2, "hidden_test_pass": 0.1, "kl": 0.0}
               for u in range(1, 7)]
    text = summary_markdown(PPORunConfig(run_dir=str(tmp_path)), history, evals, tmp_path / "final", 60.0)
    lo, hi = evals[0]["pass_at_1_ci"]
    assert f"{100 * evals[0]['pass_at_1']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in text
    line = next(x for x in text.splitlines() if x.startswith("- update 6 vs update 0 (paired, n=90): +"))
    assert "CI includes 0" not in line and "McNemar p = " in line
    assert plot_curves(history, evals, tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("name", ["ppo-cpu.toml", "ppo-gpu.toml", "selfplay-cpu.toml", "selfplay-gpu.toml"])
def test_shipped_experiments_judge_on_all_90_validation_problems(name):
    from pathlib import Path

    from o1code.cli.config import read_toml
    from o1code.data import load_dataset

    data = read_toml(Path(__file__).parents[1] / "experiments" / name)
    assert data["eval_split"] == "validation" and data["eval_limit"] >= len(load_dataset("mbpp", "validation")) == 90


def test_selfplay_report_carries_cis_and_paired_comparisons(tmp_path):
    from o1code.pipeline.selfplay import SelfPlayConfig, report_markdown

    rng = np.random.default_rng(10)
    start = rng.random(90) < 0.3
    sft = start | (rng.random(90) < 0.4)
    rl = sft.copy()
    manifests = {}
    for key, passed in (("0/baseline", start), ("0/eval", sft), ("1/eval", rl)):
        it, name = key.split("/")
        write_run(tmp_path / f"iter-{it}" / name / "greedy", passed)
        manifests[key] = {"figures": {"greedy_pass_at_1": passed.mean(), "problems": 90}, "seconds": 1.0}
    cfg = SelfPlayConfig(run_dir=str(tmp_path), iterations=1, eval_limit=90, eval_agents=["greedy"])
    text = report_markdown(cfg, manifests)
    assert f"| start | {100 * start.mean():.1f} [" in text
    sft_line = next(x for x in text.splitlines() if x.startswith("- greedy after SFT vs greedy start (paired, n=90): +"))
    assert "CI includes 0" not in sft_line
    same = next(x for x in text.splitlines() if x.startswith("- greedy iteration 1 (PRM + RL) vs greedy after SFT"))
    assert "+0.0 points [+0.0, +0.0], CI includes 0; exact McNemar p = 1" in same
    assert "- greedy iteration 1 (PRM + RL) vs greedy start (paired, n=90)" in text


def test_compare_pairs_the_sampled_pass_at_1_when_both_runs_drew_samples(tmp_path):
    a, b = write_run(tmp_path / "a", [0] * 40), write_run(tmp_path / "b", [0] * 40)
    for run, hits in ((a, 1), (b, 3)):  # 1 of 4 samples pass on every problem in A, 3 of 4 in B
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        for r in rows:
            r["sample_passed"] = [True] * hits + [False] * (4 - hits)
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = compare_runs(a, b)
    assert c.diff == 0 and c.sampled_diff == pytest.approx(0.5) and c.sampled_diff_ci == pytest.approx((0.5, 0.5))
    assert "sampled pass@1, B - A: +50.0 points" in c.markdown()
    assert compare_runs(a, write_run(tmp_path / "c", [0] * 40)).sampled_diff is None
