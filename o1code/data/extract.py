"""Code extraction from a model's answer, as robust as EvalPlus's sanitizer.

An answer may hold several fenced blocks (```` ```python ````, ```` ```py ````, ```` ``` ```` then a
line ``python``, a bare ```` ``` ````, a block left open at the end), prose around them, helpers in
one block and the solution in another, and test code (``if __name__ == "__main__":``, top-level
asserts and prints). `extract_code` picks the block that parses and defines the entry point, drops
its test code and adds the helpers and imports it uses from the answer's other blocks. Unlike
EvalPlus it keeps the block's definitions the entry point does not reach: MBPP's tests use
classes a solution defines (``Node``, ``Pair``). `has_code` says whether an answer holds a code block at all, which is
what makes a step terminal. Both read blocks through `code_blocks`, so they agree.

A block counts as code when its fence names Python (``python``, ``py``, ``python3``, any case, or a
bare fence whose first line is such a language name), or when it is a bare fence whose text
parses as Python and defines a function or class (a ```` ```pseudo ```` block, or pseudocode in a
bare fence, is not code).
"""

from __future__ import annotations

import ast
import re
import textwrap

_PY_LANGS = frozenset({"python", "py", "python3", "py3"})
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,})[ \t]*([\w+#.-]*)[^`]*$")
_OPENS_AT_END = re.compile(r"```[ \t]*([\w+#.-]+)[ \t]*$")  # "Here it is: ```python"
_DEF_START = re.compile(r"^(def |async def |class |import |from |@)")


def _blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block as ``(language, text)``; a block open at the end runs to the end."""
    out: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.split("\n"):
        if lang is None:
            m = _FENCE_LINE.match(line) or _OPENS_AT_END.search(line)
            if m:
                lang, body = (m.group(2) if m.re is _FENCE_LINE else m.group(1)).lower(), []
        elif line.strip().startswith("```") and not line.strip().strip("`"):
            out.append((lang, "\n".join(body)))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        out.append((lang, "\n".join(body)))
    return out


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def _has_def(tree: ast.Module | None) -> bool:
    return tree is not None and any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                                    for n in tree.body)


def code_blocks(text: str) -> list[str]:
    """The code blocks of `text` in order (dedented, a stray language line dropped; see the module
    docstring for what counts as code)."""
    code: list[str] = []
    for lang, body in _blocks(text):
        body = textwrap.dedent(body).strip("\n")
        first, _, rest = body.partition("\n")
        if first.strip().lower() in _PY_LANGS and lang in _PY_LANGS | {""}:
            lang, body = "python", rest.strip("\n")  # "```" then a line "python"
        if lang in _PY_LANGS or (lang == "" and _has_def(_parses(body))):
            code.append(body)
    return code


def has_code(text: str) -> bool:
    """True when `text` holds a code block (`code_blocks`): what makes a step terminal."""
    return bool(code_blocks(text))


def _longest_parsing(code: str) -> str:
    """`code` if it parses; else the longest run of its lines that parses and defines something,
    starting at a top-level ``def``/``class``/import line (prose around code, a cut-off tail)."""
    if _parses(code) is not None:
        return code
    lines = code.split("\n")
    best = ""
    for i, line in enumerate(lines):
        if not _DEF_START.match(line):
            continue
        for j in range(len(lines), i, -1):
            if j - i <= best.count("\n") + 1:
                break
            piece = "\n".join(lines[i:j])
            if _has_def(_parses(piece)):
                best = piece
                break
    return best or code


def _defined(node: ast.stmt) -> set[str]:
    """Top-level names a statement binds (definitions, assignments, imports, also inside a top-level
    ``try``/``if``/``with``, e.g. a guarded import)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.Try, ast.If, ast.With)):
        inner = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                 *(s for h in getattr(node, "handlers", []) for s in h.body)]
        return set().union(*(_defined(s) for s in inner)) if inner else set()
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _used(node: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_test_code(node: ast.stmt, answer_defs: set[str]) -> bool:
    """Code that exercises the solution rather than being part of it: ``if __name__ == "__main__":``,
    top-level asserts, bare expressions (prints, calls) and loops, statements that define nothing,
    and assignments that call a function or class the answer defines (``result = f(3)``)."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False
    if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return any(isinstance(c, ast.Call) and _used(c.func) & answer_defs for c in ast.walk(node))
    return not _defined(node)


def _start(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _source(code: str, node: ast.stmt) -> str:
    return "\n".join(code.split("\n")[_start(node) - 1:node.end_lineno])


def _sanitize(blocks: list[tuple[str, ast.Module]], chosen: int) -> str:
    """The `chosen` block without its test code (`_is_test_code`), preceded by what it uses and
    does not define that the answer's other blocks define (a helper, an import; the last wins)."""
    answer_defs = {n.name for _, t in blocks for n in t.body
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    code, tree = blocks[chosen]
    mine = [n for n in tree.body if not _is_test_code(n, answer_defs)]
    drop = {i for n in tree.body if n not in mine for i in range(_start(n), n.end_lineno + 1)}
    have = set().union(*(_defined(n) for n in mine)) if mine else set()
    definers: dict[str, tuple[int, ast.stmt]] = {}
    for i, (_, other) in enumerate(blocks):
        if i != chosen:
            definers.update({name: (i, n) for n in other.body if not _is_test_code(n, answer_defs)
                             for name in _defined(n)})
    borrowed: dict[int, tuple[int, ast.stmt]] = {}
    todo = [name for n in mine for name in _used(n)]
    while todo:
        name = todo.pop()
        found = definers.get(name)
        if name in have or found is None or id(found[1]) in borrowed:
            continue
        borrowed[id(found[1])] = found
        have |= _defined(found[1])
        todo.extend(_used(found[1]))
    order = sorted(borrowed.values(),  # imports first, then in answer order
                   key=lambda v: (not isinstance(v[1], (ast.Import, ast.ImportFrom)), v[0], v[1].lineno))
    kept = "\n".join(line for i, line in enumerate(code.split("\n"), 1) if i not in drop).rstrip()
    return "\n\n".join([_source(blocks[i][0], n) for i, n in order] + [kept])


def extract_code(text: str, entry_point: str | None = None, whole_if_unfenced: bool = False) -> str | None:
    """Return the code of an answer (a step), or None when it has none.

    Of the answer's `code_blocks` (each trimmed to its longest part that parses when it does not:
    prose around unfenced code, a block cut off at the end), the last that parses and defines
    `entry_point` is the answer: its imports and the top-level definitions the entry point needs
    are kept, from it and else from the other blocks, and test code (``if __name__ ==
    "__main__":``, top-level asserts, prints, loops, ``result = f(3)``) dropped. With no such
    block: the last block that mentions a definition of it (e.g. one with a syntax error the tests
    will report), else the last block, unchanged. With `whole_if_unfenced` (direct mode), an answer
    with no block is treated as one block.
    """
    blocks = code_blocks(text)
    if not blocks:
        if not whole_if_unfenced:
            return None
        blocks = [text.strip("\n")]
    blocks = [_longest_parsing(b) for b in blocks]
    if not entry_point:
        return blocks[-1]
    trees = [_parses(b) for b in blocks]
    parsed: list[tuple[str, ast.Module]] = [(b, t) for b, t in zip(blocks, trees) if t is not None]
    for i in range(len(parsed) - 1, -1, -1):
        if any(entry_point in _defined(n) for n in ast.walk(parsed[i][1])  # not "from solution import f"
               if isinstance(n, ast.stmt) and not isinstance(n, (ast.Import, ast.ImportFrom))):
            return _sanitize(parsed, i)
    for block in reversed(blocks):
        if re.search(rf"\b(def|class)\s+{re.escape(entry_point)}\b", block):
            return block
    return blocks[-1]
