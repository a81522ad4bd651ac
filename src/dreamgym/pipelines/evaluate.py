"""`dreamgym evaluate`: success rate (Wilson 95% interval), mean reward and average steps of a policy
in a real env split — an LLM policy (`base`, an adapter folder or a run dir with `adapter_dir`) decoding
greedily through the rollout loop, or a scripted one (`oracle`, `random`) — plus the oracle and random
policies on the same tasks as reference rows."""

from __future__ import annotations

import logging

from pathlib import Path

from dreamgym.config import EvaluateConfig
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.episodes import run_episode
from dreamgym.errors import DreamGymError
from dreamgym.policies import SCRIPTED_POLICIES, make_policy
from dreamgym.runs import RunDir
from dreamgym.stats import wilson_interval
from dreamgym.types import Trajectory, write_trajectories

__all__ = ["evaluate", "evaluate_policy", "row"]

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig, policy: str = "base", run_dir: Path | None = None) -> dict:
    run = RunDir.open("evaluate", run_dir, cfg)
    env = make_env(cfg.env)
    tasks = env.tasks(cfg.split)[: cfg.episodes]
    if not tasks:
        raise DreamGymError(f"key 'split': env {cfg.env.name!r} has no {cfg.split} tasks")
    rows = {}
    with run.phase(f"eval_{_label(policy)}"):
        trajs = evaluate_policy(cfg, env, tasks, policy)
        rows[_label(policy)] = row(trajs)
    write_trajectories(run.path / "trajectories.jsonl", trajs)
    if cfg.references:
        for ref in SCRIPTED_POLICIES:
            if ref == "oracle" and env.oracle() is None:  # envs without a scripted oracle (http, webarena)
                log.info("no oracle reference row: env %r has no scripted oracle", cfg.env.name)
                continue
            if ref != policy:
                with run.phase(f"eval_{ref}"):
                    rows[ref] = row(evaluate_policy(cfg, env, tasks, ref))
    main = rows[_label(policy)]
    return run.write_summary(policy=policy, env=cfg.env.name, split=cfg.split, **main, ci95=main["success_rate_ci95"],
                             rows=rows, real_transitions=sum(r["transitions"] for r in rows.values()),
                             synthetic_transitions=0, tokens_generated=0, tokens_trained=0, gpu_hours=0.0)


def evaluate_policy(cfg: EvaluateConfig, env, tasks: list, policy: str) -> list[Trajectory]:
    """Trajectories of one policy on the tasks (scripted policies one episode at a time, LLM policies
    batched through the rollout loop, greedy)."""
    if policy in SCRIPTED_POLICIES:
        scripted = make_policy(policy, env, seed=cfg.seed)
        return [run_episode(env, scripted, t, cfg.rollout.max_turns, seed=cfg.seed) for t in tasks]
    from dreamgym.models.loading import load_adapter, load_model
    from dreamgym.rl.context import ChatContext, ContextSettings
    from dreamgym.rl.rollout import RolloutSettings, run_rollouts

    model, tok = load_model(cfg.model) if policy == "base" else load_adapter(cfg.model, policy)
    r = cfg.rollout
    settings = RolloutSettings(max_turns=r.max_turns, max_new_tokens=r.max_new_tokens, do_sample=False,
                               batch_size=r.batch_size, max_context_tokens=r.max_context_tokens,
                               action_space=r.action_space, backend=r.backend)
    pool = EnvPool(env) if hasattr(env, "spawn") else None
    if pool is None:
        raise DreamGymError(f"env {cfg.env.name!r} has no spawn(): evaluate needs independent env instances")
    ctx = ChatContext(tok, ContextSettings(observation_chars=r.observation_chars))
    result = run_rollouts(model, tok, ctx, pool, tasks, settings)
    return [e.trajectory("real", cfg.env.name, _label(policy), cfg.seed, i) for i, e in enumerate(result.episodes)]


def row(trajs: list[Trajectory]) -> dict:
    """success_rate (+ Wilson ci95), mean_reward, avg_steps, episodes, transitions."""
    n = len(trajs)
    wins = sum(t.success for t in trajs)
    steps = sum(len(t.steps) for t in trajs)
    return {"success_rate": wins / n, "success_rate_ci95": wilson_interval(wins, n),
            "mean_reward": sum(t.final_reward for t in trajs) / n, "avg_steps": steps / n, "episodes": n,
            "transitions": steps}


def _label(policy: str) -> str:
    return policy if policy in SCRIPTED_POLICIES or policy == "base" else "policy"
