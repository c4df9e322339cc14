"""Self-play's stages: what each stage of `plan` runs (TCG, evaluation, collection, SFT, PRM, RL), its
config built from the shared settings and its table, and its inputs, outputs and figures."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, run_eval
from o1code.pipeline.ppo import PPORunConfig
from o1code.pipeline.ppo_report import mean_of
from o1code.pipeline.prm import PRMCollectConfig
from o1code.pipeline.selfplay.config import SelfPlayConfig, Stage
from o1code.pipeline.tcg import TCGEvalConfig
from o1code.runs import read_jsonl, write_jsonl
from o1code.training.prm import PRMTrainConfig
from o1code.training.sft import PolicySFTConfig
from o1code.training.tcg import TCGTrainConfig

log = logging.getLogger(__name__)

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

    def gguf_base(self, iteration: int) -> str:
        """The policy after `iteration` as the GGUF base of an RL stage on llama.cpp rollout workers
        (``gguf:PATH``: the export its stage wrote, which the workers run); `PipelineError` when none was."""
        player = self.player(iteration)
        if not player.startswith("llamacpp:"):
            raise PipelineError(f"rollout_workers: RL trains on the GGUF its llama.cpp workers run, and the policy "
                                f"of iteration {iteration} has no GGUF export (see the log of its stage); rerun "
                                "without rollout_workers (RL samples in this process)")
        return "gguf:" + player.split(":", 1)[1]

    def own_model(self, spec: str) -> dict[str, Path]:
        """``{"policy": path}`` when `spec` is a model this run trained (an input worth hashing), else {}."""
        path = Path(spec.split(":", 1)[1] if spec.startswith(("hf:", "llamacpp:", "gguf:")) else spec)
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
                           "tests": "visible", "show_tests": c.show_tests, "prompt_style": c.prompt_style,
                           "max_step_tokens": c.max_step_tokens,
                           "rollouts": c.rollouts, "children": c.children,
                           "prm": str(prm) if guided else None, "value_weight": c.prm_value_weight if guided else None,
                           "ray": c.ray, **c.table("eval")})
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
                              "show_tests": c.show_tests, "prompt_style": c.prompt_style, "max_steps": c.max_steps,
                              "max_step_tokens": c.max_step_tokens, "rollouts": c.rollouts, "children": c.children,
                              "prm": str(prm) if guided else None,
                              "value_weight": c.prm_value_weight if guided else None, "ray": c.ray,
                              **c.table("collect")})
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
                             "dataset": c.dataset, "mode": c.mode, "show_tests": c.show_tests,
                             "prompt_style": c.prompt_style, "seed": c.seed,
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
    # On llama.cpp rollout workers, RL trains a fresh LoRA on the previous policy's GGUF export (what the
    # workers run, trained tensors in Q8_0); in this process, on its float weights.
    policy = ctx.gguf_base(i - 1) if c.rollout_workers else ctx.policy(i - 1)
    prm = ctx.prm(i)
    tests = f"tcg:{ctx.tcg_spec()}" if c.tests == "tcg" else c.tests
    cfg = PPORunConfig(**{"eval_limit": 0, "max_step_tokens": c.max_step_tokens, "dtype": c.dtype, **c.table("rl"),
                          "model": policy, "run_dir": str(stage.dir(ctx.run)), "seed": c.seed + i,
                          "device": c.device, "dataset": c.dataset, "train_limit": c.train_limit, "mode": c.mode,
                          "max_steps": c.max_steps, "show_tests": c.show_tests, "prompt_style": c.prompt_style,
                          "tests": tests, "ray": c.ray if c.rollout_workers else None,
                          "rollout_workers": c.rollout_workers,
                          "prm": str(prm) if c.prm_reward and prm is not None else None})
    res = run_ppo(cfg, progress=ctx.progress)

    def mean(key: str) -> float | None:  # over the last 3 updates, as the PPO summary's last column
        value = mean_of(res.history[-3:], key)
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
