"""`dreamgym collect`: run a scripted policy (oracle or random) in a real env and write trajectories
as JSON lines (docs/contracts), with a rich progress bar and a summary of success and speed."""

from __future__ import annotations

import random
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dreamgym.config import CollectConfig
from dreamgym.envs.base import make_env
from dreamgym.episodes import EpisodeTiming, run_episode
from dreamgym.errors import DreamGymError
from dreamgym.policies import make_policy
from dreamgym.runs import RunDir
from dreamgym.stats import wilson_interval
from dreamgym.types import write_trajectories

__all__ = ["collect"]


def collect(cfg: CollectConfig, run_dir: str | Path | None = None, out: str | Path | None = None) -> dict:
    run = RunDir.open("collect", run_dir, cfg)
    out_path = Path(out) if out is not None else run.path / "trajectories.jsonl"
    with run.phase("setup"):
        env = make_env(cfg.env)
        tasks = env.tasks(cfg.split)
        if not tasks:
            raise DreamGymError(f"key 'split': env {cfg.env.name!r} has no {cfg.split} tasks")
        if cfg.shuffle_tasks:
            random.Random(cfg.seed).shuffle(tasks)
        policy = make_policy(cfg.policy, env, seed=cfg.seed, epsilon=cfg.epsilon)
    timing = EpisodeTiming()
    trajectories = []
    with run.phase("collect"), _progress(cfg) as bar:
        job = bar.add_task(f"{cfg.policy} on {cfg.env.name}/{cfg.split}", total=cfg.episodes)
        for ep in range(cfg.episodes):
            task = tasks[ep % len(tasks)]
            trajectories.append(run_episode(env, policy, task, cfg.max_turns, seed=cfg.seed,
                                            episode=ep // len(tasks), timing=timing))
            wins = sum(t.success for t in trajectories)
            bar.update(job, advance=1, description=f"{cfg.policy} on {cfg.env.name}/{cfg.split} "
                                                   f"success {wins}/{len(trajectories)}")
    env.close()
    with run.phase("write"):
        write_trajectories(out_path, trajectories)
    n, wins = len(trajectories), sum(t.success for t in trajectories)
    transitions = sum(len(t.steps) for t in trajectories)
    invalid = sum(bool(s.info.get("invalid_action")) for t in trajectories for s in t.steps)
    failed_endings = sum(1 for t in trajectories  # the episode ended itself (a purchase), not at the turn limit
                         if t.steps and t.steps[-1].done and not t.steps[-1].info.get("truncated") and not t.success)
    return run.write_summary(
        env=cfg.env.name, policy=cfg.policy, split=cfg.split, trajectories=str(out_path),
        episodes=n, transitions=transitions, real_transitions=transitions,
        success_rate=wins / n, success_rate_ci95=wilson_interval(wins, n),
        mean_reward=sum(t.final_reward for t in trajectories) / n,
        avg_steps=transitions / n, invalid_action_rate=invalid / max(transitions, 1), failed_endings=failed_endings,
        steps_per_s=timing.steps / max(timing.env_s, 1e-9),
        synthetic_transitions=0, tokens_generated=0, tokens_trained=0, gpu_hours=0.0,
    )


def _progress(cfg: CollectConfig) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not cfg.progress, transient=False)
