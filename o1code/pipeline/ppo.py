"""The RL stage (o1-Coder Algorithm 1, step 5): PPO/GRPO of a policy in `CodeEnv` on train problems,
with a held-out Pass@1 curve.

`run_ppo` assembles `o1code.agents.ppo.train`'s inputs from one `PPORunConfig`:

- the **policy**: a `Policy` (causal LM + value head, LoRA by default) on ``model``: any model spec,
  or the ``RUN/final`` of ``o1code sft`` (then the KL reference is the SFT model: the LoRA adapters
  disabled), or a saved `Policy` directory; prompts are raw text (``chat_template=False``), as the
  step generators of ``o1code eval`` and the SFT stage use them;
- the **envs**: `CodeEnv` on problems of the **train** split only (prompts as ``o1code eval`` builds
  them, worked examples included), rewarded by the *reward tests*
  (``tests``: ``visible``, the tests shown in the prompt; ``tcg[:MODEL]``, generated ones, shared by
  every env; ``dataset``: all of a train problem's tests, legitimate training signal on train problems
  since evaluation is on another split). The judging tests are only logged (``hidden_test_pass``);
- the **task list**: the train problems (known-bad ones excluded), shuffled once by ``seed``, cycled;
- the **held-out evaluation**: greedy Pass@1 of the current policy on the hidden (all) tests of the first
  ``eval_limit`` problems of ``eval_split``, through `run_eval` (agent ``policy``, the same decoding
  settings every time), before training and every ``eval_every`` updates; each is a resumable eval run
  directory ``RUN/evals/update-NNNN``.

Layout of the run directory (``--run-dir R``)::

    R/config.json    the PPO hyperparameters (pinned by `o1code.agents.ppo.train`)
    R/run.json       the rest of the `PPORunConfig` (model, problems, env, evaluation; pinned here)
    R/checkpoint/    the last checkpoint (a rerun resumes after it)   R/tb/  TensorBoard scalars
    R/final/         the trained policy: ``Policy.load``, ``o1code eval --agent policy --model R/final``
    R/adapter/       (LoRA) its adapter alone, as `o1code sft` writes it: ``--model BASE+lora:R/adapter``
                     plays it on llama.cpp (adapter.gguf, when the base is a GGUF) or transformers
    R/evals/         one eval run per evaluation point
    R/history.json   one row of scalars per update
    R/curves.png     reward; reward-test vs hidden-test pass rate of the rollouts; KL; held-out Pass@1
    R/summary.md     settings, the evaluation table and the first/last training figures (also summary.json)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from o1code.data import Problem, load_dataset
from o1code.agents.ppo_config import PPOConfig
from o1code.data.formats import MODES, SHOW_TESTS
from o1code.data.prompts import PROMPT_STYLES
from o1code.models import chat_template_of
from o1code.pipeline.errors import PipelineError
from o1code.pipeline.evaluate import EvalConfig, is_saved_policy, load_prm, run_eval, select_problems
from o1code.pipeline.ppo_report import plot_curves, summary_markdown
from o1code.runs import config_changes, read_jsonl, write_atomic

log = logging.getLogger(__name__)

REWARD_FORMS = ("binary", "pass_fraction")
#: The fields of `PPOConfig`, which `PPORunConfig` extends (`train` pins them in ``RUN/config.json``).
PPO_FIELDS = tuple(f.name for f in dataclasses.fields(PPOConfig))
#: PPORunConfig fields a resumed run may change (the PPO fields `train` lets change are its own business).
RUN_UNPINNED = ("run_dir", "device", "ray", "rollout_workers")


@dataclass
class PPORunConfig(PPOConfig):
    """Every setting of ``o1code ppo``: the fields of `o1code.agents.ppo_config.PPOConfig` (a torch-free
    module, so that building the command line imports no torch; documented there), then the run's.

    Attributes:
        learning_rate: AdamW step size (LoRA takes larger steps than full fine-tuning: 5e-5 here, 1e-5 in PPOConfig).
        eval_every: Held-out evaluation every this many updates (0: none; with eval_limit > 0 also before training).
        model: The starting policy: a model spec (default, hf:ID_OR_PATH ...), the RUN/final of `o1code sft`,
            or a saved Policy directory.
        run_dir: Output directory (see the module docstring); re-using it resumes.
        device: Where the policy runs (None: cuda when available).
        dtype: Its precision (float32 by default).
        lora: Train LoRA adapters (the reference is then the adapters disabled); False trains every weight
            against a frozen copy.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA settings (targets None: all linear layers but the head).
        chat_template: Wrap prompts in the tokenizer's chat template (False: raw prompts, as o1code eval and sft).
        dataset, sanitized: Benchmark whose train split the policy trains on.
        train_limit: Train on the first N problems of the train split (None: all).
        train_tasks: Train on these task ids instead.
        mode: Reasoning format (pseudocode, vanilla, direct).
        max_steps: Steps per episode (direct: 1).
        show_tests: Tests shown in the prompt (none, first, all).
        prompt_style: fewshot (None) or instruct (the policy's chat template in the env's prompt, `o1code.data.prompts`).
        tests: Reward tests: visible, tcg[:MODEL] or dataset (all tests of a train problem).
        reward: binary (1 when every reward test passes, else 0) or pass_fraction.
        alpha: pass_fraction: weight of compiling in the reward.
        truncation_reward: Reward of an episode that ends without code.
        timeout_s: Sandbox limit of one run of a solution's tests, in seconds.
        eval_split: Held-out split of the evaluation (validation, or test for a final figure).
        eval_limit: Evaluate on the first N problems of eval_split (0: no evaluation).
        eval_max_step_tokens: Token limit of a step in evaluation (None: max_step_tokens).
        ray, rollout_workers: Draw the rollouts on this many (None: 2) Ray workers of llama.cpp: local, auto or an
            address (`o1code.distributed.rollout`; unpinned: the samples do not depend on where they are drawn).
        prm: A trained process reward model (``o1code prm train``'s RUN/final): every step that is not the
            last is rewarded with its value (the paper's process reward); None: outcome reward only.
    """

    # -- PPOConfig's fields whose default differs here
    learning_rate: float = 5e-5
    eval_every: int = 5
    # -- the run's
    model: str = "default"
    run_dir: str = "runs/ppo"
    device: str | None = None
    dtype: str | None = None
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    chat_template: bool = False
    dataset: str = "mbpp"
    sanitized: bool = False
    train_limit: int | None = None
    train_tasks: list[str] | None = None
    mode: str = "pseudocode"
    max_steps: int = 4
    show_tests: str = "first"
    prompt_style: str | None = None  # None: fewshot (run.json files from before the key still resume)
    tests: str = "visible"
    reward: str = "binary"
    alpha: float = 0.0
    truncation_reward: float = 0.0
    timeout_s: float = 4.0
    eval_split: str = "validation"
    eval_limit: int = 20
    eval_max_step_tokens: int | None = None
    prm: str | None = None
    ray: str | None = None
    rollout_workers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise PipelineError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.show_tests not in SHOW_TESTS:
            raise PipelineError(f"unknown show_tests {self.show_tests!r}; choose one of {', '.join(SHOW_TESTS)}")
        if self.tests not in ("visible", "dataset") and not (self.tests == "tcg" or self.tests.startswith("tcg:")):
            raise PipelineError(f"unknown tests {self.tests!r}; choose visible, tcg, tcg:MODEL or dataset")
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise PipelineError(f"unknown prompt_style {self.prompt_style!r}; choose {' or '.join(PROMPT_STYLES)}")
        if self.prompt_style == "instruct" and self.chat_template:  # the template would be applied twice
            raise PipelineError("prompt_style instruct renders the chat template into the prompt: leave chat_template off")
        if self.reward not in REWARD_FORMS:
            raise PipelineError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARD_FORMS)}")
        if self.eval_split == "train":
            raise PipelineError("eval_split must be held out (validation or test), not the train split")
        if self.max_steps < 1 or self.eval_limit < 0 or (self.train_limit is not None and self.train_limit < 1):
            raise PipelineError("max_steps must be >= 1, eval_limit >= 0 and train_limit >= 1")
        if self.train_limit is not None and self.train_tasks:
            raise PipelineError("give either train_limit or train_tasks, not both")
        if self.rollout_workers is not None and (self.rollout_workers < 1 or not self.ray):
            raise PipelineError("rollout_workers counts Ray workers: give ray (local, auto or an address) and >= 1")
        if self.mode == "direct":
            self.max_steps = 1

    def ppo_config(self) -> Any:
        """The `PPOConfig` part of these settings."""
        return PPOConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PPOConfig)})

    def run_settings(self) -> dict[str, Any]:
        """The settings that are not `PPOConfig`'s (pinned in ``RUN/run.json``; `train` pins the others)."""
        return {k: v for k, v in asdict(self).items() if k not in PPO_FIELDS}


@dataclass
class PPORunResult:
    """What `run_ppo` did: ``final_dir`` (the trained `Policy`), ``history`` (one dict of scalars per update),
    ``evals`` (one dict per evaluation point: update, pass_at_1, reward_pass_rate, problems), ``summary``
    (the markdown written to ``RUN/summary.md``) and the path of ``RUN/curves.png`` (None without matplotlib)."""

    final_dir: Path
    history: list[dict[str, float]]
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    curves: Path | None = None


# ---------------------------------------------------------------- parts
def train_problems(config: PPORunConfig) -> list[Problem]:
    """The problems the policy trains on: the train split (known-bad tasks dropped), then ``train_tasks``
    or the first ``train_limit``. Raises `PipelineError` for unknown task ids or none left."""
    problems = [p for p in load_dataset(config.dataset, "train", sanitized=config.sanitized) if not p.known_bad]
    if config.train_tasks:
        by_id = {p.task_id: p for p in problems}
        ids = [t if "/" in t else f"{config.dataset}/{t}" for t in config.train_tasks]
        missing = [t for t in ids if t not in by_id]
        if missing:
            raise PipelineError(f"train_tasks not in the train split: {', '.join(missing[:5])}")
        problems = [by_id[t] for t in ids]
    elif config.train_limit:
        problems = problems[: config.train_limit]
    if not problems:
        raise PipelineError(f"no train problems in {config.dataset}")
    assert all(p.split == "train" for p in problems)  # RL never sees a held-out problem
    return problems


def build_policy(config: PPORunConfig) -> Any:
    """The starting `Policy`: ``Policy.load`` for a saved Policy directory without merged weights (the
    RUN/final of an earlier ppo run), else a new one on the ``model`` spec (an SFT output directory
    included) with the run's LoRA, chat-template, device and dtype settings."""
    from o1code.models.policy import Policy, PolicyConfig

    if is_saved_policy(config.model):
        path = config.model[3:] if config.model.startswith("hf:") else config.model
        return Policy.load(path, device=config.device, chat_template=config.chat_template)
    return Policy(PolicyConfig(model=config.model, lora=config.lora, lora_r=config.lora_r,
                               lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                               lora_target_modules=config.lora_targets, chat_template=config.chat_template,
                               device=config.device, dtype=config.dtype))


def reward_tests(config: PPORunConfig, sandbox: Any) -> Any:
    """What `CodeEnv` takes as ``tests``: the name for visible/dataset tests; for ``tcg[:MODEL]`` one
    `TestCaseGenerator` (on train problems: with the reference, falling back to the dataset tests)
    shared by every env, so its model loads once."""
    if not config.tests.startswith("tcg"):
        return config.tests
    from o1code.rewards.tcg import TCGConfig, TestCaseGenerator

    return TestCaseGenerator(config.tests[4:] or "default", sandbox=lambda: sandbox,
                             config=TCGConfig(use_reference=True, fallback_to_dataset=True))


class HeldOutEval:
    """The ``evaluate`` callable of `o1code.agents.ppo.train`: greedy Pass@1 of the policy on the hidden
    tests of the first ``eval_limit`` problems of ``eval_split``, written to ``RUN/evals/update-NNNN``.

    `train` calls it after updates ``eval_every``, ``2 * eval_every`` ...; `done` (the updates already
    finished when the run resumed) tells it which update the first call follows."""

    def __init__(self, config: PPORunConfig, run_dir: Path, sandbox: Any, done: int = 0) -> None:
        self.config = config
        self.root = run_dir / "evals"
        self.sandbox = sandbox
        every = max(config.eval_every, 1)
        self.update = done - done % every  # the last evaluation point at or before `done`

    def eval_config(self, update: int) -> EvalConfig:
        """The evaluation run of the policy after `update` updates (same settings every time)."""
        c = self.config
        return EvalConfig(agent="policy", mode=c.mode, model=f"ppo:{Path(c.run_dir).name}@{update}", dataset=c.dataset,
                          split=c.eval_split, sanitized=c.sanitized, limit=c.eval_limit, seed=c.seed,
                          run_dir=str(self.root / f"update-{update:04d}"), max_steps=c.max_steps, tests="visible",
                          show_tests=c.show_tests, prompt_style=c.prompt_style, timeout_s=c.timeout_s,
                          max_step_tokens=c.eval_max_step_tokens or c.max_step_tokens)

    def run(self, policy: Any, update: int) -> dict[str, float]:
        """Evaluate `policy` as the policy after `update` updates; returns ``pass_at_1`` and
        ``reward_pass_rate`` (a finished evaluation is read back, not run again)."""
        ev = self.eval_config(update)
        done = {r["task_id"] for r in read_jsonl(Path(ev.run_dir) / "results.jsonl")}
        generator = None
        if not {p.task_id for p in select_problems(ev)} <= done:
            policy.eval()
            generator = policy.to_generator()
        summary = run_eval(ev, generator=generator, progress=False, sandbox=self.sandbox)
        del generator
        log.info("held-out Pass@1 after %d updates: %.3f (%d %s problems)", update, summary["pass_at_1"],
                 summary["counted"], self.config.eval_split)
        return {"pass_at_1": summary["pass_at_1"], "reward_pass_rate": summary["reward_pass_rate"]}

    def __call__(self, policy: Any) -> dict[str, float]:
        self.update += self.config.eval_every
        return self.run(policy, self.update)

    def collected(self) -> list[dict[str, Any]]:
        """Every finished evaluation point, in update order: update, pass_at_1 (its 95% CI: pass_at_1_ci),
        reward_pass_rate, problems, run_dir (the `o1code eval` run directory, for `o1code compare`)."""
        out = []
        for d in sorted(self.root.glob("update-*")):
            s = d / "summary.json"
            if s.is_file():
                (summary,) = json.loads(s.read_text())
                out.append({"update": int(d.name.split("-")[1]), "pass_at_1": summary["pass_at_1"],
                            "pass_at_1_ci": summary.get("pass_at_1_ci"), "run_dir": str(d),
                            "reward_pass_rate": summary["reward_pass_rate"], "problems": summary["counted"]})
        return out


def _pin_run(run: Path, config: PPORunConfig) -> None:
    path = run / "run.json"
    settings = config.run_settings()
    if path.is_file():
        changed = config_changes(json.loads(path.read_text()), settings, RUN_UNPINNED)
        if changed:
            raise PipelineError(f"{run} holds a run with other settings ({'; '.join(changed)}); resuming would mix "
                                "results: use another --run-dir, or the same settings")
    run.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(settings, indent=2))


def _updates_done(run: Path) -> int:
    path = run / "checkpoint" / "history.json"
    return len(json.loads(path.read_text())) if path.is_file() else 0


# ---------------------------------------------------------------- the stage
def run_ppo(config: PPORunConfig, progress: bool = True, policy: Any = None, sandbox: Any = None) -> PPORunResult:
    """Run (or resume) the RL stage of `config` and write its report; returns a `PPORunResult`.

    `policy` replaces the one `build_policy` would make; `sandbox` (default: a `LocalSandbox` of one
    worker, started before the model loads so that a machine that cannot confine code refuses at once)
    runs every episode's and evaluation's code. Raises `PipelineError` for bad settings or a run
    directory holding other settings."""
    from o1code.agents.ppo import train
    from o1code.envs import CodeEnv
    from o1code.sandboxes import LocalSandbox

    t0 = time.perf_counter()
    engine = None
    ppo = config.ppo_config()
    run = Path(config.run_dir)
    problems = train_problems(config)
    _pin_run(run, config)
    own_sandbox = sandbox is None
    sandbox = sandbox if sandbox is not None else LocalSandbox(workers=1)
    try:
        tests = reward_tests(config, sandbox)
        prm = load_prm(config.prm) if config.prm else None  # one model shared by every env

        def make_env() -> CodeEnv:
            return CodeEnv(mode=config.mode, problems=problems, max_steps=config.max_steps, tests=tests,
                           show_tests=config.show_tests, reward=config.reward,
                           alpha=config.alpha, truncation_reward=config.truncation_reward, sandbox=sandbox,
                           timeout_s=config.timeout_s, process_reward=prm,
                           prompt_style=config.prompt_style or "fewshot", chat_template=chat_template_of(policy))

        task_ids = [p.task_id for p in problems]
        random.Random(config.seed).shuffle(task_ids)
        done = _updates_done(run)
        for stale in (run / "evals").glob("update-*"):  # evaluations of updates the resume redoes
            if int(stale.name.split("-")[1]) > done:
                shutil.rmtree(stale)
        evaluator = HeldOutEval(config, run, sandbox, done) if config.eval_limit and config.eval_every else None
        policy = policy if policy is not None else build_policy(config)
        log.info("%s on %d train problems (%s reward tests), policy %s", config.algo, len(problems), config.tests,
                 config.model)
        if evaluator is not None and done == 0:
            evaluator.run(policy, 0)  # the starting policy's Pass@1
        if config.ray:
            from o1code.distributed.rollout import RayRolloutEngine
            engine = RayRolloutEngine.for_policy(policy, config.engine, workers=config.rollout_workers or 2,
                                                 prompts_per_call=config.prompts_per_call, address=config.ray)
        result = train(policy, make_env, ppo, run, task_ids=task_ids, evaluate=evaluator, progress=progress,
                       engine=engine)
    finally:
        if engine is not None:
            engine.close()
        if own_sandbox:
            sandbox.close()
    if config.lora and result.final_dir is not None:
        from o1code.training.common import save_adapter

        save_adapter(policy.model, policy.config.model, run / "adapter")  # the base its adapters sit on
    evals = evaluator.collected() if evaluator is not None else []
    curves = plot_curves(result.history, evals, run / "curves.png")
    seconds = time.perf_counter() - t0
    final = result.final_dir or run / "final"
    text = summary_markdown(config, result.history, evals, final, seconds)
    write_atomic(run / "summary.md", text)
    write_atomic(run / "summary.json", json.dumps({"final_dir": str(final), "evals": evals,
                                                   "updates": len(result.history),
                                                   "last": result.history[-1] if result.history else None},
                                                  indent=2))
    return PPORunResult(final_dir=final, history=result.history, evals=evals, summary=text, curves=curves)


__all__ = ["HeldOutEval", "PPORunConfig", "PPORunResult", "build_policy", "plot_curves", "reward_tests", "run_ppo",
           "summary_markdown", "train_problems"]
