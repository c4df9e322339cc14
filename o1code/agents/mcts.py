"""MCTS over reasoning steps (step 2 of the paper's Algorithm 1), in one file.

The tree's nodes are env states (`CodeEnv.get_state`): a node's children are next steps sampled
from the policy, `children` at a time in one batched call; terminal nodes (code written, or the
step limit reached) carry the env's reward. One rollout is:

1. selection: from the root, go to an unvisited child (uniformly at random) while one exists,
   else to the child with the best UCT score ``Q/N + c * sqrt(ln N(parent) / N)`` (plus
   `value_weight * value` when a process reward (a PRM, `value_fn`) scores new nodes);
2. expansion and simulation: expand the leaf, move to a random child, repeat until terminal (with
   `prm_leaf`, stop at the first new node a PRM scored: its value stands in for the terminal's);
3. backup: the terminal reward (or that value) is added to Q and 1 to N of every node on the path,
   terminals included, so every node's value is the mean reward ``Q/N`` (not the authors' 1/N quirk).

Faithful to the authors' code (on by default, `keep_best_terminal`): when an expansion samples
any terminal step, only the best terminal becomes a child. A step's generation is never re-run:
a node keeps its state and the env replays nothing but the step's own (cached) grading.

The answer is the terminal with the best mean value, ties broken by visits. Every root-to-leaf
path is exported as a `TrajectoryRecord` (`trajectory_records`) with per-step node id, value,
visits and hard label (1 when the step's subtree holds a terminal that passes every reward test),
and the step's siblings: every other distinct sample of the same expansion, the code samples that
`keep_best_terminal` dropped from the tree included (they stay in `Node.samples`, not in the tree).
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from o1code.data.formats import STEP_STOPS
from o1code.data.trajectories import SampleRecord, StepRecord, TrajectoryRecord
from o1code.envs import CodeEnv, EnvState, EvalInfo
from o1code.models import Generator, SamplingParams
from o1code.rewards.process import PrefixValueFn, ProcessReward, as_process_reward, default_question, prefix_values

from o1code.agents.llm import problem_seed

#: The old value hook (still accepted): ``(problem, steps) -> value in [0, 1]`` of the state after `steps`.
ValueFn = Callable[[Any, tuple[str, ...]], float]


@dataclass
class MCTSConfig:
    """Every hyperparameter of the search; defaults follow the paper's code (see the spec, §4.2)."""

    rollouts: int = 12  #: rollouts per problem (the authors' API script: 12)
    time_budget_s: float | None = None  #: stop starting rollouts after this many seconds
    children: int = 3  #: steps sampled per expansion (num_sampling)
    exploration: float = 2.0  #: UCT constant c
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    max_step_tokens: int = 384
    keep_best_terminal: bool = True  #: an expansion with terminals keeps only the best one
    value_weight: float = 0.0  #: weight of the process reward's value in selection (0: pure UCT)
    #: with a process reward: a rollout stops at the first new node it scores and backs up that value
    #: instead of playing on to a terminal (AlphaZero's leaf evaluation: one expansion per rollout, so
    #: fewer model calls); a search that ends without a terminal plays one more rollout out
    prm_leaf: bool = False
    seed: int = 0


@dataclass(eq=False)
class Node:
    """A search node: the env state after its step, and the statistics of its subtree."""

    state: EnvState
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0  #: sum of backed-up rewards
    terminal: bool = False
    reward: float = 0.0  #: the env's reward for the terminal step (0 otherwise)
    info: dict[str, Any] = field(default_factory=dict)
    expanded: bool = False
    sampled: int = 0  #: steps sampled at this node's expansion
    sampled_terminal: int = 0
    sampled_passing: int = 0  #: sampled terminal steps that passed every reward test
    prior: float | None = None  #: the process reward's value of the node, when one is set
    id: int = 0  #: unique within one search, in order of creation; the root is 0
    kept: bool = True  #: False for a sample `keep_best_terminal` dropped (not in its parent's children)
    samples: list[Node] = field(default_factory=list)  #: distinct samples of this node's expansion, kept or not

    @property
    def value(self) -> float:
        """Mean backed-up reward, 0 for an unvisited node."""
        return self.total / self.visits if self.visits else 0.0

    @property
    def step(self) -> str:
        return self.state.steps[-1] if self.state.steps else ""

    @property
    def passed(self) -> bool:
        """A terminal step whose code passed every reward test."""
        return self.terminal and self.info.get("verdict") == "passed"

    @property
    def eval(self) -> EvalInfo | None:
        """The terminal code's run on the judging tests (``info["eval"]``); None without code."""
        return EvalInfo.from_info(self.info)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()

    def path(self) -> list[Node]:
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


