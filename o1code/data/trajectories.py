"""Trajectory records: the search's reasoning paths as typed records, and PRM examples drawn from them.

One `TrajectoryRecord` is one root-to-terminal path of an MCTS search (one JSON object per line of
``trajectories.jsonl``). Each of its `StepRecord` s carries the tree statistics of its node (id,
parent id, depth, value ``Q/N``, visits, hard label) and the `SampleRecord` s of its siblings: the
other distinct steps sampled from the same prefix, including the code samples that the search drops
from the tree (``keep_best_terminal``). From these, `pointwise_examples` gives the PRM's point-wise
data ``(problem, prefix, step, label)`` and `pairwise_examples` its pair-wise data (siblings whose
values differ), without matching text prefixes across records.

`read_trajectories` also reads the older format (no node ids, no siblings): the keys it lacks read
as None (or empty), and `pairwise_examples` then pairs steps by their text prefix instead.

`read_trajectories` also reads an ``o1code eval`` run's ``results.jsonl`` (`record_of_result`): each
row's played episode as a path with no tree statistics.

Bottom layer: imports the standard library, `o1code.runs` and `o1code.data.errors` only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from o1code.data.errors import DataError
from o1code.runs import read_jsonl


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


@dataclass(frozen=True)
class SampleRecord:
    """One distinct step sampled from the same prefix as a path's step (a sibling of it).

    `kept` says whether it became a node of the tree; ``keep_best_terminal`` drops every sample
    but the best terminal one, and those dropped samples are kept here. `value` is the sample's
    value estimate: ``Q/N`` when visited, its own reward when it is terminal and unvisited (a
    terminal's value is its reward), None when unknown (a non-terminal never visited).
    """

    text: str
    node_id: int | None = None  #: the id of the node it became or would have become
    kept: bool = True  #: it is a node of the tree (not dropped by keep_best_terminal)
    terminal: bool = False  #: it holds code or hit the step limit
    value: float | None = None
    visits: int = 0
    hard: int | None = None  #: 1 when its subtree (or itself) passes every reward test; None if unknown
    prm: float | None = None  #: the process-reward model's value of it, when one was configured
    reward: float | None = None  #: the env's reward, for a terminal sample
    verdict: str | None = None  #: verdict on the reward tests, for a terminal sample with code
    eval_verdict: str | None = None  #: verdict on the judging (dataset) tests, same
    eval_passed: bool | None = None  #: every judging test passed, same

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleRecord:
        """The record of `to_dict`'s dict; missing keys take their defaults."""
        return cls(
            text=str(d["text"]),
            node_id=_opt_int(d.get("node_id")),
            kept=bool(d.get("kept", True)),
            terminal=bool(d.get("terminal", False)),
            value=_opt_float(d.get("value")),
            visits=int(d.get("visits", 0) or 0),
            hard=_opt_int(d.get("hard")),
            prm=_opt_float(d.get("prm")),
            reward=_opt_float(d.get("reward")),
            verdict=d.get("verdict"),
            eval_verdict=d.get("eval_verdict"),
            eval_passed=_opt_bool(d.get("eval_passed")),
        )


@dataclass(frozen=True)
class StepRecord:
    """One step of a path: its text and its node's statistics in the search tree.

    `value` is the node's mean backed-up reward ``Q/N`` (0 when unvisited), `hard` the hard label:
    1 when the node's subtree holds a terminal that passes every reward test, else 0.
    """

    text: str
    value: float
    visits: int
    prm: float | None = None
    hard: int | None = None  #: None in old records that lack it
    node_id: int | None = None  #: unique within one search; the root is 0 (None in old records)
    parent_id: int | None = None  #: the previous step's node id (the root's, 0, for the first step)
    depth: int | None = None  #: 1 for the first step
    terminal: bool | None = None
    siblings: tuple[SampleRecord, ...] = ()  #: the other distinct samples from the same prefix

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the old keys (text, value, visits, prm, hard) first, then the new ones."""
        d = {k: getattr(self, k) for k in ("text", "value", "visits", "prm", "hard", "node_id", "parent_id",
                                           "depth", "terminal")}
        d["siblings"] = [s.to_dict() for s in self.siblings]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        """The record of `to_dict`'s dict, or of an old-format step (text, value, visits, prm[, hard])."""
        return cls(
            text=str(d["text"]),
            value=float(d.get("value", 0.0) or 0.0),
            visits=int(d.get("visits", 0) or 0),
            prm=_opt_float(d.get("prm")),
            hard=_opt_int(d.get("hard")),
            node_id=_opt_int(d.get("node_id")),
            parent_id=_opt_int(d.get("parent_id")),
            depth=_opt_int(d.get("depth")),
            terminal=_opt_bool(d.get("terminal")),
            siblings=tuple(SampleRecord.from_dict(s) for s in d.get("siblings") or ()),
        )


@dataclass(frozen=True)
class TrajectoryRecord:
    """One root-to-terminal path of a search over one problem.

    `verdict` is the terminal's verdict on the reward tests (``"truncated"`` when it has no code),
    `eval_verdict` / `eval_passed` on the judging tests (all of the data set's tests). `reward_tests`
    names the reward tests (``"visible"``, ``"tcg"`` ...; ``"dataset"`` means the reward, and so
    every value and hard label here, came from the judging tests: oracle labels). `answer` marks the
    path the search chose.
    """

    task_id: str
    mode: str
    steps: tuple[StepRecord, ...]
    code: str | None = None
    verdict: str = "truncated"
    reward: float = 0.0
    eval_passed: bool = False
    answer: bool = False
    model: str = ""
    seed: int = 0
    eval_verdict: str | None = None  #: None in old records
    split: str | None = None  #: the problem's split; None in old records
    reward_tests: str | None = None  #: None in old records

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every key of the old format, in its order, then the new keys."""
        return {
            "task_id": self.task_id,
            "mode": self.mode,
            "steps": [s.to_dict() for s in self.steps],
            "code": self.code,
            "verdict": self.verdict,
            "reward": self.reward,
            "eval_passed": self.eval_passed,
            "answer": self.answer,
            "model": self.model,
            "seed": self.seed,
            "eval_verdict": self.eval_verdict,
            "split": self.split,
            "reward_tests": self.reward_tests,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrajectoryRecord:
        """The record of a `to_dict` dict or of an old-format line.

        Raises:
            DataError: when `d` lacks ``task_id`` or ``steps`` or a step lacks ``text``.
        """
        try:
            steps = tuple(StepRecord.from_dict(s) for s in d["steps"])
            return cls(
                task_id=str(d["task_id"]),
                mode=str(d.get("mode", "")),
                steps=steps,
                code=d.get("code"),
                verdict=str(d.get("verdict", "truncated")),
                reward=float(d.get("reward", 0.0) or 0.0),
                eval_passed=bool(d.get("eval_passed", False)),
                answer=bool(d.get("answer", False)),
                model=str(d.get("model", "")),
                seed=int(d.get("seed", 0) or 0),
                eval_verdict=d.get("eval_verdict"),
                split=d.get("split"),
                reward_tests=d.get("reward_tests"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a trajectory record ({type(exc).__name__}: {exc})") from None

    @property
    def texts(self) -> tuple[str, ...]:
        """The step texts, in order."""
        return tuple(s.text for s in self.steps)

    @property
    def search_key(self) -> tuple[str, str, str, int]:
        """What identifies the search the record came from: (task_id, mode, model, seed)."""
        return (self.task_id, self.mode, self.model, self.seed)


def read_trajectories(path: str | os.PathLike) -> list[TrajectoryRecord]:
    """The records of a ``trajectories.jsonl`` file in either format ([] when it does not exist); an
    ``o1code eval`` results row gives its played path, then each of its ``--samples`` paths.

    A torn last line (an interrupted append) is dropped, as `o1code.runs.read_jsonl` does.

    Raises:
        DataError: naming the file and line of a record that is not a trajectory.
    """
    records = []
    for number, d in enumerate(read_jsonl(path), 1):
        try:
            # an eval result row has a trace (and "steps" is its step count), a trajectory none;
            # a ``--samples N`` row also holds its N sampled paths
            if "trace" not in d:
                records.append(TrajectoryRecord.from_dict(d))
                continue
            records.append(record_of_result(d))
            records.extend(record_of_result({"task_id": d.get("task_id"), **ep}) for ep in d.get("sample_episodes", ()))
        except DataError as exc:
            raise DataError(f"{path}: record {number}: {exc}") from None
    return records


def in_problem_order(records: Sequence[TrajectoryRecord], task_ids: Sequence[str] | None = None
                     ) -> list[TrajectoryRecord]:
    """`records` grouped by problem in the order of `task_ids` (None: the natural order of the ids, mbpp/9
    before mbpp/10), each problem's records in their file order. A search on Ray commits its problems in
    arrival order; what learns from its file (SFT, PRM rows) reads them in this order, the local run's, so
    that the same search gives the same training data wherever it ran."""
    rank = ({t: i for i, t in enumerate(task_ids)} if task_ids is not None else
            {t: i for i, t in enumerate(sorted({r.task_id for r in records}, key=_natural))})
    return sorted(records, key=lambda r: rank.get(r.task_id, len(rank)))


def _natural(task_id: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", task_id))


def record_of_result(row: Mapping[str, Any]) -> TrajectoryRecord:
    """The path an ``o1code eval`` result row played (a greedy or sampled episode's ``trace``) as a
    `TrajectoryRecord`: `verdict` is ``"passed"`` when the row's reward tests passed (``reward_passed``;
    else ``"failed"``, or ``"truncated"`` with no code),
    `eval_passed` its verdict on the judging tests, no mode (the run's config.json says it) and no step
    statistics. `read_trajectories` reads a
    ``results.jsonl`` of such rows this way, so rejection-sampling data (``o1code eval --agent sample
    --split train``) feeds ``o1code sft`` as MCTS trajectories do.

    Raises:
        DataError: when `row` lacks ``task_id`` or ``trace``.
    """
    try:
        steps = tuple(StepRecord(text=str(t), value=0.0, visits=0) for t in row["trace"])
        return TrajectoryRecord(task_id=str(row["task_id"]), mode="", steps=steps, code=row.get("code"),
                                verdict=("passed" if row.get("reward_passed") else
                                         "truncated" if row.get("code") is None else "failed"),
                                reward=float(row.get("reward", 0.0) or 0.0), eval_passed=bool(row.get("passed")),
                                answer=True, eval_verdict=row.get("verdict"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"not an eval result row ({type(exc).__name__}: {exc})") from None


# -- PRM examples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointwiseExample:
    """One point-wise PRM example: the step after `prefix`, with its soft (`value`) and hard label."""

    task_id: str
    prefix: tuple[str, ...]  #: the steps before `step`
    step: str
    value: float  #: soft label: the node's Q/N
    hard: int | None  #: hard label (None in old records that lack it)
    visits: int
    split: str | None = None
    reward_tests: str | None = None  #: "dataset": oracle labels


@dataclass(frozen=True)
class PairwiseExample:
    """One pair-wise PRM example: two steps after the same `prefix`; `chosen` had the higher value."""

    task_id: str
    prefix: tuple[str, ...]
    chosen: str
    rejected: str
    chosen_value: float
    rejected_value: float
    split: str | None = None
    reward_tests: str | None = None


def pointwise_examples(records: Iterable[TrajectoryRecord], min_visits: int = 1) -> list[PointwiseExample]:
    """Every distinct step of `records` visited at least `min_visits` times, once, in record order.

    A step shared by several paths (same search, same node id; for old records, same text prefix)
    gives one example.
    """
    seen: set[tuple] = set()
    out: list[PointwiseExample] = []
    for rec in records:
        texts = rec.texts
        for j, s in enumerate(rec.steps):
            key = (rec.search_key, s.node_id) if s.node_id is not None else (rec.search_key, texts[: j + 1])
            if key in seen or s.visits < min_visits:
                continue
            seen.add(key)
            out.append(PointwiseExample(rec.task_id, texts[:j], s.text, s.value, s.hard, s.visits,
                                        rec.split, rec.reward_tests))
    return out


def _pairs(candidates: Sequence[tuple[str, float]], margin: float) -> list[tuple[str, str, float, float]]:
    out = []
    for i, (a, va) in enumerate(candidates):
        for b, vb in candidates[i + 1:]:
            if abs(va - vb) >= margin and va != vb:
                win, lose = ((a, va), (b, vb)) if va > vb else ((b, vb), (a, va))
                out.append((win[0], lose[0], win[1], lose[1]))
    return out


def pairwise_examples(records: Iterable[TrajectoryRecord], margin: float = 0.1) -> list[PairwiseExample]:
    """Pairs of sibling steps (same prefix) whose values differ by at least `margin`, each pair once.

    Candidates at a prefix are a path's step (visited) and its siblings with a known value (see
    `SampleRecord.value`), dropped code samples included. Old records have no siblings: their steps
    are grouped by text prefix across the records of one search instead.
    """
    groups: dict[tuple, tuple[TrajectoryRecord, tuple[str, ...], dict[str, float]]] = {}
    for rec in records:
        texts = rec.texts
        for j, s in enumerate(rec.steps):
            group_id = s.parent_id if s.node_id is not None else texts[:j]
            key = (rec.search_key, group_id)
            _, _, cands = groups.setdefault(key, (rec, texts[:j], {}))
            if s.visits > 0:
                cands.setdefault(s.text, s.value)
            for sib in s.siblings:
                if sib.value is not None:
                    cands.setdefault(sib.text, sib.value)
    out = []
    for rec, prefix, cands in groups.values():
        for win, lose, vw, vl in _pairs(list(cands.items()), margin):
            out.append(PairwiseExample(rec.task_id, prefix, win, lose, vw, vl, rec.split, rec.reward_tests))
    return out


def answer_pairs(records: Iterable[TrajectoryRecord]) -> list[PairwiseExample]:
    """Pairs of two answers to one problem: one that passed every test of the problem (``eval_passed``)
    against one that passed only the reward tests (``verdict == "passed"``, ``eval_passed`` false), the
    distinction a selector needs beyond the visible test. Each pair is the first step where the two
    paths part, after the steps they share (in direct mode: the two answers), valued 1 and 0. Distinct
    paths, each pair once, in record order."""
    right: dict[str, dict[tuple[str, ...], TrajectoryRecord]] = {}  # distinct paths, in record order
    visible_only: dict[str, dict[tuple[str, ...], None]] = {}
    for rec in records:
        if rec.code is None or not rec.steps:
            continue
        if rec.eval_passed:
            right.setdefault(rec.task_id, {}).setdefault(rec.texts, rec)
        elif rec.verdict == "passed" and rec.eval_passed is False:
            visible_only.setdefault(rec.task_id, {})[rec.texts] = None
    out = []
    for task_id, wins in right.items():
        for win, rec in wins.items():
            for lose in visible_only.get(task_id, {}):
                k = next((i for i, (a, b) in enumerate(zip(win, lose)) if a != b), None)
                if k is not None:  # None: one path is the other's start, no step to rank
                    out.append(PairwiseExample(task_id, win[:k], win[k], lose[k], 1.0, 0.0, rec.split,
                                               rec.reward_tests))
    return out


__all__ = [
    "PairwiseExample", "PointwiseExample", "SampleRecord", "StepRecord", "TrajectoryRecord", "answer_pairs", "pairwise_examples",
    "pointwise_examples", "read_trajectories", "record_of_result",
]
