"""The synthetic environment: the experience model, grounded by replay-buffer retrieval, answers the
agent's actions (paper Eq. 4), so policies train without touching the real env.

`SyntheticVectorEnv` is the contracts' VectorEnv: `reset(tasks)` starts many episodes, `step(actions)`
advances every still-running one with ONE batched generation, `available_actions()` lists each running
episode's actions (parsed from the state text by the env family's parser; free-form when none exists).
Finished episodes become synthetic `Trajectory`s (per step: the model's reasoning and parse fallback)
and, with `write_back`, their transitions enter the replay buffer as source 'synthetic'.
`SyntheticEnv` wraps it as a one-episode `Env`, so the rollout loop cannot tell it from a real env.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dreamgym.config import SyntheticEnvConfig
from dreamgym.envs.base import Env
from dreamgym.envs.webshop.pages import actions_from_text
from dreamgym.episodes import is_success
from dreamgym.experience.predictor import ExperiencePredictor, Query
from dreamgym.models.generation import GenerationSettings
from dreamgym.types import Step, StepResult, Task, Trajectory

__all__ = ["SyntheticVectorEnv", "SyntheticEnv", "ACTION_PARSERS", "build_predictor", "answer_budget_warning",
           "prompt_mismatch_warning"]

log = logging.getLogger(__name__)

ACTION_PARSERS: dict[str, Callable[[str], list[str]]] = {"webshop": actions_from_text}


@dataclass
class _Episode:
    task: Task
    state: str
    number: int
    steps: list[Step] = field(default_factory=list)
    done: bool = False

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(s.observation, s.action) for s in self.steps]


class SyntheticVectorEnv:
    """Many synthetic episodes at once; one batched experience-model call per `step`."""

    name = "synthetic"

    def __init__(self, predictor: ExperiencePredictor, cfg: SyntheticEnvConfig, env_name: str,
                 real_env: object | None = None, buffer: object | None = None):
        self.predictor, self.cfg, self.env_name = predictor, cfg, env_name
        self.real_env, self.buffer = real_env, buffer
        self.episodes: list[_Episode] = []
        self.finished: list[Trajectory] = []
        self.transitions_generated = 0
        self._counter = 0

    # -- VectorEnv ------------------------------------------------------------------------------
    def reset(self, tasks: list[Task]) -> list[StepResult]:
        self.episodes = [_Episode(t, self._initial_state(t), self._next_number()) for t in tasks]
        return [StepResult(e.state, 0.0, False, {"task_id": e.task.id}) for e in self.episodes]

    @property
    def running(self) -> list[int]:
        """Indices (into the last `reset`'s tasks) of episodes still running."""
        return [i for i, e in enumerate(self.episodes) if not e.done]

    def available_actions(self) -> list[list[str]]:
        parse = ACTION_PARSERS.get(self.env_name)
        return [parse(self.episodes[i].state) if parse else [] for i in self.running]

    def step(self, actions: list[str]) -> list[StepResult]:
        live = [self.episodes[i] for i in self.running]
        if len(actions) != len(live):
            raise ValueError(f"step got {len(actions)} actions for {len(live)} running episodes")
        avail = self.available_actions()
        queries = [Query(e.task.instruction, e.history, e.state, a, env=self.env_name,
                         exclude_trajectory=self._trajectory_id(e)) for e, a in zip(live, actions)]
        preds = self.predictor.predict(queries)
        results, ended = [], []
        for e, a, acts, p in zip(live, actions, avail, preds):
            info = {"parse_fallback": p.parse_fallback} if p.parse_fallback else {}
            done = p.done
            if not done and len(e.steps) + 1 >= self.cfg.max_steps:
                done, info["truncated"] = True, True
            e.steps.append(Step(t=len(e.steps), observation=e.state, available_actions=acts, action=a,
                                reward=p.reward, done=done, info=info, reasoning=p.reasoning,
                                parse_fallback=p.parse_fallback))
            e.state, e.done = p.next_state, done
            results.append(StepResult(p.next_state, p.reward, done, info))
            if done:
                ended.append(e)
        self.transitions_generated += len(live)
        self._finish(ended)
        return results

    def end(self, index: int) -> None:
        """Stop episode `index` from outside (the rollout's turn or context limit): it is finished as
        truncated, becomes a trajectory and is written back like any other."""
        e = self.episodes[index]
        if not e.done:
            e.done = True
            if e.steps:
                e.steps[-1].done = True
                e.steps[-1].info["truncated"] = True
                self._finish([e])

    def close(self) -> None:
        self.episodes = []

    # -- results ----------------------------------------------------------------------------------
    def trajectories(self, clear: bool = True) -> list[Trajectory]:
        """Synthetic trajectories of the episodes finished so far."""
        out = self.finished
        if clear:
            self.finished = []
        return out

    def metrics(self) -> dict[str, float]:
        """wm/parse_fail_rate and wm/parse_fail/<reason> so far, plus cost counters."""
        m = self.predictor.stats.as_metrics(prefix="wm/")
        m["cost/synthetic_transitions"] = float(self.transitions_generated)
        m["cost/tokens_generated"] = float(self.predictor.tokens_generated)
        return m

    # -- internals --------------------------------------------------------------------------------
    def _initial_state(self, task: Task) -> str:
        if self.cfg.initial_state == "real_reset" and self.real_env is not None:
            return self.real_env.reset(task).observation
        return self.cfg.initial_template.format(instruction=task.instruction)

    def _next_number(self) -> int:
        self._counter += 1
        return self._counter - 1

    def _trajectory_id(self, e: _Episode) -> str:
        return f"synthetic-{self.env_name}-{e.task.id.replace(':', '_')}-{e.number}"

    def _finish(self, ended: list[_Episode]) -> None:
        trajs = []
        for e in ended:
            last = e.steps[-1]
            trajs.append(Trajectory(id=self._trajectory_id(e), source="synthetic", env=self.env_name, task=e.task,
                                    steps=e.steps, final_reward=last.reward, success=is_success(last.reward, {}),
                                    policy="rollout", seed=self.cfg.seed, final_observation=e.state))
        self.finished.extend(trajs)
        keep = [t for t in trajs if t.task.split == "train"]  # split hygiene: no dev/test goals in the buffer
        if keep and self.buffer is not None and self.cfg.write_back:
            self.buffer.add_trajectories(keep)


class SyntheticEnv(Env):
    """One synthetic episode at a time behind the plain `Env` protocol (tasks come from the real env)."""

    name = "synthetic"

    def __init__(self, vector: SyntheticVectorEnv, task_source: object | None = None):
        self.vector, self.task_source = vector, task_source

    def tasks(self, split: str) -> list[Task]:
        if self.task_source is None:
            return []
        return self.task_source.tasks(split)

    def reset(self, task: Task) -> StepResult:
        return self.vector.reset([task])[0]

    def step(self, action: str) -> StepResult:
        if not self.vector.running:
            state = self.vector.episodes[0].state if self.vector.episodes else ""
            return StepResult(state, 0.0, True, {"invalid_action": True, "reason": "episode is over"})
        return self.vector.step([action])[0]

    def available_actions(self) -> list[str]:
        acts = self.vector.available_actions()
        return acts[0] if acts else []

    def close(self) -> None:
        self.vector.close()


def build_predictor(cfg: SyntheticEnvConfig, world_model: str | None = None, buffer: object | None = None,
                    retrieval: bool | None = None, reasoning: bool | None = None) -> ExperiencePredictor:
    """Load the experience model (base + `world_model` adapter: an adapter dir or a fit-world-model run
    dir; None = the base model alone) for inference, wired to the buffer."""
    from dreamgym.models.loading import load_adapter, load_model

    if world_model is not None:
        if warning := answer_budget_warning(cfg.max_new_tokens, world_model):
            log.warning(warning)
        if warning := prompt_mismatch_warning(cfg.prompt, world_model, ablation=reasoning is not None):
            log.warning(warning)
        model, tokenizer = load_adapter(cfg.model, world_model, for_training=False)
    else:
        model, tokenizer = load_model(cfg.model, for_training=False)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                                  temperature=cfg.temperature, batch_size=cfg.batch_size)
    return ExperiencePredictor(model, tokenizer, cfg.prompt, settings, buffer=buffer,
                               retrieval=cfg.retrieval if retrieval is None else retrieval,
                               reasoning=cfg.prompt.reasoning if reasoning is None else reasoning,
                               seed=cfg.seed if cfg.do_sample else None, bounded=cfg.bounded_decoding)


