"""Test Case Generator (TCG, o1-Coder section 2): a model writes test inputs, the reference writes outputs.

The prompt follows the paper's template (``### Instruction`` / ``### Problem`` / ``### Code Part`` /
``### Test Part``), adapted to MBPP's function-call form: each test case is a ```` ```case ```` fenced
block with a ``# input:`` line (a call of the entry point with literal arguments, e.g.
``f(1, [2, 3])``) and a ``# output:`` line (a Python literal).

With a reference solution, every kept test's expected value is the value the reference returns on the
generated input, computed in the sandbox, so the tests are correct by construction; inputs on which the
reference errors or times out are dropped. Without one, the model's own outputs are kept and the
result is flagged ``verified=False``.

```python
tcg = TestCaseGenerator(load_generator("default"), sandbox)
result = tcg.generate(problem)        # TCGResult: result.tests, result.counts, result.verified
tcg.tests_for(problem)                # the kept TestCases: a TestSource for CodeEnv
```
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from o1code.data import Problem
from o1code.rewards.errors import TCGError
from o1code.sandboxes import Sandbox, Test, TestCase, Verdict

log = logging.getLogger(__name__)

#: Bump when the prompt, parsing or cache schema changes: old cache entries are then ignored.
TCG_FORMAT_VERSION = 1

INSTRUCTION = (
    "Please complete the task in the code part and generate test cases in the test part that can be "
    "used to test the quality of the generated code."
)

# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class TCGConfig:
    """How test cases are generated.

    Attributes:
        k: Test cases asked for per completion (the paper uses 3).
        n_samples: Completions sampled per problem; their cases are pooled, then deduplicated.
        temperature, top_p, top_k, max_tokens: Sampling parameters (the paper's fork tests with
            temperature 0.7, top-p 0.9).
        seed: Sampling seed; part of the cache key.
        timeout_s: Sandbox time limit for running the reference on the generated inputs.
        max_case_chars: A kept test's ``call`` plus the repr of its expected value may be at most this
            long (the paper caps a case block at 100 characters; MBPP values are longer).
        max_tests: At most this many tests are kept per problem (first ones win).
        show_example: Show the problem's first visible test (`Problem.visible`) in the prompt as an example.
        use_reference: Show the reference in the Code Part and use it to compute outputs. False
            forces the unverified path even when a reference exists.
        fallback_to_dataset: `tests_for` returns the dataset tests when no generated test is kept
            (otherwise an empty list, which makes every solution's pass fraction 0).
        cache_dir: Where per-problem results are cached (None: ``$O1CODE_CACHE/tcg`` or
            ``~/.cache/o1code/tcg``); ``""`` disables the cache.
        model_name: The model's identity in the cache key (None: derived from the generator).
    """

    k: int = 3
    n_samples: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int | None = None
    max_tokens: int = 384
    seed: int = 0
    timeout_s: float = 4.0
    max_case_chars: int = 2000
    max_tests: int = 10
    show_example: bool = True
    use_reference: bool = True
    fallback_to_dataset: bool = True
    cache_dir: str | None = None
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_samples < 1 or self.max_tests < 1:
            raise TCGError("k, n_samples and max_tests must be >= 1")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise TCGError("timeout_s must be a positive number")


def default_cache_dir() -> Path:
    """``$O1CODE_CACHE/tcg`` when the variable is set, else ``~/.cache/o1code/tcg``."""
    root = os.environ.get("O1CODE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "o1code") / "tcg"


# ------------------------------------------------------------------------------------------ prompt


def format_case(call: str, output: str) -> str:
    """One test case block in the template's format (``case`` fence, ``# input:`` / ``# output:``)."""
    return f"```case\n# input:\n{call}\n# output:\n{output}\n```"


def build_prompt(problem: Problem, k: int = 3, *, show_example: bool = True, use_reference: bool = True) -> str:
    """Return the TCG prompt for `problem`: the paper's four sections, ending where the cases start.

    The Code Part holds the reference in a python fence (or says there is none). The Test Part is a
    bracketed request for `k` cases followed by a newline; the model's completion are the case blocks.
    """
    example = ""
    if show_example and problem.visible():  # a visible test only: the judging tests stay hidden
        example = f"\nExample test:\n{problem.visible()[0]}\n"
    reference = problem.reference if (use_reference and problem.reference) else None
    code = f"```python\n{reference.strip()}\n```" if reference else "(no reference solution is given)"
    return (
        f"### Instruction\n{INSTRUCTION}\n\n"
        f"### Problem\n{problem.text.strip()}\n"
        f"The function to test is `{problem.entry_point}`.\n{example}\n"
        f"### Code Part\n{code}\n\n"
        f"### Test Part\n"
        f"[Generate {k} test cases. Each is a ```case block: after `# input:` one call of "
        f"`{problem.entry_point}` with literal arguments, after `# output:` the Python literal it returns.]\n"
    )


def format_completion(cases: Sequence[tuple[str, str]]) -> str:
    """The Test Part body for (call, output-literal) pairs: the SFT target and the DPO responses."""
    return "\n".join(format_case(c, o) for c, o in cases) + "\n"


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class ParsedCase:
    """One case read from model output.

    Attributes:
        call: The canonical call text (``ast.unparse`` of the parsed input), or the raw input text when
            it is malformed.
        output: The model's expected value (a plain Python value) when `output_ok`, else None.
        output_ok: Whether the ``# output:`` part parsed as a literal.
        input_ok: Whether the input is a single call of the entry point with literal arguments.
        error: Why the case is malformed ("" when `input_ok`).
    """

    call: str
    output: Any = None
    output_ok: bool = False
    input_ok: bool = False
    error: str = ""


_INPUT_RE = re.compile(r"#\s*input\s*:?", re.IGNORECASE)
_OUTPUT_RE = re.compile(r"#\s*output\s*:?", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[^\n]*")
_ASSERT_RE = re.compile(r"^\s*assert\s+(.+?)\s*==\s*(.+?)\s*$", re.MULTILINE)


def _literal(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a Python literal (also ``set()``/``frozenset(...)``), else (False, None)."""
    text = text.strip()
    if not text or len(text) > 100_000:
        return False, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    # repr() writes empty sets and frozensets as calls, which literal_eval refuses.
    m = re.fullmatch(r"(set|frozenset)\((.*)\)", text, re.DOTALL)
    if m:
        ok, inner = _literal(m.group(2)) if m.group(2).strip() else (True, ())
        if ok:
            try:
                return True, (set if m.group(1) == "set" else frozenset)(inner)
            except TypeError:
                return False, None
    return False, None


def parse_call(text: str, entry_point: str) -> tuple[str | None, str]:
    """Check that `text` is one call of `entry_point` whose arguments are all literals.

    Returns ``(canonical call text, "")`` on success, ``(None, reason)`` otherwise. The canonical
    text is ``ast.unparse`` of the call, so formatting differences do not defeat deduplication.
    """
    text = text.strip().rstrip(";")
    if text.startswith(">>>"):
        text = text[3:].strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None, "input does not parse"
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None, "input is not a function call"
    if node.func.id != entry_point:
        return None, f"input calls {node.func.id!r}, not {entry_point!r}"
    for arg in [*node.args, *(kw.value for kw in node.keywords)]:
        if isinstance(arg, ast.Starred) or not _literal(ast.unparse(arg))[0]:
            return None, "an argument is not a literal"
    if any(kw.arg is None for kw in node.keywords):
        return None, "an argument is not a literal"
    return ast.unparse(node), ""


def parse_cases(text: str, entry_point: str) -> list[ParsedCase]:
    """Read every test case from raw model output; never raises.

    Cases are found by their ``# input:`` markers (fences optional, so truncated or unfenced output
    still counts); the output is what follows ``# output:`` up to the next fence or marker. When the
    text has no ``# input:`` marker at all, lines of the form ``assert <call> == <literal>`` are read
    instead. A case whose input is not a literal-argument call of `entry_point` has ``input_ok=False``.
    """
    cases: list[ParsedCase] = []
    starts = [m for m in _INPUT_RE.finditer(text)]
    if not starts:
        for m in _ASSERT_RE.finditer(text):
            call, err = parse_call(m.group(1), entry_point)
            ok, value = _literal(m.group(2))
            cases.append(ParsedCase(call or m.group(1).strip(), value if ok else None, ok, call is not None, err))
        return cases
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        segment = text[m.end():end]
        out_m = _OUTPUT_RE.search(segment)
        raw_in = segment[: out_m.start()] if out_m else segment
        raw_in = _FENCE_RE.split(raw_in)[0] if "```" in raw_in else raw_in
        raw_out = ""
        if out_m:
            raw_out = _FENCE_RE.split(segment[out_m.end():])[0]
        call, err = parse_call(raw_in, entry_point)
        if call is None and raw_in.strip().count("\n"):
            # Allow chatter after the call: try the first non-empty line alone.
            first = next((ln for ln in raw_in.splitlines() if ln.strip()), "")
            call, _ = parse_call(first, entry_point)
        ok, value = _literal(raw_out)
        if not ok and raw_out.strip():
            ok, value = _literal(next((ln for ln in raw_out.splitlines() if ln.strip()), ""))
        cases.append(ParsedCase(call or raw_in.strip()[:200], value if ok else None, ok, call is not None,
                                "" if call is not None else (err or "input does not parse")))
    return cases


def parse_assert(test: str, entry_point: str) -> tuple[str, Any] | None:
    """``(call, expected)`` for a dataset assert of the form ``assert f(literals) == literal``; else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = ast.parse(test)
    except (SyntaxError, ValueError):
        return None
    if len(mod.body) != 1 or not isinstance(mod.body[0], ast.Assert):
        return None
    cmp = mod.body[0].test
    if not (isinstance(cmp, ast.Compare) and len(cmp.ops) == 1 and isinstance(cmp.ops[0], ast.Eq)):
        return None
    call, _ = parse_call(ast.unparse(cmp.left), entry_point)
    ok, value = _literal(ast.unparse(cmp.comparators[0]))
    if call is None or not ok:
        return None
    return call, value


def normal_call(text: str) -> str:
    """`text` as ``ast.unparse(ast.parse(text))`` (the canonical form `parse_call` gives), or stripped
    as it stands when it does not parse; so that two spellings of one call compare equal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.unparse(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return text.strip()


def shown_example_call(problem: Problem, show_example: bool = True) -> str | None:
    """The canonical call of the example the TCG prompt shows (``problem.visible()[0]``), or None.

    None when `show_example` is off, the problem has no visible test, or the test is not of the
    ``assert f(literals) == literal`` form (`parse_assert`); then no generated case counts as a copy.
    """
    if not show_example or not problem.visible():
        return None
    parsed = parse_assert(problem.visible()[0], problem.entry_point)
    return normal_call(parsed[0]) if parsed is not None else None


def value_literal(value: Any) -> str | None:
    """``repr(value)`` when it reads back (via the literal parser) as an equal value, else None.

    NaN, infinities and non-plain objects have no literal that round-trips, so such tests are dropped.
    """
    try:
        text = repr(value)
    except Exception:  # e.g. an int too large to print
        return None
    ok, back = _literal(text)
    try:
        return text if ok and back == value and type(back) is type(value) else None
    except Exception:
        return None


# ------------------------------------------------------------------------------- reference outputs


class _Capture:
    """An expected value that records what it is compared with (see `evaluate_calls`)."""

    __slots__ = ("value", "seen")

    def __init__(self) -> None:
        self.value: Any = None
        self.seen = False

    def __eq__(self, other: Any) -> bool:
        self.value, self.seen = other, True
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CallResult:
    """The value of one call expression run in the sandbox: ``ok`` and ``value``, or the error."""

    ok: bool
    value: Any = None
    verdict: Verdict = Verdict.PASSED
    error: str = ""


def evaluate_calls(
    sandbox: Sandbox, code: str, calls: Sequence[str], setup_code: str = "", timeout_s: float = 4.0
) -> list[CallResult]:
    """Run `code` in the sandbox and return the plain value of each call expression, in order.

    Uses only the public sandbox API: each call becomes a ``TestCase(call, capture)`` whose expected
    value is a host-side object that records what it is compared with (a `TestCase`'s expected value
    never leaves the host, and the host compares the decoded plain value with it). A call whose
    process died (timeout, crash) takes the calls after it down too, so those are re-run one by one.
    """
    if not calls:
        return []
    captures = [_Capture() for _ in calls]
    result = sandbox.run(code, [TestCase(c, cap) for c, cap in zip(calls, captures)], setup_code, timeout_s)
    out: list[CallResult | None] = []
    retry: list[int] = []
    for i, (cap, outcome) in enumerate(zip(captures, result.outcomes)):
        if outcome.verdict is Verdict.PASSED and cap.seen:
            out.append(CallResult(True, cap.value))
        elif outcome.verdict in (Verdict.TIMEOUT, Verdict.SANDBOX_ERROR, Verdict.MEMORY) or (
            outcome.verdict is Verdict.RUNTIME_ERROR and outcome.message.startswith("process")
        ):
            out.append(None)
            retry.append(i)
        else:
            out.append(CallResult(False, None, outcome.verdict, outcome.message))
    if len(retry) > 1:  # in a single-call run the verdict is already that call's own
        for i in retry:
            out[i] = evaluate_calls(sandbox, code, [calls[i]], setup_code, timeout_s)[0]
    elif retry:
        o = result.outcomes[retry[0]]
        out[retry[0]] = CallResult(False, None, o.verdict, o.message)
    return [r for r in out if r is not None]


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class TCGCounts:
    """What happened to the generated cases of one problem.

    Attributes:
        generated: Cases found in the model output (all completions).
        malformed: Cases whose input is not a literal-argument call of the entry point (skipped).
        duplicates: Well-formed cases whose call repeats an earlier one (skipped).
        invalid_input: Distinct inputs on which the reference errored or timed out (dropped).
        unrepresentable: Inputs whose reference value has no round-tripping literal or is too long.
        output_malformed: Cases with a usable input but no parseable ``# output:`` literal.
        checked: Distinct inputs the reference ran on (the denominator of the paper's figure).
        model_output_matches_reference: Of `checked`, those where the model's output equals the
            reference's value (the paper's 80.8% / 89.2% figure is this over `checked`). A copy
            of the example shown in the prompt counts here too; ``cases`` marks it (`TCGResult`),
            so evaluations can leave it out.
        kept: Tests kept.
    """

    generated: int = 0
    malformed: int = 0
    duplicates: int = 0
    invalid_input: int = 0
    unrepresentable: int = 0
    output_malformed: int = 0
    checked: int = 0
    model_output_matches_reference: int = 0
    kept: int = 0


@dataclass(frozen=True)
class TCGResult:
    """The generated tests of one problem.

    Attributes:
        task_id: The problem.
        tests: The kept tests (``TestCase(call, expected)``).
        counts: See `TCGCounts`.
        verified: True when the expected values come from running the reference; False when they are
            the model's own outputs (no reference).
        completions: The raw model outputs.
        cases: Per distinct well-formed input: ``{"call", "model_output" (repr or None),
            "reference_output" (repr or None), "error" ("" or why it was dropped), "shown_example"
            (the call is the example shown in the prompt, see `shown_example_call`), "matched" (the
            model's output equals the reference's value; None when the reference did not run on it or
            there is no reference)}``. Entries cached before these last two keys existed lack them:
            read them with ``.get`` (missing = not shown / unknown).
        cached: True when this result was read from the disk cache.
    """

    task_id: str
    tests: tuple[TestCase, ...]
    counts: TCGCounts
    verified: bool
    completions: tuple[str, ...] = ()
    cases: tuple[dict, ...] = ()
    cached: bool = False

    @property
    def asserts(self) -> list[str]:
        """The kept tests as assert statements (``TestCase.as_assert``)."""
        return [t.as_assert() for t in self.tests]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (expected values as literal text); `from_dict` reads it back."""
        return {
            "task_id": self.task_id,
            "tests": [{"call": t.call, "expected": repr(t.expected)} for t in self.tests],
            "counts": dataclasses.asdict(self.counts),
            "verified": self.verified,
            "completions": list(self.completions),
            "cases": list(self.cases),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> "TCGResult":
        tests = []
        for t in d["tests"]:
            ok, value = _literal(t["expected"])
            if not ok:
                raise TCGError(f"cached expected value does not parse: {t['expected'][:100]!r}")
            tests.append(TestCase(t["call"], value))
        return cls(d["task_id"], tuple(tests), TCGCounts(**d["counts"]), bool(d["verified"]),
                   tuple(d.get("completions", ())), tuple(d.get("cases", ())), cached)


def _safe_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


# ------------------------------------------------------------------------------------------ generator

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
            # tmp file + rename: a reader never sees a half-written entry, even across processes.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(result.to_dict(), f)
            os.replace(tmp, path)
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
                    entry["error"] = f"{res.verdict}: {res.error[:200]}"
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


def cases_from_asserts(problem: Problem) -> list[tuple[str, Any]]:
    """The problem's dataset tests that fit ``assert f(literals) == literal``, as (call, value) pairs."""
    out = []
    for t in problem.tests:
        parsed = parse_assert(t, problem.entry_point)
        if parsed is not None:
            out.append(parsed)
    return out


__all__ = [
    "CallResult", "ParsedCase", "TCGConfig", "TCGCounts", "TCGResult", "TestCaseGenerator",
    "build_prompt", "cases_from_asserts", "evaluate_calls", "format_case", "format_completion",
    "normal_call", "parse_assert", "parse_call", "parse_cases", "shown_example_call", "value_literal",
]
