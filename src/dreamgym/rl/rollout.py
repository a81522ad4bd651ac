"""Batched multi-turn rollouts of an LLM policy against any VectorEnv (real `EnvPool` or the synthetic
env): each turn, one batched generation for every running episode, then one env step.

Every episode is a single token sequence grown by appending (`TokenTrace`): the prompt and each
observation turn are context (mask 0), each sampled action is kept as the exact sampled ids with their
behaviour log-probs (mask 1) — decoded text exists only for the env, history is never re-tokenized.
Per-turn rewards sit on each turn's last sampled token. Episodes stop on done, `max_turns` or when the
context would exceed `max_context_tokens` (truncated). Metrics: success, reward, length, repeated
actions (echo-trap alarm), invalid actions, unparsable actions, tokens/s.

Action spaces (`RolloutSettings.action_space`): `free` samples any text and parses an action from it;
`choice` constrains each turn's sample to exactly one of the episode's available actions (`search[...]`
filled with the task instruction, see `choice_action_text`) followed by the end token. The trace then
keeps, per sampled token, the ids that were allowed at that step (`TokenTrace.allowed`); the behaviour
log-probs and training's `policy_forward` both use the distribution renormalised over that set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dreamgym.episodes import is_success
from dreamgym.models.generation import GenerationSettings, generate_samples, release_keys
from dreamgym.rl.context import ChatContext, choice_action_text, parse_action_text
from dreamgym.types import Step, Task, Trajectory

__all__ = ["TokenTrace", "Episode", "RolloutSettings", "RolloutResult", "run_rollouts", "ACTION_SPACES"]

ACTION_SPACES = ("free", "choice")


@dataclass
class TokenTrace:
    """One episode exactly as the policy saw it: a single id sequence grown by appending."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    """1 = sampled by the policy (trained on), 0 = context (prompt, observations, template glue)"""
    logprobs: list[float] = field(default_factory=list)
    """behaviour log-prob per id, 0.0 where mask == 0"""
    allowed: list[list[int] | None] = field(default_factory=list)
    """per id: the ids choice mode allowed when it was sampled (log-probs renormalised over them); None for
    context and unconstrained samples"""

    def add_context(self, ids: list[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self.allowed += [None] * len(ids)

    def add_sample(self, ids: list[int], logprobs: list[float], allowed: list[list[int]] | None = None) -> None:
        assert len(ids) == len(logprobs), "one log-prob per sampled token"
        assert allowed is None or len(allowed) == len(ids), "one allowed set per sampled token"
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += logprobs
        self.allowed += allowed if allowed is not None else [None] * len(ids)


@dataclass
class Episode:
    task: Task
    trace: TokenTrace = field(default_factory=TokenTrace)
    turn_ends: list[int] = field(default_factory=list)
    """index in `trace` of each turn's last sampled token (where its reward goes)"""
    turn_rewards: list[float] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    parsed: list[bool] = field(default_factory=list)
    observation: str = ""
    done: bool = False
    truncated: bool = False
    success: bool = False

    @property
    def final_reward(self) -> float:
        return self.turn_rewards[-1] if self.turn_rewards and self.done and not self.truncated else 0.0

    @property
    def outcome_reward(self) -> float:
        """The scalar GRPO scores an episode by: its last env reward (0 when cut off)."""
        return self.final_reward

    def trajectory(self, source: str, env: str, policy: str, seed: int, number: int) -> Trajectory:
        return Trajectory(id=f"{env}-{self.task.split}-{self.task.id.replace(':', '_')}-{policy}-{number}",
                          source=source, env=env, task=self.task, steps=self.steps, final_reward=self.final_reward,
                          success=self.success, policy=policy, seed=seed, final_observation=self.observation)


@dataclass
class RolloutSettings:
    max_turns: int = 15
    max_new_tokens: int = 32
    """longest free-text action (choice mode decodes up to the longest candidate instead)"""
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 32
    max_context_tokens: int = 4096
    seed: int | None = None
    action_space: str = "free"
    """'free' (any text, parsed) or 'choice' (exactly one available action, see the module docstring)"""
    backend: str = "auto"
    """generation backend (models.generation.BACKENDS); the engine keeps each episode's KV cache across turns"""

    def __post_init__(self) -> None:
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space: got {self.action_space!r}, expected one of {ACTION_SPACES}")


