"""Evaluating a Test Case Generator (`run_tcg_eval`, ``o1code tcg eval``): per problem, one
``results.jsonl`` row (appended as it finishes, so an interrupted run resumes), then ``summary.json``,
``summary.md`` and ``summary.png`` (the figures: `o1code.pipeline.tcg.report`).

Wrong solutions, two categories reported apart: solutions a model really wrote (by default 4 samples
per problem from the TCG's own model, prompted with the statement and the visible test only) and AST
mutants of the reference; each kept only when it fails the hidden tests (all dataset tests).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from o1code.data import Problem, load_mbpp, load_problems
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.tcg.report import WRONG_KINDS, empty_tally, plot_tcg, summarise_tcg, tcg_markdown
from o1code.rewards.mutants import mutants as make_mutants
from o1code.rewards.tcg import TCGConfig, TestCaseGenerator, shown_example_call
from o1code.runs import append_jsonl, read_jsonl, write_atomic


@dataclass
class TCGEvalConfig:
    """Every knob of `run_tcg_eval`.

    Attributes:
        model: The TCG model spec (`load_generator`), e.g. ``"default"`` or ``"hf:runs/tcg/final"``.
        split: MBPP split ("validation", "test", ...), unless `problems_jsonl` is given.
        problems_jsonl: Evaluate these problems instead (the `load_problems` schema).
        limit: At most this many problems (0: all).
        run_dir: Where results, the TCG cache and the summary go; re-using it resumes.
        tcg: The generation settings (k, sampling, seed ...). Its cache goes to ``run_dir/tcg_cache``.
        max_mutants: Wrong solutions per problem from AST mutants of the reference (the "mutant"
            category; kept only if they fail the hidden tests; 0: none).
        wrong_samples: JSONL of ``{"task_id", "code"}`` model-written solutions, added to the "sample"
            category (kept only if they fail the hidden tests).
        sample_wrong: Sample this many solutions per problem from `wrong_model` (prompt: statement and
            visible test only) and keep those failing the hidden tests as the "sample" category (0: none).
        wrong_model: The model that writes those samples ("": the TCG's own model).
        workers: Sandbox workers.
        timeout_s: Sandbox limit for running wrong solutions.
    """

    model: str = "default"
    split: str = "validation"
    problems_jsonl: str = field(default="", metadata={"flags": ("--problems", "--problems-jsonl"), "metavar": "JSONL"})
    limit: int = 0
    run_dir: str = "runs/tcg-eval"
    tcg: TCGConfig = field(default_factory=TCGConfig)
    max_mutants: int = 5
    wrong_samples: str = field(default="", metadata={"metavar": "JSONL"})
    sample_wrong: int = field(default=4, metadata={"metavar": "N"})
    wrong_model: str = field(default="", metadata={"metavar": "SPEC"})
    workers: int = 2
    timeout_s: float = 4.0


def _select(config: TCGEvalConfig) -> list[Problem]:
    problems = load_problems(config.problems_jsonl) if config.problems_jsonl else load_mbpp(config.split)
    problems = [p for p in problems if not p.known_bad]
    return problems[: config.limit] if config.limit else problems


def _read_rows(path: Path) -> dict[str, dict]:
    """The finished rows of ``results.jsonl`` by task id (`o1code.runs.read_jsonl`'s torn-last-line
    rule; the torn line is cut so that appends start on a clean line). Rows written before the
    per-category figures are left out: those problems are evaluated again."""
    rows: dict[str, dict] = {}
    for row in read_jsonl(path, repair=True):
        if isinstance(row, dict) and "wrong" in row and "example" in row and "task_id" in row:
            rows[row["task_id"]] = row
    return rows


def _load_wrong_samples(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not path:
        return out
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.setdefault(str(rec["task_id"]), []).append(str(rec["code"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineError(f"{path}:{i}: expected a JSON object with task_id and code ({exc})") from None
    return out


_SAMPLE_PROMPT = ("{text}\nYour code should pass {these}:\n{tests}\n"
                  "Write the Python function `{entry}` in one ```python block.")


def sample_prompt(problem: Problem) -> str:
    """The prompt that asks for a solution of `problem`: its statement and its visible tests only
    (`Problem.visible`); the hidden (judging) tests never appear in it."""
    shown = problem.visible()
    return _SAMPLE_PROMPT.format(text=problem.text.strip(), these="these tests" if len(shown) > 1 else "this test",
                                 tests="\n".join(shown), entry=problem.entry_point)


def sample_wrong_solutions(problems: Sequence[Problem], model: Any, n: int, seed: int = 0) -> dict[str, list[str]]:
    """Sample `n` solutions per problem from `model` (a Generator or spec); return the code per task id.

    The prompt is `sample_prompt` (statement + visible tests). Only the sampling: keeping the ones
    that fail the hidden tests is done by `evaluate_problem`.
    """
    from o1code.data.formats import extract_code
    from o1code.models import SamplingParams, load_generator

    gen = load_generator(model) if isinstance(model, str) else model
    prompts = [sample_prompt(p) for p in problems]
    outs = gen.generate(prompts, SamplingParams(n=n, temperature=0.8, top_p=0.95, max_tokens=384, seed=seed))
    result: dict[str, list[str]] = {}
    for p, comps in zip(problems, outs):
        codes = [extract_code(c.text, p.entry_point, whole_if_unfenced=True) for c in comps]
        result[p.task_id] = [c for c in codes if c]
    return result


def _example_tally(cases: Sequence[dict], shown: bool) -> dict[str, Any]:
    """Whether the prompt showed a (parseable) example, and whether the model copied it among its
    checked cases (``copied``, 0/1) with the matching output (``copied_matched``, 0/1). Case entries
    cached before ``shown_example`` / ``matched`` existed count as not copied."""
    copied = [c for c in cases if c.get("shown_example") and c.get("matched") is not None]
    return {"shown": shown, "copied": len(copied), "copied_matched": sum(bool(c["matched"]) for c in copied)}


def evaluate_problem(tcg: TestCaseGenerator, problem: Problem, sandbox: Any, wrong: Sequence[str] = (),
                     max_mutants: int = 5, timeout_s: float = 4.0, seed: int = 0) -> dict[str, Any]:
    """Evaluate the TCG on one problem; return its results row (JSON-ready).

    Wrong solutions come in two categories (`WRONG_KINDS`): ``sample``: the codes in `wrong` (solutions
    a model wrote), and ``mutant``: up to `max_mutants` AST mutants of the reference. Either is kept
    only when it fails the hidden tests (all of ``problem.tests``), so every wrong solution fails the
    judging tests by selection and that share is not a figure. Each kept one is run on the generated
    tests and on the visible tests alone (``problem.visible()``); a solution is rejected when its run
    does not pass, and an empty generated suite rejects nothing.

    The row has the TCG counts, ``verified``, the kept tests (as asserts), ``example`` (see
    `_example_tally`: lets figure (a) leave out a copy of the example shown in the prompt), ``wrong``
    (per category: ``n``, ``rejected_generated``, ``rejected_visible`` and ``caught_beyond_visible`` =
    rejected by the generated tests while passing the visible test), ``wrong_solutions`` (one record
    per wrong solution), ``samples_given`` / ``samples_correct`` (codes in `wrong`, and those that
    passed the hidden tests, so are not wrong), ``n_wrong``, ``n_mutants`` and ``reference_rejected``
    (the generated tests fail the reference: must be 0).
    """
    from o1code.sandboxes import Job, Verdict

    res = tcg.generate(problem)
    tests = list(res.tests)
    setup = problem.setup_code
    hidden, visible = list(problem.tests), list(problem.visible())
    candidates: list[tuple[str, str]] = [(c, "sample") for c in wrong if c and c.strip()]
    if problem.reference and max_mutants > 0:
        # Build more candidates than needed: many mutants still pass the tests (equivalent mutants).
        candidates += [(m, "mutant") for m, _ in make_mutants(problem.reference, max_mutants * 6, seed)]
    runs = sandbox.run_many([Job(c, hidden, setup, timeout_s) for c, _ in candidates])
    kept: list[tuple[str, str]] = []
    n_mut = n_correct = 0
    for (code, kind), r in zip(candidates, runs):
        if r.verdict is Verdict.PASSED:
            n_correct += kind == "sample"
            continue
        if r.verdict is Verdict.SANDBOX_ERROR:
            continue  # not judged: neither right nor wrong
        if kind == "mutant":
            if n_mut >= max_mutants:
                continue
            n_mut += 1
        kept.append((code, kind))
    tally = {k: empty_tally() for k in WRONG_KINDS}
    details: list[dict[str, Any]] = []
    if kept:
        jobs = []
        for code, _ in kept:
            jobs.append(Job(code, tests, setup, timeout_s))
            jobs.append(Job(code, visible, setup, timeout_s))
        runs = sandbox.run_many(jobs)
        for i, (code, kind) in enumerate(kept):
            gen_run, vis_run = runs[2 * i], runs[2 * i + 1]
            rej_gen = bool(tests) and gen_run.verdict is not Verdict.PASSED
            rej_vis = bool(visible) and vis_run.verdict is not Verdict.PASSED
            t = tally[kind]
            t["n"] += 1
            t["rejected_generated"] += rej_gen
            t["rejected_visible"] += rej_vis
            t["caught_beyond_visible"] += rej_gen and not rej_vis
            details.append({"kind": kind, "rejected_generated": rej_gen, "rejected_visible": rej_vis, "code": code})
    ref_rejected = 0
    if tests and problem.reference:
        ref_rejected = int(sandbox.run(problem.reference, tests, setup, timeout_s).verdict is not Verdict.PASSED)
    shown = shown_example_call(problem, tcg.config.show_example) is not None
    return {
        "task_id": problem.task_id,
        "verified": res.verified,
        "counts": dataclasses.asdict(res.counts),
        "example": _example_tally(res.cases, shown),
        "tests": res.asserts,
        "wrong": tally,
        "wrong_solutions": details,
        "samples_given": sum(kind == "sample" for _, kind in candidates),
        "samples_correct": n_correct,
        "n_wrong": len(kept),
        "n_mutants": n_mut,
        "reference_rejected": ref_rejected,
        "completions": list(res.completions),
    }


def run_tcg_eval(config: TCGEvalConfig, generator: Any = None, sandbox: Any = None,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a TCG model; return the summary (also written with the table and plot to the run dir).

    `generator` overrides ``config.model`` (the spec is still used as the model's name); `sandbox`
    overrides the owned `LocalSandbox`. Problems already in ``run_dir/results.jsonl`` are skipped.
    """
    from o1code.sandboxes import LocalSandbox

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    problems = _select(config)
    if not problems:
        raise PipelineError("no problem to evaluate")
    results_path = run_dir / "results.jsonl"
    done = _read_rows(results_path)
    todo = [p for p in problems if p.task_id not in done]
    tcg_cfg = dataclasses.replace(config.tcg, cache_dir=str(run_dir / "tcg_cache"),
                                  model_name=config.tcg.model_name or config.model)
    own = sandbox is None
    sb = sandbox or LocalSandbox(workers=config.workers)
    try:
        tcg = TestCaseGenerator(generator if generator is not None else config.model, sb, tcg_cfg)
        wrong = _load_wrong_samples(config.wrong_samples)
        if config.sample_wrong > 0 and todo:
            sampled = sample_wrong_solutions(todo, config.wrong_model or tcg.generator, config.sample_wrong,
                                             config.tcg.seed)
            for tid, codes in sampled.items():
                wrong.setdefault(tid, []).extend(codes)
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="tcg eval", unit="problem")
        for p in todo:
            row = evaluate_problem(tcg, p, sb, wrong.get(p.task_id, ()), config.max_mutants,
                                   config.timeout_s, config.tcg.seed)
            append_jsonl(results_path, [row])  # one complete line per problem: a resumed run starts after it
            done[p.task_id] = row
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        if own:
            sb.close()
    wanted = [done[p.task_id] for p in problems if p.task_id in done]
    summary = summarise_tcg(wanted, config.tcg.k, config.model, config.split if not config.problems_jsonl
                            else Path(config.problems_jsonl).name)
    summary["wrong_model"] = (config.wrong_model or config.model) if config.sample_wrong > 0 else ""
    summary["config"] = {k: v for k, v in dataclasses.asdict(config).items()}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    write_atomic(run_dir / "summary.md", tcg_markdown([summary]))
    plot_tcg([summary], run_dir / "summary.png")
    return summary


__all__ = ["TCGEvalConfig", "evaluate_problem", "run_tcg_eval", "sample_prompt", "sample_wrong_solutions"]
