"""`CodeEnv`: a coding problem as a Gymnasium episode of reasoning steps, rewarded by executed tests."""

from __future__ import annotations

import functools
import logging
import string
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import gymnasium as gym
from gymnasium import spaces

from o1code.data import Problem, load_dataset
from o1code.data.formats import (
    action_type,
    build_prompt,
    build_prompt_prefix,
    check_mode,
    clean_step,
    describe_problem,
    extract_code,
    final_header,
    format_steps,
    has_code,
)
from o1code.data.prompts import check_prompt_style
from o1code.envs.errors import EnvError
from o1code.envs.records import EnvState, EvalInfo, Observation, StepInfo
from o1code.rewards import DatasetTests, OutcomeReward, PhiConfig, TestSource, VisibleTests
from o1code.rewards.process import (ProcessReward, StepRewardFn, StepRewardHook, as_process_reward, default_question,
                                    prefix_values)
from o1code.sandboxes import ExecutionResult, LocalSandbox, Sandbox, Verdict

log = logging.getLogger(__name__)

#: Characters an agent's action is sampled from: printable ASCII, which includes newline and tab.
ACTION_CHARSET = string.printable
#: Observation text may hold anything an agent wrote: every Unicode code point of the BMP except
#: surrogates (characters beyond it are replaced by U+FFFD on the way in, noted in `info`).
OBSERVATION_CHARSET = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