@dataclass
class SearchResult:
    """What one search found: the root, the chosen answer, and costs."""

    root: Node
    answer: Node | None  #: best terminal by mean value (ties: visits); None if no terminal
    rollouts: int
    seconds: float
    generate_seconds: float
    tokens: int
    code_samples: int = 0  #: code samples drawn (terminal steps with code), kept as children or not
    oracle_pass: bool = False  #: any code sample passed the judging tests (``info["eval"]``): oracle pass@k
    task_id: str = ""
    split: str = ""  #: the problem's split
    reward_tests: str = ""  #: the env's reward tests ("visible", "tcg", "dataset": oracle)
    calls: int = 0  #: model calls (one per expansion)

    @property
    def terminals(self) -> list[Node]:
        return [n for n in self.root.walk() if n.terminal]

    @property
    def aspr(self) -> float | None:
        """Share of code samples passing the reward tests among those drawn at the penultimate nodes
        of paths that pass the reward tests (the spec's reading of ASPR; samples without code do
        not count); None when no path passes."""
        parents = {id(n.parent): n.parent for n in self.terminals if n.passed and n.parent is not None}
        rates = [p.sampled_passing / p.sampled_terminal for p in parents.values() if p.sampled_terminal]
        return sum(rates) / len(rates) if rates else None


