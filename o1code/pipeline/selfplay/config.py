"""Self-play's settings and plan: `SelfPlayConfig` (the shared settings and each stage's table) and the
ordered stages of Algorithm 1 (`plan`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1code.data.formats import MODES, SHOW_TESTS
from o1code.data.prompts import PROMPT_STYLES
from o1code.models import parse_spec
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig
from o1code.pipeline.ppo import PPORunConfig
from o1code.pipeline.prm import PRMCollectConfig
from o1code.pipeline.tcg import TCGEvalConfig
from o1code.training.prm import PRMTrainConfig
from o1code.training.sft import PolicySFTConfig
from o1code.training.tcg import TCGTrainConfig

#: The settings tables of a selfplay TOML file: the stage config each one overrides.
TABLES: dict[str, type] = {"tcg_train": TCGTrainConfig, "tcg_eval": TCGEvalConfig, "collect": PRMCollectConfig,
                           "sft": PolicySFTConfig, "prm": PRMTrainConfig, "rl": PPORunConfig, "eval": EvalConfig}
#: Fields of each stage config that self-play sets itself (from the top-level settings and the stages
#: before); a table that names one is refused.
OWNED: dict[str, frozenset[str]] = {
    "tcg_train": frozenset({"out_dir", "split", "limit", "seed", "show_example"}),
    "tcg_eval": frozenset({"model", "split", "limit", "run_dir", "problems_jsonl"}),
    "collect": frozenset({"model", "dataset", "split", "limit", "seed", "run_dir", "mode", "show_tests", "prompt_style",
                          "max_steps", "max_step_tokens", "rollouts", "children", "prm", "value_weight", "ray"}),
    "sft": frozenset({"trajectories", "run_dir", "model", "dataset", "mode", "show_tests", "prompt_style", "seed",
                      "device"}),
    "prm": frozenset({"data", "run_dir", "seed", "device"}),
    "rl": frozenset({"model", "run_dir", "seed", "device", "dataset", "train_limit", "train_tasks", "mode",
                     "max_steps", "show_tests", "prompt_style", "tests", "prm", "ray", "rollout_workers"}),
    "eval": frozenset({"agent", "mode", "model", "dataset", "split", "limit", "tasks", "seed", "run_dir",
                       "max_steps", "tests", "show_tests", "prompt_style", "max_step_tokens", "prm", "value_weight",
                       "ray"}),
}
EVAL_AGENTS = ("greedy", "sample", "mcts")
#: Settings a resumed run may change: where it is written, how many iterations, and the hardware
#: choices (device, precision, Ray), which each stage's manifest records as it ran.
UNPINNED = ("run_dir", "iterations", "device", "dtype", "ray", "rollout_workers")


@dataclass
class SelfPlayConfig:
    """Every setting of ``o1code selfplay``: the shared settings here, each stage's own in a table
    (``[collect]``, ``[sft]``, ``[prm]``, ``[rl]``, ``[eval]``, ``[tcg_train]``, ``[tcg_eval]`` of the TOML
    file: the fields of that stage's config, e.g. ``[rl] updates = 8``; those self-play sets from the
    shared settings are refused there).

    Attributes:
        run_dir: The run directory (iter-I/STAGE/ per stage, report.md, report.png, tb/); re-using it resumes.
        model: The starting policy (any model spec); also the backbone of the PRM, the SFT and the TCG
            unless their tables name another ``model``.
        dataset: Benchmark: train problems for data and RL, ``eval_split`` for the held-out figures.
        iterations: Rounds of PRM -> RL -> evaluation -> new data after SFT (a rerun with more goes on).
        seed: Seed of every stage (iteration I's collection and RL use seed + I, so new data differs).
        mode: Reasoning format (pseudocode, vanilla, direct) of every stage.
        show_tests: Tests shown in prompts (none, first, all); the judging tests stay hidden either way.
        prompt_style: The prompts of every stage: fewshot (None) or instruct (the policy's chat template
            around an EvalPlus-style instruction; `o1code.data.prompts`).
        max_steps: Steps per episode, in every stage.
        max_step_tokens: Tokens per step, in every stage.
        train_limit: The first N problems of the train split (collection, TCG and RL).
        rollouts: MCTS rollouts per problem (collection and evaluation).
        children: Children per MCTS expansion.
        tests: RL's reward tests: visible (the tests shown in the prompt), tcg (the TCG's; needs ``tcg``)
            or dataset (every test of a train problem).
        tcg: The test-case generator: "" (none), ``train`` (stage iter-0/tcg trains one on the train
            problems) or the spec of a trained one (e.g. ``hf:runs/tcg/final``; its figures are measured).
        prm_reward: RL rewards every step but the last with the PRM's value.
        prm_value_weight: Weight of the PRM's value in the MCTS of new data and of evaluation (0: none).
        eval_split: The split of the fixed held-out slice every evaluation uses (never train).
        eval_limit: Its first N problems.
        eval_agents: Agents measured on it each iteration: greedy, sample, mcts.
        device: cpu or cuda for the training stages (None: cuda when available).
        dtype: Backbone precision of the transformers stages (SFT, PRM, RL) unless their table sets one:
            float32 or bfloat16 (None: each stage's default). bfloat16 halves training time on CPUs with
            AVX512-BF16 (bench/bench_precision.py); adapters and the value head stay float32.
        ray: Run the decoding stages on Ray worker actors: local (start Ray here), auto (join this machine's
            cluster) or a cluster ADDRESS. The evaluations and the MCTS collections play their problems on
            the workers (as ``o1code eval --ray``), and RL draws its rollouts on `rollout_workers`; this
            process stays the only writer of the run directory, so a run started on Ray resumes locally and
            the other way round (not pinned). The TCG and the training stages run here.
        rollout_workers: RL's rollouts on this many Ray workers of llama.cpp (needs ``ray`` and a starting model
            on llama.cpp: ``default``, ``llamacpp:PATH``). Each RL stage then trains a fresh LoRA on the GGUF
            export of the policy before it (what the workers run; trained tensors in Q8_0) instead of its
            float weights. None: RL samples in this process.
    """

    run_dir: str = "runs/selfplay"
    model: str = "default"
    dataset: str = "mbpp"
    iterations: int = 1
    seed: int = 0
    mode: str = "pseudocode"
    show_tests: str = "first"
    prompt_style: str | None = None  # None: fewshot (runs pinned before the key existed still resume)
    max_steps: int = 4
    max_step_tokens: int = 256
    train_limit: int = 40
    rollouts: int = 8
    children: int = 3
    tests: str = "visible"
    tcg: str = ""
    prm_reward: bool = True
    prm_value_weight: float = 1.0
    eval_split: str = "validation"
    eval_limit: int = 20
    eval_agents: list[str] = field(default_factory=lambda: ["greedy", "mcts"])
    device: str | None = None
    dtype: str | None = None
    ray: str | None = None
    rollout_workers: int | None = None
    # -- the stage tables (TOML only)
    tcg_train: dict[str, Any] = field(default_factory=dict)
    tcg_eval: dict[str, Any] = field(default_factory=dict)
    collect: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    prm: dict[str, Any] = field(default_factory=dict)
    rl: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PipelineError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.show_tests not in SHOW_TESTS:
            raise PipelineError(f"unknown show_tests {self.show_tests!r}; choose one of {', '.join(SHOW_TESTS)}")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise PipelineError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")
        if self.tests not in ("visible", "tcg", "dataset"):
            raise PipelineError(f"unknown tests {self.tests!r}; choose visible, tcg or dataset")
        if self.tests == "tcg" and not self.tcg:
            raise PipelineError("tests = 'tcg' rewards RL with the TCG's tests: set tcg (train, or a model spec)")
        if self.eval_split == "train":
            raise PipelineError("eval_split must be held out (validation or test), not the train split")
        if self.iterations < 0 or self.train_limit < 1 or self.eval_limit < 1:
            raise PipelineError("iterations must be >= 0, train_limit and eval_limit >= 1")
        if self.rollout_workers is not None and (self.rollout_workers < 1 or not self.ray):
            raise PipelineError("rollout_workers counts Ray workers: give ray (local, auto or an address) and >= 1")
        if self.rollout_workers and parse_spec(self.model, bare=True).kind not in ("default", "llamacpp"):
            raise PipelineError(f"rollout_workers run llama.cpp, which needs a starting model that plays on it (default, "
                                f"llamacpp:PATH), not {self.model!r}; leave rollout_workers unset and RL samples here")
        bad = [a for a in self.eval_agents if a not in EVAL_AGENTS]
        if bad or not self.eval_agents:
            raise PipelineError(f"eval_agents: choose from {', '.join(EVAL_AGENTS)} (got {self.eval_agents!r})")
        for table, cls in TABLES.items():
            given = self.table(table)
            unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
            owned = sorted(set(given) & OWNED[table])
            if unknown:
                raise PipelineError(f"[{table}]: unknown keys {', '.join(unknown)} (the fields of {cls.__name__})")
            if owned:
                raise PipelineError(f"[{table}]: {', '.join(owned)} is set by self-play from the shared settings; "
                                    "set it there (top level of the file, or its flag)")
        if self.mode == "direct":
            self.max_steps = 1

    def table(self, name: str) -> dict[str, Any]:
        """The overrides of stage table `name` (a copy)."""
        return dict(getattr(self, name))


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Stage:
    """One stage of the run: its iteration and name; ``key`` is ``I/NAME`` (the ``--from`` form)."""

    iteration: int
    name: str

    @property
    def key(self) -> str:
        return f"{self.iteration}/{self.name}"

    def dir(self, run: Path) -> Path:
        return run / f"iter-{self.iteration}" / self.name


def plan(config: SelfPlayConfig) -> list[Stage]:
    """Every stage of the run, in the order they run."""
    stages = [Stage(0, "tcg")] if config.tcg else []
    stages += [Stage(0, n) for n in ("baseline", "collect", "sft", "eval")]
    for i in range(1, config.iterations + 1):
        stages += [Stage(i, n) for n in ("prm", "rl", "eval", "collect")]
    return stages


def find_stage(stages: list[Stage], text: str) -> int:
    """The index in `stages` of ``I/NAME`` (or ``NAME``: its first occurrence); `PipelineError` if none."""
    for i, s in enumerate(stages):
        if text in (s.key, f"iter-{s.iteration}/{s.name}") or ("/" not in text and s.name == text):
            return i
    raise PipelineError(f"no stage {text!r} in this run; stages: {', '.join(s.key for s in stages)}")

