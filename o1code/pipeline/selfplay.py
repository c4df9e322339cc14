"""Self-play: o1-Coder's Algorithm 1 end to end, as one resumable run directory.

The stages, in order (``I`` is the iteration)::

    iter-0/tcg        train the test-case generator on train problems (or load one), and its figures
                      on the held-out slice; only with ``tcg`` set (its tests reward RL when tests="tcg")
    iter-0/baseline   held-out Pass@1 of the starting policy (greedy and MCTS: ``eval_agents``)
    iter-0/collect    MCTS on train problems, rewarded and labelled by their dataset tests -> trajectories
                      and PRM rows (train problems only: evaluation is on another split)
    iter-0/sft        policy SFT on the correct paths found so far
    iter-0/eval       held-out Pass@1 of the SFT policy
    iter-I/prm        PRM (re)trained on the rows of every collection so far   } I = 1 .. iterations
    iter-I/rl         PPO/GRPO from the last policy, rewarded by the reward tests } (the paper's
                      (visible or TCG) at the end and the PRM after each step     }  [PRM -> RL ->
    iter-I/eval       held-out Pass@1 of the new policy (MCTS guided by the PRM)  }  new data] loop)
    iter-I/collect    new MCTS data with the new policy and the PRM's values      }

Trained policies play (evaluation, new data) on the backend of the starting model: when it is a GGUF on
llama.cpp (``default``), the SFT and RL stages also export their policy into ``policy.gguf`` beside it
(`o1code.models.gguf_export`: the trained tensors as Q8_0, the rest copied from the base), so that
baseline and trained policies are measured alike and decode faster (greedy: 2.6x) than on transformers.

Each stage writes into ``RUN/iter-I/STAGE/``: its own outputs (every inner stage is itself resumable:
an eval or collection resumes after its last problem, training from its last checkpoint), then
``manifest.json`` (the stage's config, its inputs' and outputs' sha256, seconds summed over every
attempt, figures), then the done-marker ``stage.done`` (holding the manifest's sha256), last. A
rerun of the same command skips every stage whose marker, manifest and outputs verify, and goes on
with the first one that does not; ``from_stage`` deletes a stage and everything after it so they are
done again. The run's settings are pinned in ``RUN/config.json``: a changed setting is refused by
name (``iterations`` may grow).

After every stage the report is rewritten from the manifests: ``RUN/report.md`` (Pass@1 per iteration
for each agent, the PRM's held-out AUC, RL's train reward vs the hidden-test pass rate of the same
episodes, the TCG figures, wall time per stage), ``RUN/report.png`` and one TensorBoard run in
``RUN/tb`` (per-iteration scalars; each stage keeps its own logs as well).

Honesty: every held-out figure is measured on ``eval_split`` (never train) with the judging tests
hidden (search and selection see only the visible tests); the dataset tests label only train problems.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import json
import logging
import math
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from o1code.data.formats import MODES, SHOW_TESTS
from o1code.errors import RunDirError
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, run_eval
from o1code.pipeline.ppo import PPORunConfig, _mean
from o1code.pipeline.prm import PRMCollectConfig
from o1code.pipeline.tcg import TCGEvalConfig
from o1code.runs import digest, is_done, mark_done, pin_config, read_jsonl, write_atomic, write_jsonl
from o1code.training.prm import PRMTrainConfig
from o1code.training.sft import PolicySFTConfig
from o1code.training.tcg import TCGTrainConfig

log = logging.getLogger(__name__)

#: The settings tables of a selfplay TOML file: the stage config each one overrides.
TABLES: dict[str, type] = {"tcg_train": TCGTrainConfig, "tcg_eval": TCGEvalConfig, "collect": PRMCollectConfig,
                           "sft": PolicySFTConfig, "prm": PRMTrainConfig, "rl": PPORunConfig, "eval": EvalConfig}
#: Fields of each stage config that self-play sets itself (from the top-level settings and the stages
#: before); a table that names one is refused.
OWNED: dict[str, frozenset[str]] = {
    "tcg_train": frozenset({"out_dir", "split", "limit", "seed", "show_example"}),
    "tcg_eval": frozenset({"model", "split", "limit", "run_dir", "problems_jsonl"}),
    "collect": frozenset({"model", "dataset", "split", "limit", "seed", "run_dir", "mode", "show_tests",
                          "max_steps", "max_step_tokens", "rollouts", "children", "prm", "value_weight"}),
    "sft": frozenset({"trajectories", "run_dir", "model", "dataset", "mode", "show_tests", "seed", "device"}),
    "prm": frozenset({"data", "run_dir", "seed", "device"}),
    "rl": frozenset({"model", "run_dir", "seed", "device", "dataset", "train_limit", "train_tasks", "mode",
                     "max_steps", "show_tests", "tests", "prm"}),
    "eval": frozenset({"agent", "mode", "model", "dataset", "split", "limit", "tasks", "seed", "run_dir",
                       "max_steps", "tests", "show_tests", "max_step_tokens", "prm", "value_weight", "ray"}),
}
EVAL_AGENTS = ("greedy", "sample", "mcts")
#: Settings a resumed run may change: where it is written, how many iterations, and the hardware
#: choices (device, precision), which each stage's manifest records as it ran.
UNPINNED = ("run_dir", "iterations", "device", "dtype")


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
    """

    run_dir: str = "runs/selfplay"
    model: str = "default"
    dataset: str = "mbpp"
    iterations: int = 1
    seed: int = 0
    mode: str = "pseudocode"
    show_tests: str = "first"
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
        if self.tests not in ("visible", "tcg", "dataset"):
            raise PipelineError(f"unknown tests {self.tests!r}; choose visible, tcg or dataset")
        if self.tests == "tcg" and not self.tcg:
            raise PipelineError("tests = 'tcg' rewards RL with the TCG's tests: set tcg (train, or a model spec)")
        if self.eval_split == "train":
            raise PipelineError("eval_split must be held out (validation or test), not the train split")
        if self.iterations < 0 or self.train_limit < 1 or self.eval_limit < 1:
            raise PipelineError("iterations must be >= 0, train_limit and eval_limit >= 1")
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