def _bmp_only(text: str) -> tuple[str, bool]:
    if all(ord(c) < 0x10000 and not 0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text, False
    return "".join(c if ord(c) < 0x10000 and not 0xD800 <= ord(c) <= 0xDFFF else "\ufffd" for c in text), True


class CodeEnv(gym.Env[Observation, str]):
    """A coding problem as an episode: each action is one reasoning step, the last one holds code.

    Registered as ``O1Code-MBPP-v0`` (mode ``pseudocode``), ``O1Code-MBPP-Vanilla-v0`` and
    ``O1Code-MBPP-Direct-v0``. The step format is the one in `o1code.data.formats`: an action is
    the text a model writes after the prompt's ``### Step k:`` header (a trailing ``<Step_End>``
    and anything after it are cut off).

    Observation (a `spaces.Dict`):
        ``prompt``: the exact text an LLM continues (instructions, examples, question, steps so
        far, the next step's header); ``problem``: the question as shown; ``steps``: the steps so
        far in prompt format; ``step``: the number of steps taken.

    Reward: 0 (or the process reward's value, also in ``info["process_reward"]``) for a step
    without code; for the step with code, the outcome of running it in the sandbox on the reward
    tests (`OutcomeReward`), or with `phi` set, ``phi(outcome, r_1..r_m)``: the paper's
    aggregation of the outcome with the process rewards of the episode's non-terminal steps
    (``info["outcome_reward"]``, ``info["process_rewards"]``, ``info["phi_alpha"]``). An episode
    ends (``terminated``) at the step with code, and is truncated after `max_steps` steps without
    code with reward `truncation_reward`.

    `info` (a `StepInfo`) after a terminal step holds ``verdict``, ``passed``, ``total``,
    ``tests`` (the reward tests), ``code``, ``message`` and ``eval`` (the dataset's own tests, an
    `EvalInfo` as a dict: ``verdict``, ``passed``, ``total``, ``all_passed``), which tells training
    reward and true correctness apart when the reward tests come from elsewhere. Every step's
    `info` has ``task_id``, ``step``, ``action_type`` (1, 2, 3 or None in pseudocode mode) and,
    when an action was altered, ``action_truncated`` / ``action_cut`` / ``action_replaced_chars``.

    Raises:
        EnvError: from `step` when the sandbox fails twice on infrastructure (`sandbox_error`):
        that is never a reward of 0.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        mode: str = "pseudocode",
        dataset: str = "mbpp",
        split: str = "test",
        sanitized: bool = False,
        task_ids: Sequence[str] | None = None,
        problems: Sequence[Problem] | None = None,
        max_steps: int | None = None,
        tests: str | TestSource = "visible",
        show_tests: str = "first",
        examples: bool | None = None,
        prompt_style: str = "fewshot",
        chat_template: str | None = None,
        reward: str = "pass_fraction",
        alpha: float = 0.0,
        tau_pass: float = 1.0,
        tau_fail: float = 0.0,
        truncation_reward: float = 0.0,
        process_reward: ProcessReward | StepRewardHook | None = None,
        phi: PhiConfig | Mapping[str, Any] | bool | None = None,
        sandbox: Sandbox | None = None,
        timeout_s: float = 4.0,
        max_action_chars: int = 8192,
        render_mode: str | None = None,
    ) -> None:
        """Create the environment.

        Args:
            mode: ``"pseudocode"``, ``"vanilla"`` or ``"direct"``.
            dataset, split, sanitized: The bundled problems to draw from (``"mbpp"`` or
                ``"humaneval"``, see `load_dataset`; ignored when `problems` is given).
            task_ids: Restrict to these task ids (e.g. ``["mbpp/11", "mbpp/12"]``).
            problems: Use these problems instead of MBPP.
            max_steps: Steps before truncation; default 8 (1 in direct mode).
            tests: The reward tests: ``"visible"`` (the tests shown with ``show_tests="first"``:
                MBPP's first assert, HumanEval's docstring examples), ``"tcg"`` (generated by
                `TestCaseGenerator` with the default model; ``"tcg:SPEC"`` for another model; it
                sees the reference and may fall back to the dataset tests only when every problem
                is from the train split), ``"dataset"`` (the judging tests themselves: an ORACLE
                reward, see `o1code.rewards.is_oracle`) or a `TestSource`. ``info["eval"]``
                always reports the dataset tests.
            show_tests: Tests shown in the prompt: ``"none"``, ``"first"`` (the visible tests) or
                ``"all"`` (the judging tests too).
            examples: Include the worked examples in the prompt (None: the prompt style's default,
                with for ``fewshot``, without for ``instruct``).
            prompt_style: ``"fewshot"`` (a raw continuation with worked examples) or ``"instruct"``
                (the model's chat template around an EvalPlus-style instruction; the steps continue
                inside the assistant turn). See `o1code.data.prompts`.
            chat_template: The ``instruct`` style's Jinja chat template (a GGUF's
                ``tokenizer.chat_template``, an HF tokenizer's; `o1code.models.chat_template_of`
                reads it off a generator); None: the default model's. Play the prompt with a raw
                generator (``chat_template=False``): the prompt is already rendered.
            reward, alpha, tau_pass, tau_fail: The outcome reward (see `OutcomeReward`).
            truncation_reward: Reward when `max_steps` pass without code.
            process_reward: Scores each non-terminal step (a PRM): a `ProcessReward`, or the old
                hook ``(problem, previous_steps, step) -> float``; None gives 0.
            phi: Reward the terminal step with `PhiConfig` aggregation of the outcome and the
                process rewards (True: the defaults; a dict: `PhiConfig` fields, e.g.
                ``{"t": 10, "gamma": 0.9}``); None (default): the outcome alone. Needs a
                `process_reward`. ``reset(options={"phi_t": t})`` advances alpha(t)'s `t`.
            sandbox: A shared sandbox (left open on `close`); None creates an owned one lazily.
            timeout_s: Time limit of one sandbox run.
            max_action_chars: Longer actions are truncated (``info["action_truncated"]``).
            render_mode: None or ``"ansi"``.
        """
        super().__init__()
        self.mode = check_mode(mode)
        if problems is None:
            problems = load_dataset(dataset, split, sanitized=sanitized)
        problems = list(problems)
        if task_ids is not None:
            by_id = {p.task_id: p for p in problems}
            missing = [t for t in task_ids if t not in by_id]
            if missing:
                raise EnvError(f"unknown task ids {missing[:5]} (not in the selected problems)")
            problems = [by_id[t] for t in task_ids]
        if not problems:
            raise EnvError("no problems to draw from")
        self.problems: list[Problem] = problems
        self._index = {p.task_id: i for i, p in enumerate(problems)}
        self.max_steps = max_steps if max_steps is not None else (1 if self.mode == "direct" else 8)
        if self.max_steps < 1 or (self.mode == "direct" and self.max_steps != 1):
            raise EnvError(f"max_steps must be >= 1 (exactly 1 in direct mode), got {self.max_steps}")
        if tests == "visible":
            tests = VisibleTests()
        elif tests == "dataset":
            tests = DatasetTests()
        elif isinstance(tests, str) and tests.partition(":")[0] == "tcg":
            from o1code.models import parse_spec
            from o1code.rewards.tcg import TCGConfig, TestCaseGenerator  # lazy: the model loads on first use

            # Off the train split the generator sees neither the reference nor the hidden tests.
            training = all(p.split == "train" for p in problems)
            cfg = TCGConfig(use_reference=training, fallback_to_dataset=training)
            # "tcg" uses the default model, "tcg:SPEC" any model spec, parsed now so that a bad one fails
            # here rather than at the first reward; the env's sandbox runs the reference.
            model = parse_spec(tests.partition(":")[2] or "default").text
            tests = TestCaseGenerator(model, sandbox=lambda: self.sandbox, config=cfg)
        elif isinstance(tests, str):
            raise EnvError(f"unknown tests {tests!r}: pass 'visible', 'dataset', 'tcg', 'tcg:MODEL' "
                           "or a TestSource object")
        self.test_source: TestSource = tests
        #: The reward tests' name ("visible", "dataset", "tcg" ...); "dataset" is an oracle reward.
        self.tests_name: str = getattr(tests, "name", type(tests).__name__)
        if render_mode not in (None, "ansi"):
            raise EnvError(f"unsupported render_mode {render_mode!r}; use 'ansi'")
        self.render_mode = render_mode
        self.show_tests = show_tests
        self.examples = examples
        self.prompt_style = check_prompt_style(prompt_style)
        self.chat_template = chat_template
        self.outcome = OutcomeReward(form=reward, alpha=alpha, tau_pass=tau_pass, tau_fail=tau_fail)
        self.truncation_reward = float(truncation_reward)
        question = functools.partial(default_question, mode=self.mode, show_tests=show_tests)
        self.process_reward: ProcessReward | None = as_process_reward(process_reward, StepRewardFn, question)
        self.phi: PhiConfig | None = PhiConfig.coerce(phi)
        if self.phi is not None and self.process_reward is None:
            raise EnvError("phi aggregates process rewards: it needs a process_reward")
        #: alpha(t)'s t for `phi` (``reset(options={"phi_t": t})`` sets it).
        self.phi_t: int = self.phi.t if self.phi is not None else 0
        self.timeout_s = timeout_s
        self.max_action_chars = max_action_chars
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._prefixes: dict[str, str] = {}
        # Tree search revisits the same terminal code; executing it once is enough.
        self._results: OrderedDict[tuple, ExecutionResult] = OrderedDict()

        longest_prefix = max(len(self._prefix(p)) for p in problems)
        step_room = max_action_chars + len(final_header(self.max_steps, self.mode)) + 32
        self.action_space = spaces.Text(max_length=max_action_chars, min_length=0, charset=ACTION_CHARSET)
        text = lambda n: spaces.Text(max_length=n, min_length=0, charset=OBSERVATION_CHARSET)  # noqa: E731
        self.observation_space = spaces.Dict(
            {
                # + the header of the step after the last (the prompt always ends with a header)
                "prompt": text(longest_prefix + (self.max_steps + 1) * step_room),
                "problem": text(max(len(describe_problem(p, show_tests)) for p in problems)),
                "steps": text(self.max_steps * step_room),
                "step": spaces.Discrete(self.max_steps + 1),
            }
        )
        self._problem: Problem = problems[0]
        self._steps: tuple[str, ...] = ()
        self._process_rewards: tuple[float, ...] = ()
        self._done = True
        self._last_info: StepInfo = {}

    # -- helpers -----------------------------------------------------------------------------

    def _prefix(self, problem: Problem) -> str:
        prefix = self._prefixes.get(problem.task_id)
        if prefix is None:
            prefix = build_prompt_prefix(problem, self.mode, self.show_tests, self.examples, self.prompt_style,
                                         self.chat_template)
            self._prefixes[problem.task_id] = prefix
        return prefix

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox that runs terminal code (created on first use when not given)."""
        if self._sandbox is None:
            self._sandbox = LocalSandbox(workers=1)
        return self._sandbox

    @property
    def problem(self) -> Problem:
        """The problem of the current episode."""
        return self._problem

    def _observation(self) -> Observation:
        return {
            "prompt": build_prompt(
                self._problem, self.mode, self._steps, self.max_steps, prefix=self._prefix(self._problem)
            ),
            "problem": describe_problem(self._problem, self.show_tests),
            "steps": format_steps(self._steps),
            "step": len(self._steps),
        }

    def _execute(self, code: str, tests: Sequence) -> ExecutionResult:
        key = (code, tuple(repr(t) for t in tests), self._problem.setup_code)
        result = self._results.get(key)
        if result is None:
            result = self.sandbox.run(code, list(tests), setup_code=self._problem.setup_code, timeout_s=self.timeout_s)
            if result.verdict is Verdict.SANDBOX_ERROR:
                raise EnvError(
                    f"sandbox infrastructure failed twice on {self._problem.task_id}: {result.message}"
                )
            self._results[key] = result
            if len(self._results) > 512:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        return result

    def _normalise_action(self, action: Any, info: StepInfo) -> str:
        if not isinstance(action, str):
            info["action_not_str"] = type(action).__name__
            action = "" if action is None else str(action)
        if len(action) > self.max_action_chars:
            info["action_truncated"] = len(action)
            action = action[: self.max_action_chars]
        action, replaced = _bmp_only(action)
        if replaced:
            info["action_replaced_chars"] = True
        step, was_cut = clean_step(action)
        if was_cut:
            info["action_cut"] = True
        return step

    # -- gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, StepInfo]:
        """Start an episode. ``options={"task_id": "mbpp/11"}`` picks the problem; otherwise it is
        drawn with the env's RNG (deterministic under a seed). ``options={"phi_t": t}`` sets
        alpha(t)'s `t` for `phi` (kept for later episodes).

        Returns:
            ``(observation, info)``: the first `Observation` (no steps) and an info with
            ``task_id`` and ``step`` (0).
        """
        super().reset(seed=seed)
        if (options or {}).get("phi_t") is not None:
            self.phi_t = int(options["phi_t"])
            if self.phi_t < 0:
                raise EnvError(f"phi_t must be >= 0, got {self.phi_t}")
        task_id = (options or {}).get("task_id")
        if task_id is not None:
            if task_id not in self._index:
                raise EnvError(f"unknown task_id {task_id!r} for this environment")
            self._problem = self.problems[self._index[task_id]]
        else:
            self._problem = self.problems[int(self.np_random.integers(len(self.problems)))]
        self._steps = ()
        self._process_rewards = ()
        self._done = False
        self._last_info = {"task_id": self._problem.task_id, "step": 0}
        return self._observation(), StepInfo(self._last_info)

    def step(self, action: str) -> tuple[Observation, float, bool, bool, StepInfo]:
        """Take one reasoning step.

        Returns:
            ``(observation, reward, terminated, truncated, info)``: the `Observation` after the
            step, its reward (a float), whether the step held code (terminated), whether the step
            limit ended the episode without code (truncated), and the `StepInfo` described on the
            class.
        """
        if self._done:
            raise EnvError("step() called on a finished episode; call reset() first")
        info: StepInfo = {"task_id": self._problem.task_id}
        text = body = self._normalise_action(action, info)
        k = len(self._steps) + 1
        forced_last = self.mode == "direct" or k >= self.max_steps
        if forced_last:
            # The prompt's header already carried the title; keep it so the trace reads back whole.
            title = final_header(k, self.mode)[len(f"### Step {k}:") :]
            if not text.lstrip().startswith(title.strip()):  # a replayed trace already has it
                text = title + text.lstrip("\n")
        if self.mode == "pseudocode":
            info["action_type"] = 3 if has_code(text) else action_type(text)
        self._steps = self._steps + (text,)
        info["step"] = len(self._steps)

        terminated = truncated = False
        reward = 0.0
        code = extract_code(text, self._problem.entry_point)
        if code is None and self.mode == "direct":  # direct mode: an unfenced action is the code
            code = extract_code(body, self._problem.entry_point, whole_if_unfenced=True)
        if code is not None:
            terminated = True
            reward = self._grade(code, info)
        elif forced_last:
            truncated = True
            reward = self.truncation_reward
            info["reason"] = "no code by the last step"
        elif self.process_reward is not None:
            (reward,) = prefix_values(self.process_reward, [(self._problem, self._steps)])
            info["process_reward"] = reward
            if self.phi is not None:  # kept for phi's aggregation at the terminal step
                self._process_rewards = self._previous_process_rewards() + (reward,)
        self._done = terminated or truncated
        self._last_info = info
        return self._observation(), float(reward), terminated, truncated, info

    def _previous_process_rewards(self) -> tuple[float, ...]:
        """The process rewards of the steps before the last one; those a restored state lacks are
        recomputed in one batch."""
        have, need = self._process_rewards, len(self._steps) - 1
        if len(have) < need:
            missing = [(self._problem, self._steps[: j + 1]) for j in range(len(have), need)]
            have = have + tuple(prefix_values(self.process_reward, missing))
        return have[:need]

    def _grade(self, code: str, info: StepInfo) -> float:
        tests = list(self.test_source.tests_for(self._problem))
        result = self._execute(code, tests)
        info.update(
            code=code,
            tests=[t if isinstance(t, str) else t.as_assert() for t in tests],
            verdict=result.verdict.value,
            passed=result.passed,
            total=result.total,
            message=result.message,
        )
        dataset_tests = list(self._problem.tests)
        truth = result if tests == dataset_tests else self._execute(code, dataset_tests)
        info["eval"] = EvalInfo.from_result(truth).to_dict()
        outcome = self.outcome(result)
        if self.phi is None:
            return outcome
        process = list(self._previous_process_rewards())
        info.update(outcome_reward=outcome, process_rewards=process, phi_alpha=self.phi.alpha(self.phi_t))
        return self.phi(outcome, process, t=self.phi_t)

    def render(self) -> str | None:
        """With ``render_mode="ansi"``, a text view of the episode: problem, steps, verdicts."""
        if self.render_mode != "ansi":
            return None
        lines = [f"== {self._problem.task_id} ({self.mode}) ==", describe_problem(self._problem, self.show_tests), ""]
        for i, s in enumerate(self._steps, 1):
            lines.append(f"--- step {i} ---")
            lines.append(s.strip("\n"))
        info = self._last_info
        ev = EvalInfo.from_info(info)
        if "verdict" in info and ev is not None:
            lines.append(
                f"--- verdict: {info['verdict']} ({info['passed']}/{info['total']} reward tests); "
                f"dataset tests: {ev.verdict} ({ev.passed}/{ev.total}) ---"
            )
        elif info.get("reason"):
            lines.append(f"--- truncated: {info['reason']} ---")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Close the owned sandbox (a shared one stays open)."""
        if self._owns_sandbox and self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        super().close()

    # -- tree search -------------------------------------------------------------------------

    def get_state(self) -> EnvState:
        """An immutable snapshot of the episode (task and steps so far); cheap to keep many."""
        return EnvState(self._problem.task_id, self._steps, self._done, self._process_rewards)

    def set_state(self, state: EnvState) -> None:
        """Restore a snapshot from `get_state` (of an env over the same problems)."""
        if state.task_id not in self._index:
            raise EnvError(f"state of unknown task {state.task_id!r}")
        if len(state.steps) > self.max_steps:
            raise EnvError(f"state has {len(state.steps)} steps, more than max_steps={self.max_steps}")
        self._problem = self.problems[self._index[state.task_id]]
        self._steps = tuple(state.steps)
        self._process_rewards = tuple(state.process_rewards)
        self._done = state.done
        self._last_info = {"task_id": state.task_id, "step": len(state.steps)}

    def observation(self) -> Observation:
        """The `Observation` of the current state (after `set_state`, say)."""
        return self._observation()
