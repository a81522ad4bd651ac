"""Shared fixtures of the offline-baseline and S2R tests: a small file of WebShop train-split oracle
(successful) and random (failed) trajectories."""

import pytest

from dreamgym.config import EnvConfig
from dreamgym.envs.base import make_env
from dreamgym.episodes import run_episode
from dreamgym.policies import RandomPolicy
from dreamgym.types import write_trajectories


@pytest.fixture(scope="module")
def offline_data(tmp_path_factory):
    env = make_env(EnvConfig())
    tasks = env.tasks("train")[:8]
    trajs = [run_episode(env, env.oracle(), t, 15) for t in tasks]
    trajs += [run_episode(env, RandomPolicy(0), t, 5, episode=1) for t in tasks]
    path = tmp_path_factory.mktemp("offline") / "trajectories.jsonl"
    write_trajectories(path, trajs)
    return path


def tb_scalars(run_dir) -> set[str]:
    """Every scalar tag in a run's TensorBoard events."""
    from dreamgym.metrics import read_scalars

    return set(read_scalars(run_dir / "tb"))


@pytest.fixture(scope="module")
def tiny_world_model(tmp_path_factory):
    """A tiny-random experience-model adapter and a WebShop buffer of 4 oracle episodes (as in test_train_policy)."""
    from dreamgym.config import ModelConfig, ReplayConfig
    from dreamgym.models.loading import load_model, save_adapter
    from dreamgym.replay.buffer import ReplayBuffer
    from dreamgym.replay.embed import build_encoder

    d = tmp_path_factory.mktemp("wm")
    model, _ = load_model(ModelConfig(name="tiny-random", seed=1), for_training=True)
    save_adapter(model, d / "adapter")
    env = make_env(EnvConfig())
    buf = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    buf.add_trajectories([run_episode(env, env.oracle(), t, 15) for t in env.tasks("train")[:4]])
    buf.save(d / "buffer")
    return d
