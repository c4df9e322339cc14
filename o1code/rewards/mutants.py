"""AST mutants of a reference solution: plausible wrong programs for measuring how well tests discriminate.

Each mutant changes exactly one site of the reference: a comparison operator flipped (``<`` <-> ``<=``,
``==`` <-> ``!=`` ...), an integer constant moved by +1 or -1, ``+`` <-> ``-`` (and ``*`` <-> ``//``
is left alone: it mostly crashes), ``and`` <-> ``or``, ``True`` <-> ``False``, or a returned tuple or
list losing its last element. `mutants` only produces source text; keeping those that really are
wrong (fail the dataset tests) is the caller's job, since only execution can tell.
"""

from __future__ import annotations

import ast
import copy
import random
import warnings
from typing import Callable, Iterator

_CMP_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_BIN_SWAP: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add}


def _sites(tree: ast.AST) -> Iterator[tuple[int, str, Callable[[ast.AST], None]]]:
    """Yield (node index in ast.walk order, description, in-place mutation) for every mutable site."""
    for idx, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    def flip(n: ast.AST, j: int = j) -> None:
                        n.ops[j] = _CMP_SWAP[type(n.ops[j])]()  # type: ignore[attr-defined]
                    yield idx, f"flip comparison {type(op).__name__}", flip
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN_SWAP:
            def swap(n: ast.AST) -> None:
                n.op = _BIN_SWAP[type(n.op)]()  # type: ignore[attr-defined]
            yield idx, f"swap {type(node.op).__name__}", swap
        elif isinstance(node, ast.BoolOp):
            def andor(n: ast.AST) -> None:
                n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()  # type: ignore[attr-defined]
            yield idx, "swap and/or", andor
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            def negate(n: ast.AST) -> None:
                n.value = not n.value  # type: ignore[attr-defined]
            yield idx, "negate bool constant", negate
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            for d in (1, -1):
                def shift(n: ast.AST, d: int = d) -> None:
                    n.value = n.value + d  # type: ignore[attr-defined]
                yield idx, f"int constant {d:+d}", shift
        elif (isinstance(node, ast.Return) and isinstance(node.value, (ast.Tuple, ast.List))
              and len(node.value.elts) >= 2):
            def drop(n: ast.AST) -> None:
                n.value.elts = n.value.elts[:-1]  # type: ignore[attr-defined]
            yield idx, "drop last returned element", drop


def mutants(code: str, max_mutants: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Return ``(mutant source, description)`` pairs, one site changed each, distinct from `code`.

    All single-site mutants are built, deduplicated by source, and (when `max_mutants` is set) a
    seeded random sample of that many is returned, in site order. Returns [] when `code` does not parse.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    original = ast.unparse(tree)
    seen = {original}
    out: list[tuple[str, str]] = []
    for idx, desc, mutate in list(_sites(tree)):
        clone = copy.deepcopy(tree)
        node = next(n for i, n in enumerate(ast.walk(clone)) if i == idx)
        mutate(node)
        try:
            src = ast.unparse(ast.fix_missing_locations(clone))
            compile(src, "<mutant>", "exec")
        except (SyntaxError, ValueError, RecursionError):
            continue
        if src not in seen:
            seen.add(src)
            out.append((src, desc))
    if max_mutants is not None and len(out) > max_mutants:
        keep = sorted(random.Random(seed).sample(range(len(out)), max_mutants))
        out = [out[i] for i in keep]
    return out


__all__ = ["mutants"]