# ---------------------------------------------------------------- hashes and manifests
def _hashes(paths: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    return {k: {"path": str(p), "sha256": digest(Path(p))} for k, p in paths.items()}


def read_manifest(run: Path, stage: Stage) -> dict[str, Any] | None:
    """The manifest of a finished stage, verified (marker, manifest hash, every output's hash); None
    when the stage has not finished. Raises `PipelineError` when a finished stage no longer verifies."""
    d = stage.dir(run)
    if not is_done(d, "stage"):
        return None
    marker = json.loads((d / "stage.done").read_text())
    path = d / "manifest.json"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != marker.get("manifest_sha256"):
        raise PipelineError(f"{path} does not match its done-marker: redo it with --from {stage.key}")
    manifest = json.loads(path.read_text())
    for name, out in manifest["outputs"].items():
        if not Path(out["path"]).exists() or digest(Path(out["path"])) != out["sha256"]:
            raise PipelineError(f"output {name} of stage {stage.key} ({out['path']}) changed since it finished: "
                                f"redo it with --from {stage.key}")
    return manifest


def _finish(run: Path, stage: Stage, config: Any, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
            figures: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    d = stage.dir(run)
    manifest = {"stage": stage.name, "iteration": stage.iteration,
                "config": asdict(config) if dataclasses.is_dataclass(config) else dict(config),
                "inputs": _hashes(inputs), "outputs": _hashes(outputs), "seconds": round(seconds, 2),
                "figures": dict(figures)}
    text = json.dumps(manifest, indent=2, default=str)
    write_atomic(d / "manifest.json", text)
    mark_done(d, "stage", {"manifest_sha256": hashlib.sha256(text.encode()).hexdigest()})  # last
    return manifest


# ---------------------------------------------------------------- the stages
#: ``generators(where, model_spec)``: a generator to use instead of loading `model_spec` (None: load it);
#: `where` is the stage key (``1/collect``), with ``/AGENT`` for an evaluation (``0/eval/mcts``).
GeneratorHook = Callable[[str, str], Any]


@dataclass
class _Context:
    config: SelfPlayConfig
    run: Path
    manifests: dict[str, dict[str, Any]]
    generators: GeneratorHook | None
    progress: bool

    def out(self, key: str, name: str) -> Path:
        return Path(self.manifests[key]["outputs"][name]["path"])

    def policy(self, iteration: int) -> str:
        """The policy after `iteration` (-1: the starting one) as a model spec."""
        if iteration < 0:
            return self.config.model
        return f"hf:{self.out('0/sft', 'policy') if iteration == 0 else self.out(f'{iteration}/rl', 'policy')}"

    def player(self, iteration: int) -> str:
        """The policy after `iteration` as the spec that plays it (evaluation, new data): its GGUF export
        on llama.cpp when its stage wrote one (see `_export`), else its transformers directory."""
        if iteration < 0:
            return self.config.model
        outputs = self.manifests["0/sft" if iteration == 0 else f"{iteration}/rl"]["outputs"]
        return f"llamacpp:{outputs['gguf']['path']}" if "gguf" in outputs else self.policy(iteration)

    def own_model(self, spec: str) -> dict[str, Path]:
        """``{"policy": path}`` when `spec` is a model this run trained (an input worth hashing), else {}."""
        path = Path(spec.split(":", 1)[1] if spec.startswith(("hf:", "llamacpp:")) else spec)
        return {"policy": path} if path.exists() and self.run.resolve() in path.resolve().parents else {}

    def prm(self, iteration: int) -> Path | None:
        return self.out(f"{iteration}/prm", "prm") if iteration >= 1 else None

    def tcg_spec(self) -> str:
        return self.manifests["0/tcg"]["figures"]["spec"] if self.config.tcg else ""

    def generator(self, stage: str, spec: str) -> Any:
        return self.generators(stage, spec) if self.generators is not None else None


def _export(ctx: _Context, policy: Path, dest: Path) -> dict[str, Path]:
    """``{"gguf": dest}`` after exporting the trained `policy` into `dest` when the starting model plays
    on llama.cpp (a GGUF: ``default`` with llama-cpp-python installed, or ``llamacpp:PATH``), so that
    trained policies play on the same backend, quantization aside (Q8_0 trained tensors), as the
    baseline, and faster than on transformers; else {} (they play on transformers)."""
    from o1code.models import ExportError, default_backend, parse_spec
    from o1code.models.gguf_export import export_policy

    kind = parse_spec(ctx.config.model, bare=True).kind
    if not (kind == "llamacpp" or (kind == "default" and default_backend() == "llamacpp")):
        return {}
    try:
        export_policy(policy, ctx.config.model, dest)
    except ExportError as exc:
        log.warning("selfplay: %s; the trained policy plays on transformers", exc)
        return {}
    return {"gguf": dest}


def _eval_stage(ctx: _Context, stage: Stage, policy: str, prm: Path | None) -> tuple[Any, dict, dict, dict]:
    c = ctx.config
    d = stage.dir(ctx.run)
    figures: dict[str, Any] = {"policy": policy}
    outputs: dict[str, Path] = {}
    configs = {}
    for agent in c.eval_agents:
        guided = agent == "mcts" and prm is not None and c.prm_value_weight > 0
        ev = EvalConfig(**{"agent": agent, "mode": c.mode, "model": policy, "dataset": c.dataset, "split": c.eval_split,
                           "limit": c.eval_limit, "seed": c.seed, "run_dir": str(d / agent), "max_steps": c.max_steps,
                           "tests": "visible", "show_tests": c.show_tests, "max_step_tokens": c.max_step_tokens,
                           "rollouts": c.rollouts, "children": c.children,
                           "prm": str(prm) if guided else None, "value_weight": c.prm_value_weight if guided else None,
                           **c.table("eval")})
        summary = run_eval(ev, generator=ctx.generator(f"{stage.key}/{agent}", policy), progress=ctx.progress)
        figures[f"{agent}_pass_at_1"] = summary["pass_at_1"]
        figures[f"{agent}_reward_pass_rate"] = summary["reward_pass_rate"]
        if summary.get("oracle_pass_at_k") is not None:
            figures[f"{agent}_oracle_pass_at_k"] = summary["oracle_pass_at_k"]
        figures["problems"] = summary["counted"]
        outputs[f"{agent}_results"] = d / agent / "results.jsonl"
        configs[agent] = asdict(ev)
    inputs = {**ctx.own_model(policy), **({"prm": prm} if prm is not None else {})}
    return configs, inputs, outputs, figures


def _collect_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    from o1code.pipeline.prm import collect

    c, i = ctx.config, stage.iteration
    policy, prm = ctx.player(i - 1 if i == 0 else i), ctx.prm(i)
    guided = prm is not None and c.prm_value_weight > 0
    cfg = PRMCollectConfig(**{"model": policy, "dataset": c.dataset, "split": "train", "limit": c.train_limit,
                              "seed": c.seed + i, "run_dir": str(stage.dir(ctx.run)), "mode": c.mode,
                              "show_tests": c.show_tests, "max_steps": c.max_steps,
                              "max_step_tokens": c.max_step_tokens, "rollouts": c.rollouts, "children": c.children,
                              "prm": str(prm) if guided else None,
                              "value_weight": c.prm_value_weight if guided else None, **c.table("collect")})
    counts = collect(cfg, generator=ctx.generator(stage.key, policy), progress=ctx.progress)
    search = stage.dir(ctx.run) / "search"
    (summary,) = json.loads((search / "summary.json").read_text())
    figures = {"policy": policy, "problems": counts["problems"], "point_rows": counts["point_rows"],
               "pair_rows": counts["pair_rows"], "solved_share": summary["pass_at_1"],
               "oracle_pass_at_k": summary.get("oracle_pass_at_k")}
    inputs = {**ctx.own_model(policy), **({"prm": prm} if guided else {})}
    outputs = {"trajectories": search / "trajectories.jsonl", "rows": Path(counts["rows"])}
    return cfg, inputs, outputs, figures


def _sft_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    from o1code.training.sft import train_sft

    c = ctx.config
    trajectories = [ctx.out(k, "trajectories") for k in ctx.manifests if k.endswith("/collect")]
    cfg = PolicySFTConfig(**{"model": c.model, "dtype": c.dtype, **c.table("sft"),
                             "trajectories": [str(t) for t in trajectories], "run_dir": str(stage.dir(ctx.run)),
                             "dataset": c.dataset, "mode": c.mode, "show_tests": c.show_tests, "seed": c.seed,
                             "device": c.device})
    res = train_sft(cfg)
    figures = {"examples": res.examples, "problems": res.problems, "records": res.records,
               "loss_first": res.loss[0] if res.loss else None, "loss_last": res.loss[1] if res.loss else None}
    outputs = {"policy": res.final_dir, **_export(ctx, res.final_dir, stage.dir(ctx.run) / "policy.gguf")}
    return cfg, {f"trajectories_{i}": t for i, t in enumerate(trajectories)}, outputs, figures


def _prm_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    from o1code.training.prm import train_prm

    c = ctx.config
    d = stage.dir(ctx.run)
    sources = [ctx.out(k, "rows") for k in ctx.manifests if k.endswith("/collect")]
    rows, seen = [], set()
    for src in sources:  # every collection so far, each row once
        for row in read_jsonl(src):
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "rows.jsonl", rows)
    cfg = PRMTrainConfig(**{"model": c.model, "dtype": c.dtype, **c.table("prm"), "data": str(d / "rows.jsonl"),
                            "run_dir": str(d), "seed": c.seed, "device": c.device})
    res = train_prm(cfg)
    after = res.metrics.get("after", {})
    figures = {"train_rows": res.train_rows, "heldout_rows": res.heldout_rows, "auc": after.get("auc"),
               "pair_accuracy": after.get("pair_accuracy"), "auc_before": res.metrics.get("before", {}).get("auc"),
               "loss_first": res.loss[0] if res.loss else None, "loss_last": res.loss[1] if res.loss else None}
    return cfg, {f"rows_{i}": s for i, s in enumerate(sources)}, {"prm": res.final_dir}, figures


def _rl_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    from o1code.pipeline.ppo import run_ppo

    c, i = ctx.config, stage.iteration
    policy, prm = ctx.policy(i - 1), ctx.prm(i)
    tests = f"tcg:{ctx.tcg_spec()}" if c.tests == "tcg" else c.tests
    cfg = PPORunConfig(**{"eval_limit": 0, "max_step_tokens": c.max_step_tokens, "dtype": c.dtype, **c.table("rl"),
                          "model": policy, "run_dir": str(stage.dir(ctx.run)), "seed": c.seed + i,
                          "device": c.device, "dataset": c.dataset, "train_limit": c.train_limit, "mode": c.mode,
                          "max_steps": c.max_steps, "show_tests": c.show_tests, "tests": tests,
                          "prm": str(prm) if c.prm_reward and prm is not None else None})
    res = run_ppo(cfg, progress=ctx.progress)

    def mean(key: str) -> float | None:  # over the last 3 updates, as the PPO summary's last column
        value = _mean(res.history[-3:], key)
        return None if math.isnan(value) else value

    figures = {"updates": len(res.history), "train_reward": mean("reward"), "reward_test_pass": mean("reward_test_pass"),
               "hidden_test_pass": mean("hidden_test_pass"), "seconds_per_update": mean("seconds_per_update"),
               "kl": mean("kl")}
    inputs = {**ctx.own_model(policy), **({"prm": prm} if prm is not None else {})}
    outputs = {"policy": res.final_dir, **_export(ctx, res.final_dir, stage.dir(ctx.run) / "policy.gguf")}
    return cfg, inputs, outputs, figures


def _tcg_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    from o1code.pipeline.tcg import run_tcg_eval

    c = ctx.config
    d = stage.dir(ctx.run)
    outputs: dict[str, Path] = {}
    configs: dict[str, Any] = {}
    spec = c.tcg
    if c.tcg == "train":
        from o1code.training.tcg import train_tcg

        tr = TCGTrainConfig(**{"model": c.model, **c.table("tcg_train"), "out_dir": str(d / "train"), "split": "train",
                               "limit": c.train_limit, "seed": c.seed, "show_example": True})
        res = train_tcg(tr)
        outputs["tcg"] = res.final_dir
        configs["train"] = asdict(tr)
        spec = f"hf:{res.final_dir}"
    ev = TCGEvalConfig(**{**c.table("tcg_eval"), "model": spec, "split": c.eval_split, "limit": c.eval_limit,
                          "run_dir": str(d / "eval")})
    summary = run_tcg_eval(ev, generator=ctx.generator(stage.key, spec), progress=ctx.progress)
    configs["eval"] = asdict(ev)
    outputs["tcg_results"] = d / "eval" / "results.jsonl"
    figures = {"spec": spec, **{k: v for k, v in summary.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    return configs, {}, outputs, figures


def _run_stage(ctx: _Context, stage: Stage) -> tuple[Any, dict, dict, dict]:
    i = stage.iteration
    if stage.name == "tcg":
        return _tcg_stage(ctx, stage)
    if stage.name == "baseline":
        return _eval_stage(ctx, stage, ctx.policy(-1), None)
    if stage.name == "eval":
        return _eval_stage(ctx, stage, ctx.player(i), ctx.prm(i))
    if stage.name == "collect":
        return _collect_stage(ctx, stage)
    if stage.name == "sft":
        return _sft_stage(ctx, stage)
    if stage.name == "prm":
        return _prm_stage(ctx, stage)
    if stage.name == "rl":
        return _rl_stage(ctx, stage)
    raise PipelineError(f"unknown stage {stage.name!r}")


# ---------------------------------------------------------------- the run
@dataclass
class SelfPlayResult:
    """What `run_selfplay` finished: the manifests by stage key (``I/NAME``), and the report's path."""

    manifests: dict[str, dict[str, Any]]
    report: Path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def redo_from(config: SelfPlayConfig, text: str) -> list[str]:
    """Delete stage `text` (``I/NAME`` or ``NAME``) and every stage after it; returns their keys."""
    run = Path(config.run_dir)
    stages = plan(config)
    start = find_stage(stages, text)
    removed = []
    for s in stages[start:]:
        if s.dir(run).exists():
            shutil.rmtree(s.dir(run))
            removed.append(s.key)
    for d in run.glob("iter-*"):  # iterations past the plan (a run that had more)
        if d.is_dir() and int(d.name.split("-")[1]) > config.iterations:
            shutil.rmtree(d)
    log.info("selfplay: redoing from %s (removed %s)", stages[start].key, ", ".join(removed) or "nothing")
    return removed


class StageClock:
    """The seconds a stage has run, summed over every attempt: a daemon thread rewrites
    ``STAGE/elapsed.json`` every `every` seconds, so an attempt killed with SIGKILL loses at most that
    much of its time, and the next attempt starts from what the file says."""

    FILE = "elapsed.json"

    def __init__(self, directory: Path, every: float = 30.0) -> None:
        self.path = directory / self.FILE
        self.before = float(json.loads(self.path.read_text())["seconds"]) if self.path.is_file() else 0.0
        self.every = every
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="selfplay-stage-clock")

    def seconds(self) -> float:
        """Seconds of the earlier attempts plus this one's so far."""
        return self.before + time.perf_counter() - self.started

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"seconds": round(self.seconds(), 1)}))

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self) -> "StageClock":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._write()


