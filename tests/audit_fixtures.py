"""Inputs of an experience-model audit on tiny models, shared by the eval-world-model and sweep tests:
a held-out file of oracle trajectories, a hashing-encoder buffer of other ones, a tiny-random adapter."""

from pathlib import Path

from dreamgym.config import EnvConfig, ModelConfig, ReplayConfig
from dreamgym.envs.base import make_env
from dreamgym.episodes import run_episode
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import build_encoder
from dreamgym.types import write_trajectories


def write_audit_inputs(root: Path, n_tasks: int) -> Path:
    """root/held_out.jsonl (2 oracle train episodes), root/buffer (the other n_tasks - 2), root/adapter."""
    from dreamgym.models.loading import load_model, save_adapter

    env = make_env(EnvConfig())
    trajs = [run_episode(env, env.oracle(), t, max_turns=15, episode=i)
             for i, t in enumerate(env.tasks("train")[:n_tasks])]
    write_trajectories(root / "held_out.jsonl", trajs[:2])
    buffer = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    buffer.add_trajectories(trajs[2:])
    buffer.save(root / "buffer")
    model, _ = load_model(ModelConfig(name="tiny-random"), for_training=True)
    save_adapter(model, root / "adapter")
    return root
