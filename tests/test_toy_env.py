"""The `choice-corridor` toy env: registry and config, deterministic corridors, wrong/invalid/right doors,
oracle, the chance level a learning test has to beat, EnvPool siblings."""

import pytest

from dreamgym.config import EnvConfig
from dreamgym.envs.base import make_env, registered_envs
from dreamgym.envs.toy import ChoiceCorridorEnv
from dreamgym.envs.vector import EnvPool
from dreamgym.episodes import run_episode
from dreamgym.errors import DreamGymError
from dreamgym.policies import RandomPolicy


def test_registered_and_built_from_env_kwargs():
    assert "choice-corridor" in registered_envs()
    env = make_env(EnvConfig(name="choice-corridor", kwargs={"turns": 2, "n_doors": 4, "num_tasks": 3, "seed": 5}))
    assert (env.turns, env.n_doors, env.num_tasks, env.seed) == (2, 4, 3, 5)
    with pytest.raises(DreamGymError, match="env.kwargs"):
        make_env(EnvConfig(name="choice-corridor", kwargs={"rooms": 3}))
    with pytest.raises(DreamGymError, match="n_doors"):
        ChoiceCorridorEnv(n_doors=1)


def test_corridors_are_fixed_by_seed_and_never_stated():
    env = ChoiceCorridorEnv(turns=3, n_doors=3, num_tasks=4, seed=0)
    train, test = env.tasks("train"), env.tasks("test")
    assert [t.goal for t in train] == [t.goal for t in ChoiceCorridorEnv(num_tasks=4).tasks("train")]
    assert [t.goal for t in train] == [t.goal for t in test] and train[0].id != test[0].id
    assert ChoiceCorridorEnv(seed=1).tasks("train")[0].goal != train[0].goal
    for task in train:
        doors = task.goal["doors"]
        assert all(a != b for a, b in zip(doors, doors[1:]))  # no single colour solves a corridor
        assert not any(d in task.instruction for d in doors)
    positions = {t.goal["shown"][k].index(t.goal["doors"][k]) for t in train for k in range(3)}
    assert len(positions) > 1  # the right door is not always listed at the same place


def test_right_wrong_and_invalid_doors():
    env = ChoiceCorridorEnv(turns=3, n_doors=3)
    task = env.tasks("train")[0]
    doors, shown = task.goal["doors"], task.goal["shown"]
    first = env.reset(task)
    assert first.observation == f"Room 1 of 3. Doors: {', '.join(shown[0])}." and not first.done
    assert env.available_actions() == [f"click[{c}]" for c in shown[0]]
    bad = env.step("click[pink]")
    assert (bad.observation, bad.reward, bad.done, bad.info) == (first.observation, 0.0, False, {"invalid_action": True})
    assert env.step(f"click[{doors[0]}]").observation.startswith("Room 2 of 3.")
    wrong = next(c for c in shown[1] if c != doors[1])
    end = env.step(f"click[{wrong}]")
    assert (end.reward, end.done, end.info["success"]) == (0.0, True, False) and env.available_actions() == []
    with pytest.raises(DreamGymError, match="after the episode ended"):
        env.step(f"click[{doors[2]}]")


def test_oracle_always_wins_and_random_play_is_rare():
    env = ChoiceCorridorEnv(turns=3, n_doors=3, num_tasks=3)
    for task in env.tasks("train"):
        traj = run_episode(env, env.oracle(), task, max_turns=5)
        assert traj.success and traj.final_reward == 1.0 and len(traj.steps) == 3
    task = env.tasks("train")[0]
    wins = 0
    for i in range(3000):  # uniform over the available actions: (1/3)^3 = 3.7%
        policy = RandomPolicy(seed=i)
        wins += run_episode(env, policy, task, max_turns=5).success
    assert 0.025 < wins / 3000 < 0.05


def test_env_pool_siblings_are_independent():
    env = ChoiceCorridorEnv()
    task = env.tasks("train")[0]
    pool = EnvPool(env)
    pool.reset([task, task])
    right, wrong = f"click[{task.goal['doors'][0]}]", next(
        a for a in pool.available_actions()[1] if a != f"click[{task.goal['doors'][0]}]")
    results = pool.step([right, wrong])
    assert not results[0].done and results[1].done and pool.running == [0]