def run_selfplay(config: SelfPlayConfig, *, progress: bool = True, from_stage: str | None = None,
                 generators: GeneratorHook | None = None) -> SelfPlayResult:
    """Run (or resume) the self-play of `config`; returns every stage's manifest and the report's path.

    Finished stages are verified and skipped; the first unfinished one resumes from its own last
    commit point. `from_stage` (``I/NAME``) redoes that stage and all after it. `generators` may
    replace the model a stage samples from (tests script the search's policy with it). Raises
    `PipelineError` for bad settings, a run directory holding other settings, or a finished stage
    whose outputs changed."""
    run = Path(config.run_dir)
    pinned = asdict(config)
    try:
        pin_config(run, pinned, ignore=UNPINNED)
    except RunDirError as exc:  # name the field, one line
        raise PipelineError(str(exc)) from None
    if from_stage:
        redo_from(config, from_stage)
    stages = plan(config)
    ctx = _Context(config, run, {}, generators, progress)
    t0 = time.perf_counter()
    ran: list[float] = []
    for n, stage in enumerate(stages, 1):
        manifest = read_manifest(run, stage)
        if manifest is not None:
            ctx.manifests[stage.key] = manifest
            continue
        left = len(stages) - n + 1
        eta = f", about {_clock(sum(ran) / len(ran) * left)} left at this pace" if ran else ""
        log.info("selfplay: stage %d/%d %s starts (%s so far%s)", n, len(stages), stage.key,
                 _clock(time.perf_counter() - t0), eta)
        with StageClock(stage.dir(run)) as clock:  # wall time over every attempt at this stage
            cfg, inputs, outputs, figures = _run_stage(ctx, stage)
        seconds = clock.seconds()
        ran.append(seconds)
        ctx.manifests[stage.key] = _finish(run, stage, cfg, inputs, outputs, figures, seconds)
        _return_freed_memory()
        log.info("selfplay: stage %d/%d %s done in %s: %s", n, len(stages), stage.key, _clock(seconds),
                 _figure_line(figures))
        write_report(run, config, ctx.manifests)
    report = write_report(run, config, ctx.manifests)
    log.info("selfplay: all %d stages done; report in %s", len(stages), report)
    return SelfPlayResult(ctx.manifests, report)