def _fit_run_file(world_model: str | Path, name: str) -> Path | None:
    """`name` in the fit-world-model run that `world_model` is (or whose checkpoints/adapter it is); None
    when there is no such file."""
    p = Path(world_model)
    for run in (p, p.parent, p.parent.parent):
        if (run / name).is_file():
            return run / name
    return None


def prompt_mismatch_warning(prompt: object, world_model: str | Path, ablation: bool = False) -> str | None:
    """A warning naming every `synthetic.prompt.*` key that differs from the prompt the experience model was
    fitted with (`prompt:` in the fit run's config.yaml): e.g. a model trained to reason first, queried
    without reasoning, answers in a format it never saw. `ablation=True` (reasoning switched on purpose, as
    eval-world-model's ablations do) leaves `reasoning` out. None when all agree or no config is found."""
    import yaml

    path = _fit_run_file(world_model, "config.yaml")
    try:
        trained = (yaml.safe_load(path.read_text()) or {}).get("prompt") if path else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(trained, dict):
        return None
    diff = [f"synthetic.prompt.{k}={getattr(prompt, k)!r} (fitted with {v!r})" for k, v in trained.items()
            if hasattr(prompt, k) and getattr(prompt, k) != v and not (ablation and k == "reasoning")]
    if not diff:
        return None
    return (f"the synthetic env's prompt differs from the one the experience model was fitted with ({path}): "
            f"{', '.join(diff)}; the model then answers prompts it never saw: set these keys to the fitted values")


def answer_budget_warning(max_new_tokens: int, world_model: str | Path) -> str | None:
    """A warning when `max_new_tokens` is below the p90 answer length the experience model was trained on
    (`answer_tokens_p90` in the fit-world-model summary.json of the run `world_model` is, or whose
    checkpoints/adapter it is); None when it covers it or no such summary exists. Bounded decoding still
    completes the cut answers, but their next states lose their ends (a page's last actions)."""
    summary = _fit_run_file(world_model, "summary.json")
    if summary is None:
        return None
    try:
        s = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    p90 = s.get("answer_tokens_p90") if s.get("command") == "fit-world-model" else None
    if isinstance(p90, int) and max_new_tokens < p90:
        return (f"synthetic.max_new_tokens={max_new_tokens} is below the experience model's p90 answer length "
                f"({p90} tokens; max {s.get('answer_tokens_max')}, {summary}): most answers will be cut and "
                f"completed by bounded decoding with shortened next states; set synthetic.max_new_tokens >= {p90}")
    return None
