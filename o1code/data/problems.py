"""Coding problems: the `Problem` record and the loaders for MBPP and user JSONL files."""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from o1code.data.errors import DataError, ProblemFormatError

#: MBPP's standard splits, as inclusive ranges of the integer task id.
MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}

#: Tasks whose own reference solution fails their own tests on CPython 3.11 (see the data README):
#: 341 and 642 depend on set iteration order, 596 hard-codes `sys.getsizeof` results.
MBPP_KNOWN_BAD: frozenset[int] = frozenset({341, 596, 642})

_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Problem:
    """One coding problem.

    Attributes:
        task_id: Globally unique id, ``"<source>/<n>"`` (e.g. ``"mbpp/11"``).
        text: The natural-language statement shown to the model.
        entry_point: The name of the function the tests call.
        tests: The judging tests: assert statements (MBPP: one line each), or trusted test code of
            several statements (HumanEval's loops), graded on the host by record and replay.
        setup_code: Code run before the tests (imports, fixtures); ``""`` when none.
        reference: A known-correct solution, or ``None``.
        split: The split the problem belongs to (``"test"``, ``"train"``, ...), or ``""``.
        source: Where it comes from (``"mbpp"``, ``"mbpp-sanitized"``, a user file name).
        challenge_tests: Extra, harder asserts (MBPP has them for 11 tasks).
        known_bad: True when the reference fails its own tests (MBPP 341, 596, 642 on CPython 3.11).
            Evaluators keep these tasks in the splits (so sizes match the literature) but report
            them apart and leave them out of Pass@1 by default; see the README.
        visible_tests: The tests a solver may see: shown in the prompt (``show_tests="first"``)
            and used as the reward by the ``"visible"`` test source. Empty means the first of
            `tests` (MBPP's convention); HumanEval uses its docstring examples. See `visible`.
    """

    task_id: str
    text: str
    entry_point: str
    tests: tuple[str, ...]
    setup_code: str = ""
    reference: str | None = None
    split: str = ""
    source: str = ""
    challenge_tests: tuple[str, ...] = field(default_factory=tuple)
    known_bad: bool = False
    visible_tests: tuple[str, ...] = field(default_factory=tuple)

    def visible(self) -> tuple[str, ...]:
        """The tests a solver may see: `visible_tests`, or else the first of `tests`."""
        return self.visible_tests or self.tests[:1]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict in the schema `load_problems` reads."""
        d = asdict(self)
        d["tests"] = list(self.tests)
        d["challenge_tests"] = list(self.challenge_tests)
        d["visible_tests"] = list(self.visible_tests)
        return d


def problems_digest(problems: Iterable[Problem]) -> str:
    """The sha256 (hex) of `problems` in order, every field included: what identifies the data a run
    trained on, so that a shipped result can name it and a reader check it against their copy."""
    text = json.dumps([p.to_dict() for p in problems], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def derive_entry_point(tests: Iterable[str], reference: str | None = None) -> str:
    """Return the name of the function that every test calls.

    Candidates are the plain names called in every test. Names the reference defines win (MBPP
    task 126 defines its own `sum`); otherwise Python builtins are dropped. When several remain,
    the outermost call of the first test wins. Raises `DataError` when no name qualifies.
    """
    common: set[str] | None = None
    first_order: list[str] = []
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError as exc:
            raise DataError(f"test is not valid Python: {test!r} ({exc.msg})") from None
        # ast.walk is breadth-first, so outer calls come before the calls nested in them.
        names = [
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        ]
        if common is None:
            first_order, common = names, set(names)
        else:
            common &= set(names)
    defined: set[str] = set()
    if reference:
        try:
            with warnings.catch_warnings():  # old MBPP code has invalid escapes like '\w'
                warnings.simplefilter("ignore")
                tree = ast.parse(reference)
            defined = {
                n.name
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            }
        except SyntaxError:
            pass
    candidates = (common or set()) & defined or (common or set()) - _BUILTIN_NAMES
    if not candidates:
        raise DataError("no function name is called by every test")
    return next(n for n in first_order if n in candidates)


def _mbpp_split(task_number: int) -> str:
    for name, (lo, hi) in MBPP_SPLITS.items():
        if lo <= task_number <= hi:
            return name
    return ""


def _check_split(split: str) -> None:
    if split != "all" and split not in MBPP_SPLITS:
        choices = ", ".join([*MBPP_SPLITS, "all"])
        raise DataError(f"unknown MBPP split {split!r}; choose one of: {choices}")


def _normalise_code(code: str) -> str:
    # MBPP references use Windows line ends; normalise so that code shown to models is clean.
    return code.replace("\r\n", "\n").replace("\r", "\n")


def _require(record: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise ProblemFormatError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, typ):
        raise ProblemFormatError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def _str_list(record: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    if key not in record and not required:
        return ()
    value = _require(record, key, list, where)
    if not all(isinstance(t, str) for t in value):
        raise ProblemFormatError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def _mbpp_problem(record: dict, where: str, sanitized: bool) -> Problem:
    number = _require(record, "task_id", int, where)
    tests = _str_list(record, "test_list", where, required=True)
    if not tests:
        raise ProblemFormatError(f"{where}: task {number} has no tests")
    code = _normalise_code(_require(record, "code", str, where))
    if sanitized:
        text = _require(record, "prompt", str, where)
        setup = "\n".join(_str_list(record, "test_imports", where, required=False))
        challenge: tuple[str, ...] = ()
    else:
        text = _require(record, "text", str, where)
        setup = _normalise_code(record.get("test_setup_code") or "")
        challenge = _str_list(record, "challenge_test_list", where, required=False)
    try:
        entry_point = derive_entry_point(tests, code)
    except DataError as exc:
        raise ProblemFormatError(f"{where}: task {number}: {exc}") from None
    return Problem(
        task_id=f"mbpp/{number}",
        text=text,
        entry_point=entry_point,
        tests=tests,
        setup_code=setup,
        reference=code,
        split=_mbpp_split(number),
        source="mbpp-sanitized" if sanitized else "mbpp",
        challenge_tests=challenge,
        # The sanitized file fixed these three tasks; all 427 of its references pass.
        known_bad=(not sanitized) and number in MBPP_KNOWN_BAD,
    )


def _parse_jsonl(lines: Iterable[str], where: str) -> list[tuple[str, dict]]:
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        loc = f"{where}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProblemFormatError(f"{loc}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ProblemFormatError(f"{loc}: expected a JSON object, got {type(record).__name__}")
        records.append((loc, record))
    return records


@lru_cache(maxsize=2)
def _bundled_mbpp(sanitized: bool) -> tuple[Problem, ...]:
    name = "sanitized-mbpp.json.gz" if sanitized else "mbpp.jsonl.gz"
    resource = resources.files("o1code.data").joinpath("mbpp", name)
    where = f"o1code/data/mbpp/{name}"
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        if sanitized:
            items = json.load(fh)
            located = [(f"{where}[{i}]", r) for i, r in enumerate(items)]
        else:
            located = _parse_jsonl(fh, where)
    problems = tuple(_mbpp_problem(r, loc, sanitized) for loc, r in located)
    return tuple(sorted(problems, key=lambda p: int(p.task_id.split("/")[1])))


def load_mbpp(split: str = "test", sanitized: bool = False) -> list[Problem]:
    """Load MBPP problems of one split from the copy bundled with the package.

    Args:
        split: ``"prompt"`` (task ids 1-10), ``"test"`` (11-510), ``"validation"`` (511-600),
            ``"train"`` (601-974), or ``"all"``.
        sanitized: Use the hand-verified subset (427 tasks; its clearer prompts and fixed tests).

    Returns:
        The problems in task-id order: 10/500/90/374 for the full set, 7/257/43/120 sanitized.
        Known-bad tasks are included and flagged (`Problem.known_bad`).

    Raises:
        DataError: For an unknown split.
    """
    _check_split(split)
    problems = _bundled_mbpp(sanitized)
    return [p for p in problems if split == "all" or p.split == split]


def get_problem(task_id: str, sanitized: bool = False) -> Problem:
    """Return one bundled MBPP problem by id (``"mbpp/11"`` or ``"11"``); `DataError` if absent."""
    key = task_id if "/" in task_id else f"mbpp/{task_id}"
    for p in _bundled_mbpp(sanitized):
        if p.task_id == key:
            return p
    raise DataError(f"no problem {task_id!r} in the bundled {'sanitized ' if sanitized else ''}MBPP")


def load_problems(path: str | Path) -> list[Problem]:
    """Load problems from a user JSONL file, one `Problem` object per line.

    Required keys: ``task_id``, ``text``, ``tests`` (a non-empty list of assert statements).
    Optional: ``entry_point`` (derived from the tests when absent), ``setup_code``, ``reference``,
    ``split``, ``source`` (defaults to the file's stem), ``challenge_tests``, ``known_bad``,
    ``visible_tests`` (default: the first test).

    Raises:
        DataError: If the file does not exist.
        ProblemFormatError: On a malformed line or record, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"problem file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        located = _parse_jsonl(fh, str(path))
    problems, seen = [], set()
    for loc, r in located:
        task_id = _require(r, "task_id", str, loc)
        if task_id in seen:
            raise ProblemFormatError(f"{loc}: duplicate task_id {task_id!r}")
        seen.add(task_id)
        tests = _str_list(r, "tests", loc, required=True)
        if not tests:
            raise ProblemFormatError(f"{loc}: task {task_id!r} has no tests")
        reference = r.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise ProblemFormatError(f"{loc}: field 'reference' must be a string or null")
        entry_point = r.get("entry_point")
        if entry_point is None:
            try:
                entry_point = derive_entry_point(tests, reference)
            except DataError as exc:
                raise ProblemFormatError(f"{loc}: {exc}") from None
        elif not isinstance(entry_point, str) or not entry_point.isidentifier():
            raise ProblemFormatError(f"{loc}: field 'entry_point' must be a Python identifier")
        problems.append(
            Problem(
                task_id=task_id,
                text=_require(r, "text", str, loc),
                entry_point=entry_point,
                tests=tests,
                setup_code=r.get("setup_code") or "",
                reference=reference,
                split=r.get("split") or "",
                source=r.get("source") or path.stem,
                challenge_tests=_str_list(r, "challenge_tests", loc, required=False),
                known_bad=bool(r.get("known_bad", False)),
                visible_tests=_str_list(r, "visible_tests", loc, required=False),
            )
        )
    return problems