def _return_freed_memory() -> None:
    """Hand the heap a finished stage freed back to the OS. glibc keeps freed pages mapped: after the real
    run's RL stage its process stayed at 12.5 GB resident through stages that need ~3 GB, and the next
    training stage would have started from there (peak 20.5 GB on a 24 GB machine). A no-op without glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _figure_line(figures: Mapping[str, Any]) -> str:
    shown = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(shown[:6]) or "-"


# ---------------------------------------------------------------- the report
def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def iteration_rows(config: SelfPlayConfig, manifests: Mapping[str, dict]) -> list[dict[str, Any]]:
    """One row per measured policy: ``label``, ``iteration``, each eval agent's Pass@1 (and MCTS's
    oracle pass@k), the PRM's held-out AUC and RL's train reward / rollouts' hidden-test pass rate."""
    rows = []
    points = [("0/baseline", "start", -1), ("0/eval", "after SFT", 0)]
    points += [(f"{i}/eval", f"iteration {i} (PRM + RL)", i) for i in range(1, config.iterations + 1)]
    for key, label, it in points:
        m = manifests.get(key)
        if m is None:
            continue
        f = m["figures"]
        row: dict[str, Any] = {"label": label, "iteration": it, "policy": f.get("policy"), "problems": f.get("problems")}
        for agent in config.eval_agents:
            row[agent] = f.get(f"{agent}_pass_at_1")
        row["mcts_oracle"] = f.get("mcts_oracle_pass_at_k")
        prm, rl = manifests.get(f"{it}/prm"), manifests.get(f"{it}/rl")
        row["prm_auc"] = prm["figures"].get("auc") if prm else None
        row["train_reward"] = rl["figures"].get("train_reward") if rl else None
        row["rollout_reward_pass"] = rl["figures"].get("reward_test_pass") if rl else None
        row["rollout_hidden_pass"] = rl["figures"].get("hidden_test_pass") if rl else None
        rows.append(row)
    return rows


