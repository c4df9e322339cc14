"""`TestCaseGenerator`: prompt -> model -> parsed inputs -> reference values in the sandbox -> tests,
with a per-problem disk cache; also a `TestSource` for `CodeEnv` (`tests_for`)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from o1code.data import Problem
from o1code.rewards.errors import TCGError
from o1code.rewards.tcg.config import TCG_FORMAT_VERSION, TCGConfig, default_cache_dir
from o1code.rewards.tcg.parse import parse_cases, value_literal
from o1code.rewards.tcg.prompt import build_prompt, shown_example_call
from o1code.rewards.tcg.result import TCGCounts, TCGResult
from o1code.rewards.tcg.values import evaluate_calls
from o1code.runs import write_atomic
from o1code.sandboxes import Sandbox, Test, TestCase

log = logging.getLogger(__name__)

GeneratorLike = Union[Any, str]  # a Generator, or a spec for o1code.models.load_generator
SandboxLike = Union[Sandbox, Callable[[], Sandbox], None]


class TestCaseGenerator:
    """Generates verified test cases for problems; also a `TestSource` (`tests_for`).

    Args:
        generator: An `o1code.models.Generator`, or a spec string for `load_generator` (loaded on
            first use, e.g. ``"default"`` or ``"hf:/path/to/dir"``).
        sandbox: A sandbox, a zero-argument callable returning one (so an env can hand over its lazily
            created sandbox), or None to create an owned `LocalSandbox` on first use.
        config: A `TCGConfig`.
    """

    __test__ = False
    name = "tcg"

    def __init__(self, generator: GeneratorLike = "default", sandbox: SandboxLike = None,
                 config: TCGConfig | None = None) -> None:
        self.config = config or TCGConfig()
        self._generator = generator
        self._sandbox_arg = sandbox
        self._sandbox: Sandbox | None = None
        self._owned_sandbox = False
        self._memo: dict[str, TCGResult] = {}
        self._lock = threading.Lock()

    # -- resources ------------------------------------------------------------------------------

    @property
    def generator(self) -> Any:
        """The model (loaded from its spec on first use)."""
        if isinstance(self._generator, str):
            from o1code.models import load_generator

            self._generator = load_generator(self._generator)
        return self._generator

    @property
    def model_name(self) -> str:
        """The model's identity in the cache key."""
        if self.config.model_name:
            return self.config.model_name
        if isinstance(self._generator, str):
            return self._generator
        g = self._generator
        return str(getattr(g, "name", None) or getattr(getattr(g, "config", None), "model", None)
                   or type(g).__name__)

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox that runs the reference (created on first use when none was given)."""
        if self._sandbox is None:
            if self._sandbox_arg is None:
                from o1code.sandboxes import LocalSandbox

                self._sandbox, self._owned_sandbox = LocalSandbox(workers=1), True
            elif callable(self._sandbox_arg) and not isinstance(self._sandbox_arg, Sandbox):
                self._sandbox = self._sandbox_arg()
            else:
                self._sandbox = self._sandbox_arg  # type: ignore[assignment]
        return self._sandbox

    def close(self) -> None:
        """Close the sandbox if this object created it."""
        if self._owned_sandbox and self._sandbox is not None:
            self._sandbox.close()
        self._sandbox = None

    def __deepcopy__(self, memo: dict) -> "TestCaseGenerator":
        # gym.make deep-copies kwargs: a model and a sandbox are shared services, never cloned.
        return self

    # -- cache ----------------------------------------------------------------------------------

    def prompt_for(self, problem: Problem) -> str:
        """The prompt sent to the model for `problem`."""
        c = self.config
        return build_prompt(problem, c.k, show_example=c.show_example,
                            use_reference=c.use_reference and problem.reference is not None)

    def cache_key(self, problem: Problem) -> str:
        """Hex key of a problem's cache entry: task id, model, k, seed, sampling and the prompt's hash."""
        c = self.config
        prompt_hash = hashlib.sha256(self.prompt_for(problem).encode()).hexdigest()
        ident = json.dumps([TCG_FORMAT_VERSION, problem.task_id, self.model_name, c.k, c.seed, c.n_samples,
                            c.temperature, c.top_p, c.top_k, c.max_tokens, c.timeout_s, c.max_case_chars,
                            c.max_tests, prompt_hash,
                            hashlib.sha256((problem.reference or "").encode()).hexdigest()])
        return hashlib.sha256(ident.encode()).hexdigest()

    def _cache_path(self, problem: Problem) -> Path | None:
        if self.config.cache_dir == "":
            return None
        root = Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", problem.task_id)
        return root / f"{safe}-{self.cache_key(problem)[:20]}.json"

    def _load_cached(self, path: Path | None) -> TCGResult | None:
        if path is None or not path.is_file():
            return None
        try:
            return TCGResult.from_dict(json.loads(path.read_text()), cached=True)
        except (OSError, ValueError, KeyError, TypeError, TCGError) as exc:
            log.warning("tcg: ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    @staticmethod
    def _store(path: Path | None, result: TCGResult) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # atomic: a reader never sees a half-written entry, even across processes.
            write_atomic(path, json.dumps(result.to_dict()))
        except OSError as exc:
            log.warning("tcg: could not write cache entry %s (%s)", path, exc)

    # -- generation -----------------------------------------------------------------------------

    def generate(self, problem: Problem) -> TCGResult:
        """Return the generated tests of `problem` (from the cache when present).

        Raises `TCGError` when the problem has no entry point. Malformed model output never raises:
        it is counted in `TCGResult.counts`.
        """
        return self.generate_many([problem])[0]

    def generate_many(self, problems: Sequence[Problem]) -> list[TCGResult]:
        """`generate` for many problems; uncached prompts go to the model in one batch."""
        results: dict[int, TCGResult] = {}
        todo: list[int] = []
        for i, p in enumerate(problems):
            if not p.entry_point:
                raise TCGError(f"{p.task_id}: the problem has no entry point")
            key = self.cache_key(p)
            hit = self._memo.get(key) or self._load_cached(self._cache_path(p))
            if hit is not None:
                self._memo[key] = hit
                results[i] = hit
            else:
                todo.append(i)
        if todo:
            from o1code.models import SamplingParams

            c = self.config
            params = SamplingParams(n=c.n_samples, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                                    max_tokens=c.max_tokens, stop=("\n### ", "<|EOT|>"), seed=c.seed)
            outputs = self.generator.generate([self.prompt_for(problems[i]) for i in todo], params)
            for i, comps in zip(todo, outputs):
                p = problems[i]
                res = self.from_completions(p, [comp.text for comp in comps])
                self._memo[self.cache_key(p)] = res
                self._store(self._cache_path(p), res)
                results[i] = res
        return [results[i] for i in range(len(problems))]

    def from_completions(self, problem: Problem, completions: Sequence[str]) -> TCGResult:
        """Build the result of `problem` from raw model outputs: parse, dedupe, run the reference.

        This is the whole pipeline after sampling; `generate` calls it. Never raises on bad text.
        """
        c = self.config
        n_generated = n_malformed = n_dup = n_out_bad = 0
        order: list[str] = []
        model_out: dict[str, tuple[bool, Any]] = {}
        for text in completions:
            for case in parse_cases(text, problem.entry_point):
                n_generated += 1
                if not case.input_ok:
                    n_malformed += 1
                    continue
                if case.call in model_out:
                    n_dup += 1
                    continue
                if not case.output_ok:
                    n_out_bad += 1
                order.append(case.call)
                model_out[case.call] = (case.output_ok, case.output)

        verified = bool(c.use_reference and problem.reference)
        shown = shown_example_call(problem, c.show_example)
        tests: list[TestCase] = []
        cases: list[dict] = []
        n_invalid = n_unrep = n_checked = n_match = 0
        if verified:
            values = evaluate_calls(self.sandbox, problem.reference or "", order, problem.setup_code, c.timeout_s)
            for call, res in zip(order, values):
                ok_out, mval = model_out[call]
                entry = {"call": call, "model_output": _repr_or_none(mval) if ok_out else None,
                         "reference_output": None, "error": "", "shown_example": call == shown,
                         "matched": None}
                if not res.ok:
                    n_invalid += 1
                    entry["error"] = f"{res.verdict}: {res.message[:200]}"
                else:
                    n_checked += 1
                    matched = bool(ok_out and _safe_eq(mval, res.value) and type(mval) is type(res.value))
                    entry["matched"] = matched
                    n_match += matched
                    lit = value_literal(res.value)
                    entry["reference_output"] = lit
                    if lit is None or len(call) + len(lit) > c.max_case_chars:
                        n_unrep += 1
                        entry["error"] = "reference value has no literal or is too long"
                    elif len(tests) < c.max_tests:
                        tests.append(TestCase(call, res.value))
                cases.append(entry)
        else:
            for call in order:
                ok_out, mval = model_out[call]
                lit = value_literal(mval) if ok_out else None
                entry = {"call": call, "model_output": lit, "reference_output": None, "error": "",
                         "shown_example": call == shown, "matched": None}
                if lit is None or len(call) + len(lit) > c.max_case_chars:
                    n_unrep += 1
                    entry["error"] = "model output missing, not a literal, or too long"
                elif len(tests) < c.max_tests:
                    tests.append(TestCase(call, mval))
                cases.append(entry)
        counts = TCGCounts(
            generated=n_generated, malformed=n_malformed, duplicates=n_dup, invalid_input=n_invalid,
            unrepresentable=n_unrep, output_malformed=n_out_bad, checked=n_checked,
            model_output_matches_reference=n_match, kept=len(tests),
        )
        if n_malformed:
            log.debug("tcg %s: %d of %d generated cases malformed", problem.task_id, n_malformed, n_generated)
        return TCGResult(problem.task_id, tuple(tests), counts, verified, tuple(completions), tuple(cases))

    # -- TestSource -----------------------------------------------------------------------------

    def tests_for(self, problem: Problem) -> Sequence[Test]:
        """The kept generated tests of `problem` (`TestSource` protocol).

        When none is kept and ``config.fallback_to_dataset`` is set, returns the dataset's tests.
        """
        with self._lock:  # one generation per problem even when several env threads ask at once
            result = self.generate(problem)
        if not result.tests and self.config.fallback_to_dataset:
            log.warning("tcg: no generated test kept for %s; using the dataset tests", problem.task_id)
            return problem.tests
        return result.tests


def _repr_or_none(v: Any) -> str | None:
    try:
        return repr(v)[:1000]
    except Exception:
        return None


def _safe_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False