@dataclass
class RolloutResult:
    episodes: list[Episode]
    seconds: float
    tokens_generated: int

    def metrics(self) -> dict[str, float]:
        eps = self.episodes
        n = max(len(eps), 1)
        turns = [len(e.steps) for e in eps]
        total_turns = max(sum(turns), 1)
        repeats = sum(1 for e in eps for a, b in zip(e.steps, e.steps[1:]) if a.action == b.action)
        invalid = sum(1 for e in eps for s in e.steps if s.info.get("invalid_action"))
        unparsed = sum(1 for e in eps for ok in e.parsed if not ok)
        return {
            "rollout/success_rate": sum(e.success for e in eps) / n,
            "rollout/mean_reward": sum(e.final_reward for e in eps) / n,
            "rollout/episode_length": sum(turns) / n,
            "rollout/repeated_action_rate": repeats / total_turns,
            "rollout/invalid_action_rate": invalid / total_turns,
            "rollout/action_parse_fail_rate": unparsed / total_turns,
            "rollout/truncated_rate": sum(e.truncated for e in eps) / n,
            "perf/tokens_per_s": self.tokens_generated / max(self.seconds, 1e-9),
            "perf/rollout_s": self.seconds,
        }


def run_rollouts(model, tokenizer, ctx: ChatContext, venv, tasks: list[Task], settings: RolloutSettings) -> RolloutResult:
    """Play one episode per task (a GRPO group repeats a task) and return them with their token traces."""
    t0 = time.perf_counter()
    gen = GenerationSettings(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                             temperature=settings.temperature, top_p=settings.top_p, batch_size=settings.batch_size,
                             backend=settings.backend)
    episodes = [Episode(task=t) for t in tasks]
    keys = [(id(episodes), i) for i in range(len(episodes))]  # one cache row per episode across turns
    first = venv.reset(tasks)
    for ep, r, acts in zip(episodes, first, venv.available_actions()):
        ep.observation = r.observation
        ep.trace.add_context(ctx.prompt_ids(ep.task.instruction, r.observation, acts))
    tokens = 0
    for turn in range(settings.max_turns):
        live = venv.running
        if not live:
            break
        avail = venv.available_actions()
        offered = ([[choice_action_text(a, episodes[i].task.instruction) for a in acts] for i, acts in zip(live, avail)]
                   if settings.action_space == "choice" else None)
        choices = [ctx.choice_ids(texts) for texts in offered] if offered is not None else None
        samples = generate_samples(model, tokenizer, [episodes[i].trace.ids for i in live], gen,
                                   generator_seed=None if settings.seed is None else settings.seed + turn,
                                   choices=choices, keys=[keys[i] for i in live])
        actions = []
        for k, (i, s) in enumerate(zip(live, samples)):
            ep = episodes[i]
            ep.trace.add_sample(s.ids, s.logprobs, s.allowed)
            ep.turn_ends.append(len(ep.trace.ids) - 1)
            if s.allowed is not None:  # the sample is one candidate's ids: take its text as is
                action, ok = offered[k][choices[k].index(s.ids)], True
            else:
                action, ok = parse_action_text(tokenizer.decode(s.ids, skip_special_tokens=True))
            ep.parsed.append(ok)
            actions.append(action)
            tokens += len(s.ids)
        results = venv.step(actions)
        next_avail = iter(venv.available_actions())
        for i, s, action, acts, r in zip(live, samples, actions, avail, results):
            ep = episodes[i]
            ep.steps.append(Step(t=turn, observation=ep.observation, available_actions=acts, action=action,
                                 reward=float(r.reward), done=bool(r.done), info=dict(r.info)))
            ep.turn_rewards.append(float(r.reward))
            ep.observation = r.observation
            if r.done:
                ep.done = True
                ep.truncated = bool(r.info.get("truncated"))
                ep.success = not ep.truncated and is_success(float(r.reward), r.info)
                continue
            acts_next = next(next_avail)
            glue = ctx.end_ids_if_missing(s.ids) + ctx.observation_ids(r.observation, acts_next)
            if len(ep.trace.ids) + len(glue) + _room(ctx, settings, acts_next, ep.task) > settings.max_context_tokens:
                _cut(venv, i, ep)
            else:
                ep.trace.add_context(glue)
    for i in list(venv.running):  # out of turns
        _cut(venv, i, episodes[i])
    release_keys(model, keys)
    return RolloutResult(episodes, time.perf_counter() - t0, tokens)


def _room(ctx: ChatContext, settings: RolloutSettings, actions: list[str], task: Task) -> int:
    """Tokens the next sample may take: max_new_tokens, or in choice mode its longest candidate."""
    if settings.action_space == "free" or not actions:
        return settings.max_new_tokens
    return max(len(c) for c in ctx.choice_ids([choice_action_text(a, task.instruction) for a in actions]))


def _cut(venv, index: int, ep: Episode) -> None:
    venv.end(index)
    ep.done, ep.truncated, ep.success = True, True, False
    if ep.steps:
        ep.steps[-1].info["truncated"] = True