def report_markdown(config: SelfPlayConfig, manifests: Mapping[str, dict]) -> str:
    """``report.md``: Pass@1 per iteration, the stage table (seconds, figures), the TCG figures."""
    c = config
    rows = iteration_rows(config, manifests)
    lines = [f"# Self-play run: {c.run_dir}", "",
             f"- starting policy `{c.model}`, {c.mode} mode, <= {c.max_steps} steps of <= {c.max_step_tokens} tokens; "
             f"{c.iterations} iteration(s) after SFT; seed {c.seed}",
             f"- data: MCTS ({c.rollouts} rollouts, {c.children} children) on the first {c.train_limit} {c.dataset} "
             f"train problems, labelled by their tests; RL reward tests: {c.tests}"
             f"{' + PRM per step' if c.prm_reward else ''}",
             f"- held out: the first {c.eval_limit} {c.dataset} {c.eval_split} problems; Pass@1 on all their tests, "
             f"which no search or selection sees (MCTS is rewarded by the visible test)", "",
             "## Held-out Pass@1 per iteration", ""]
    agents = list(c.eval_agents)
    head = ["policy", *[f"{a} Pass@1" for a in agents], "MCTS oracle pass@k", "PRM AUC", "RL train reward",
            "RL rollouts: reward-test / hidden-test pass"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], *[_pct(r[a]) for a in agents], _pct(r["mcts_oracle"]), _num(r["prm_auc"]),
                 _num(r["train_reward"]), f"{_pct(r['rollout_reward_pass'])} / {_pct(r['rollout_hidden_pass'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("(no evaluation finished yet)")
    n = next((r["problems"] for r in rows if r["problems"]), None)
    if n:
        lines += ["", f"Each Pass@1 is over {n} held-out problems: one problem is {100 / n:.1f} points."]
    lines += ["", "## Stages", "", "| stage | seconds | figures |", "|---|---|---|"]
    for s in plan(config):
        m = manifests.get(s.key)
        lines.append(f"| {s.key} | {m['seconds']:.0f} | {_figure_line(m['figures'])} |" if m else f"| {s.key} | - | pending |")
    tcg = manifests.get("0/tcg")
    if tcg:
        f = tcg["figures"]
        lines += ["", f"## TCG ({f.get('spec')}, {c.eval_split})", "",
                  f"output match {_pct(f.get('output_match'))}, input validity {_pct(f.get('input_validity'))}, "
                  f">= k tests {_pct(f.get('at_least_k'))}, samples caught beyond the visible test "
                  f"{_pct(f.get('samples_caught_beyond_visible'))}"]
    lines += ["", "Curves: `report.png`; per-iteration scalars: `tb/` (TensorBoard); each stage's outputs and "
              "`manifest.json` under `iter-I/STAGE/`.", ""]
    return "\n".join(lines)