class MCTSAgent:
    """Monte Carlo tree search over reasoning steps of a `CodeEnv`, with steps from a `Generator`.

    Use `search(env)` after ``env.reset(...)``; `act` plays the best path found, so the agent
    also fits the `Agent` protocol (it searches at the first step of each episode).
    """

    def __init__(
        self,
        generator: Generator,
        config: MCTSConfig | None = None,
        value_fn: ProcessReward | ValueFn | None = None,
        env: CodeEnv | None = None,
    ) -> None:
        """`value_fn`: a `ProcessReward` (a PRM) or the old ``(problem, steps) -> float`` hook; it
        scores every new non-terminal node (`Node.prior`, one batched call per expansion), added to
        UCT with weight ``config.value_weight``."""
        self.generator = generator
        self.config = config or MCTSConfig()
        self.value_fn = value_fn
        self.process_reward: ProcessReward | None = as_process_reward(value_fn, PrefixValueFn)
        self.env = env
        self.rng = random.Random(self.config.seed)
        self._calls = 0
        self._problem_seed = self.config.seed
        self._plan: list[str] = []
        self.last: SearchResult | None = None

    # -- the search --------------------------------------------------------------------------

    def search(self, env: CodeEnv, on_rollout: Callable[[int, Node], None] | None = None) -> SearchResult:
        """Search from the env's current state; the env is left at that state afterwards.

        `on_rollout(i, leaf)` is called after each rollout (for progress views).
        """
        env = getattr(env, "unwrapped", env)
        cfg = self.config
        start = time.perf_counter()
        self._gen_seconds = 0.0
        self._tokens = 0
        self._code_samples = 0
        self._oracle_pass = False
        # Every random choice of this search comes from (seed, task id), not from earlier searches.
        self._problem_seed = problem_seed(cfg.seed, env.problem.task_id)
        self.rng = random.Random(self._problem_seed)
        self._calls = 0
        self._next_id = 1
        # A question-text PRM reads the question in the searched env's prompt format.
        self.process_reward = as_process_reward(
            self.value_fn, PrefixValueFn, functools.partial(default_question, mode=env.mode, show_tests=env.show_tests)
        )
        root_state = env.get_state()
        root = Node(state=root_state)
        done = 0
        for done in range(1, cfg.rollouts + 1):
            if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s and done > 1:
                done -= 1
                break
            node = self._rollout(env, root, leaf_value=cfg.prm_leaf and self.process_reward is not None)
            if on_rollout is not None:
                on_rollout(done, node)
            if cfg.time_budget_s is None and self._solved_everything(root):
                break
        if cfg.prm_leaf and done and not any(n.terminal for n in root.walk()):  # leaf values found no answer
            done += 1
            self._rollout(env, root, leaf_value=False)
        env.set_state(root_state)
        terminals = [n for n in root.walk() if n.terminal]
        answer = max(terminals, key=lambda n: (n.value, n.visits, n.reward), default=None)
        self.last = SearchResult(
            root, answer, done, time.perf_counter() - start, self._gen_seconds, self._tokens,
            self._code_samples, self._oracle_pass, env.problem.task_id, env.problem.split, env.tests_name,
            self._calls,
        )
        return self.last

    def _rollout(self, env: CodeEnv, root: Node, leaf_value: bool) -> Node:
        """One rollout (selection, expansion and simulation, backup); returns its last node. With
        `leaf_value` the simulation stops at the first new node the process reward scored, and its
        value is backed up in place of a terminal's reward."""
        path = [root]
        node = root
        while node.expanded and not node.terminal and node.children:
            node = self._select(node)
            path.append(node)
        while not node.terminal:
            self._expand(env, node)
            if not node.children:  # nothing usable was sampled: count it as a dead end
                break
            node = self.rng.choice(node.children)
            path.append(node)
            if leaf_value and node.prior is not None:
                break
        reward = node.reward if node.terminal else node.prior if leaf_value and node.prior is not None else 0.0
        for n in path:
            n.visits += 1
            n.total += reward
        return node

    @staticmethod
    def _solved_everything(root: Node) -> bool:
        # Every remaining rollout would only revisit a fully expanded tree.
        return all(n.terminal or (n.expanded and n.children) for n in root.walk()) and all(
            n.passed for n in root.walk() if n.terminal
        )

    def _uct(self, parent: Node, child: Node) -> float:
        score = child.value + self.config.exploration * math.sqrt(math.log(parent.visits) / child.visits)
        if self.process_reward is not None and child.prior is not None:
            score += self.config.value_weight * child.prior
        return score

    def _select(self, node: Node) -> Node:
        unvisited = [c for c in node.children if c.visits == 0]
        if unvisited:
            return self.rng.choice(unvisited)
        return max(node.children, key=lambda c: self._uct(node, c))

    def _params(self) -> SamplingParams:
        cfg = self.config
        self._calls += 1
        return SamplingParams(
            n=cfg.children,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_tokens=cfg.max_step_tokens,
            stop=STEP_STOPS,
            seed=(self._problem_seed + self._calls) % (1 << 62),
        )

    def _expand(self, env: CodeEnv, node: Node) -> None:
        env.set_state(node.state)
        prompt = env.observation()["prompt"]
        t0 = time.perf_counter()
        completions = self.generator.generate([prompt], self._params())[0]
        self._gen_seconds += time.perf_counter() - t0
        node.expanded = True
        seen: dict[str, Node] = {}
        for completion in completions:
            self._tokens += len(completion.token_ids)
            env.set_state(node.state)
            _, reward, terminated, truncated, info = env.step(completion.text)
            child = Node(state=env.get_state(), parent=node, terminal=terminated or truncated, reward=reward)
            child.info = {k: v for k, v in info.items() if k in ("verdict", "passed", "total", "code", "eval")}
            node.sampled += 1
            if child.terminal and "verdict" in info:
                node.sampled_terminal += 1
                node.sampled_passing += info["verdict"] == "passed"
                self._code_samples += 1
                ev = EvalInfo.from_info(info)
                self._oracle_pass |= bool(ev and ev.all_passed)
            if child.step in seen:  # identical samples are one child
                continue
            child.id, self._next_id = self._next_id, self._next_id + 1
            seen[child.step] = child
        node.samples = list(seen.values())
        children = list(node.samples)
        terminals = [c for c in children if c.terminal]
        if self.config.keep_best_terminal and terminals:
            children = [max(terminals, key=lambda c: c.reward)]
            for c in node.samples:
                c.kept = c is children[0]
        if self.process_reward is not None:
            scored = [c for c in children if not c.terminal]
            values = prefix_values(self.process_reward, [(env.problem, c.state.steps) for c in scored])
            for c, v in zip(scored, values):
                c.prior = v
        node.children = children
        env.set_state(node.state)

    # -- the Agent protocol ------------------------------------------------------------------

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str:
        """Return the next step of the best path; searches when an episode starts."""
        if self.env is None:
            raise ValueError("MCTSAgent.act needs the env: MCTSAgent(generator, env=env)")
        k = int(observation["step"])
        if k == 0 or not self._plan:
            result = self.search(self.env)
            self._plan = list(result.answer.state.steps) if result.answer else []
        return self._plan[k] if k < len(self._plan) else ""