def _plot(config: SelfPlayConfig, manifests: Mapping[str, dict], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        log.warning("no matplotlib: %s not drawn", path)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = iteration_rows(config, manifests)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = list(range(len(rows)))
    for agent in config.eval_agents:
        a.plot(x, [100 * r[agent] if r[agent] is not None else float("nan") for r in rows], marker="o", label=agent)
    a.set_xticks(x, [r["label"] for r in rows], fontsize=7, rotation=15)
    a.set_ylabel("Pass@1 (%)")
    a.set_title(f"held-out Pass@1 ({config.dataset} {config.eval_split}, first {config.eval_limit})", fontsize=9)
    a.legend(fontsize=7)
    done = [(s.key, manifests[s.key]["seconds"] / 60) for s in plan(config) if s.key in manifests]
    b.barh([k for k, _ in done][::-1], [v for _, v in done][::-1])
    b.set_xlabel("minutes")
    b.set_title("wall time per stage", fontsize=9)
    b.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tensorboard(config: SelfPlayConfig, manifests: Mapping[str, dict], directory: Path) -> None:
    """Rewrite ``tb/`` from the manifests (so a resumed run never logs a point twice)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    shutil.rmtree(directory, ignore_errors=True)
    writer = SummaryWriter(str(directory))
    try:
        for r in iteration_rows(config, manifests):
            step = r["iteration"] + 1  # 0: the starting policy, 1: after SFT, 1 + I: after iteration I
            for key in (*config.eval_agents, "mcts_oracle", "prm_auc", "train_reward", "rollout_reward_pass",
                        "rollout_hidden_pass"):
                if isinstance(r.get(key), (int, float)):
                    writer.add_scalar(f"selfplay/{key}", r[key], step)
        for key, m in manifests.items():
            writer.add_scalar(f"seconds/{key.replace('/', '_')}", m["seconds"], m["iteration"])
    finally:
        writer.close()


def write_report(run: Path, config: SelfPlayConfig, manifests: Mapping[str, dict]) -> Path:
    """Write ``report.md``, ``report.png`` and ``tb/`` from the finished stages' manifests."""
    path = run / "report.md"
    write_atomic(path, report_markdown(config, manifests))
    _plot(config, manifests, run / "report.png")
    _tensorboard(config, manifests, run / "tb")
    return path


def _on_disk(config: SelfPlayConfig, stage: Stage, run: Path) -> str:
    """What a started stage has committed so far: problems per results file, the newest checkpoint."""
    d = stage.dir(run)
    total = config.train_limit if stage.name == "collect" else config.eval_limit
    parts = [f"{r.parent.name}: {sum(1 for _ in r.open())} of {total} problems"
             for r in sorted(d.glob("*/results.jsonl"))]
    steps = [int(p.name[11:]) for p in d.glob("**/checkpoint-*") if p.name[11:].isdigit()]
    if steps:
        parts.append(f"checkpoint at step {max(steps)}")
    history = d / "checkpoint" / "history.json"  # PPO/GRPO's checkpoint
    if history.is_file():
        parts.append(f"{len(json.loads(history.read_text()))} updates checkpointed")
    if (d / StageClock.FILE).is_file():
        parts.append(f"{_clock(json.loads((d / StageClock.FILE).read_text())['seconds'])} spent")
    return ", ".join(parts) or "-"


def status(run_dir: str | Path) -> str:
    """The stage table of the run in `run_dir` (read from its config and manifests; nothing runs)."""
    run = Path(run_dir)
    path = run / "config.json"
    if not path.is_file():
        raise PipelineError(f"{run} holds no selfplay run (no config.json)")
    config = SelfPlayConfig(**json.loads(path.read_text()))
    manifests: dict[str, dict] = {}
    lines = ["| stage | state | seconds | figures |", "|---|---|---|---|"]
    for s in plan(config):
        try:
            m = read_manifest(run, s)
        except PipelineError as exc:
            lines.append(f"| {s.key} | CHANGED | - | {exc} |")
            continue
        if m is not None:
            manifests[s.key] = m
            lines.append(f"| {s.key} | done | {m['seconds']:.0f} | {_figure_line(m['figures'])} |")
        else:
            started = s.dir(run).exists()
            lines.append(f"| {s.key} | {'started' if started else 'pending'} | - | "
                         f"{_on_disk(config, s, run) if started else '-'} |")
    return report_markdown(config, manifests).split("## Stages")[0] + "## Stages\n\n" + "\n".join(lines) + "\n"


__all__ = ["EVAL_AGENTS", "GeneratorHook", "SelfPlayConfig", "SelfPlayResult", "Stage", "StageClock", "TABLES",
           "digest", "find_stage", "iteration_rows", "plan", "read_manifest", "redo_from", "report_markdown",
           "run_selfplay", "status", "write_report"]