# -- trajectory records -------------------------------------------------------------------------


def hard_label(node: Node) -> int:
    """1 when the node's subtree holds a terminal that passes every reward test, else 0."""
    return int(any(n.passed for n in node.walk()))


def _sample_record(n: Node) -> SampleRecord:
    if n.visits:
        value: float | None = n.value
    else:
        value = n.reward if n.terminal else None  # a terminal's value is its reward
    if n.kept:
        hard: int | None = hard_label(n)
    else:
        hard = int(n.passed) if n.terminal else None
    ev = n.eval
    return SampleRecord(
        text=n.step, node_id=n.id, kept=n.kept, terminal=n.terminal, value=value, visits=n.visits, hard=hard,
        prm=n.prior, reward=n.reward if n.terminal else None, verdict=n.info.get("verdict"),
        eval_verdict=ev.verdict if ev else None, eval_passed=ev.all_passed if ev else None,
    )


def _step_record(n: Node) -> StepRecord:
    parent = n.parent
    siblings = () if parent is None else tuple(_sample_record(s) for s in parent.samples if s is not n)
    return StepRecord(
        text=n.step, value=n.value, visits=n.visits, prm=n.prior, hard=hard_label(n), node_id=n.id,
        parent_id=parent.id if parent is not None else None, depth=len(n.state.steps), terminal=n.terminal,
        siblings=siblings,
    )


def trajectory_records(result: SearchResult, task_id: str, mode: str, model: str = "", seed: int = 0
                       ) -> list[TrajectoryRecord]:
    """Every root-to-terminal path of a search as a `TrajectoryRecord`, in tree order.

    ``record.to_dict()`` is the JSON line of ``trajectories.jsonl``: the old keys (task_id, mode,
    steps with text/value/visits/prm/hard, code, verdict, reward, eval_passed, answer, model, seed)
    and the new ones (per step: node_id, parent_id, depth, terminal, siblings; per record:
    eval_verdict, split, reward_tests).
    """
    records = []
    for leaf in result.terminals:
        ev = leaf.eval
        records.append(
            TrajectoryRecord(
                task_id=task_id,
                mode=mode,
                steps=tuple(_step_record(n) for n in leaf.path()[1:]),
                code=leaf.info.get("code"),
                verdict=leaf.info.get("verdict", "truncated"),
                reward=leaf.reward,
                eval_passed=bool(ev and ev.all_passed),
                answer=leaf is result.answer,
                model=model,
                seed=seed,
                eval_verdict=ev.verdict if ev else None,
                split=result.split or None,
                reward_tests=result.reward_tests or None,
            )
        )
    return records
