"""The `textworld` env: pure helpers to exact values, then real generated games (a session cache in a
temp folder, 5 small games, ~10 s): deterministic task lists and game files, walkthrough actions among
the admissible commands, oracle `collect` at success 1.0, random play bounded, invalid actions."""

import json

import pytest

pytest.importorskip("textworld", reason="textworld is not installed (pip install 'dreamgym[textworld]')")

from typer.testing import CliRunner  # noqa: E402

from dreamgym.cli import app  # noqa: E402
from dreamgym.config import CollectConfig, EnvConfig  # noqa: E402
from dreamgym.envs.base import make_env, registered_envs  # noqa: E402
from dreamgym.envs.textworld_env import TextWorldEnv, clean_observation  # noqa: E402
from dreamgym.envs.textworld_games import LEVELS, ensure_game, game_seed, level_spec  # noqa: E402
from dreamgym.episodes import run_episode  # noqa: E402
from dreamgym.errors import DreamGymError  # noqa: E402
from dreamgym.pipelines.collect import collect  # noqa: E402
from dreamgym.policies import RandomPolicy, make_policy  # noqa: E402

BANNER = ("\n\n\n                    ________  ________  __    __  ________        \n"
          "                   |        \\|        \\|  \\  |  \\|        \\       \n"
          "                      | $$   | $$  \\     >$$  $$    | $$          \n"
          "              \\$$      \\$$  \\$$$$$$  \\$$   \\$$ \\$$$$$$$$ \\$$$$$$$ \n\n")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("textworld-cache")


@pytest.fixture(scope="module")
def env(cache):
    env = TextWorldEnv(levels=[1, 3], train_games=1, dev_games=0, test_games=2, cache_dir=cache)
    yield env
    env.close()


def test_clean_observation_drops_banner_prompt_and_restart_line():
    raw = (BANNER + "Your objective is to eat the apple.\n\n-= Attic =-\nYou arrive in an attic.\n\n\n\n"
           ">                                                  -= Attic =-0/1")
    assert clean_observation(raw) == "Your objective is to eat the apple.\n\n-= Attic =-\nYou arrive in an attic."
    end = ("\nYou eat the apple.\n\n\nYour score has just gone up by one point.\n\n\n          *** The End ***\n\n"
           "You scored 1 out of a possible 1, in 2 turns.\n\n\nWould you like to RESTART, RESTORE a saved game, "
           "QUIT or UNDO the last command?\n>                ")
    assert clean_observation(end) == ("You eat the apple.\n\nYour score has just gone up by one point.\n\n"
                                      "*** The End ***\n\nYou scored 1 out of a possible 1, in 2 turns.")
    assert clean_observation("\nThat's not a verb I recognise.\n\n>     -= Attic =-0/3") == "That's not a verb I recognise."


def test_game_seeds_and_levels_exact():
    assert game_seed(0, "train", 0) == 0 and game_seed(0, "dev", 3) == 100_003
    assert game_seed(2, "test", 7) == 2_200_007
    assert level_spec(3, 11).key == "r3-o8-q4" and LEVELS[1] == (1, 3, 1)
    with pytest.raises(DreamGymError, match="split 'val'"):
        game_seed(0, "val", 0)
    with pytest.raises(DreamGymError, match="env.textworld.levels"):
        level_spec(9, 0)


def test_registered_and_configured_from_env_textworld(tmp_path):
    assert "textworld" in registered_envs()
    cfg = EnvConfig(name="textworld")
    cfg.textworld.levels, cfg.textworld.max_steps, cfg.textworld.cache_dir = [2], 7, str(tmp_path)
    env = make_env(cfg)
    assert isinstance(env, TextWorldEnv) and (env.levels, env.max_steps, env.cache_dir) == ([2], 7, tmp_path)
    with pytest.raises(DreamGymError, match="env.textworld.levels"):
        TextWorldEnv(levels=[5], cache_dir=tmp_path)
    with pytest.raises(DreamGymError, match="env.textworld.max_steps"):
        TextWorldEnv(max_steps=0, cache_dir=tmp_path)


def test_task_lists_are_deterministic_and_splits_disjoint(env, cache, tmp_path):
    test = env.tasks("test")
    assert [t.id for t in test] == ["textworld:test-l1-0", "textworld:test-l1-1", "textworld:test-l3-0",
                                    "textworld:test-l3-1"]
    again = TextWorldEnv(levels=[1, 3], test_games=2, cache_dir=cache).tasks("test")
    assert [(t.id, t.instruction, t.goal) for t in again] == [(t.id, t.instruction, t.goal) for t in test]
    assert env.tasks("dev") == []
    train_seeds = {t.goal["seed"] for t in env.tasks("train")}
    assert train_seeds.isdisjoint({t.goal["seed"] for t in test})
    goal = test[2].goal
    assert (goal["level"], goal["rooms"], goal["objects"], goal["quest_length"]) == (3, 3, 8, 4)
    assert 1 <= len(goal["walkthrough"]) <= 4 and goal["max_score"] >= 1
    # the spec alone regenerates the same game, byte for byte, in an empty cache
    fresh = ensure_game(level_spec(3, goal["seed"]), tmp_path)
    cached = ensure_game(level_spec(3, goal["seed"]), cache)
    assert fresh.path.read_bytes() == cached.path.read_bytes() and fresh.walkthrough == goal["walkthrough"]


def test_walkthrough_actions_are_admissible_and_win(env):
    for task in env.tasks("test"):
        first = env.reset(task)
        assert "$$" not in first.observation and "-= " in first.observation and not first.done
        for action in task.goal["walkthrough"]:
            assert action in env.available_actions(), (task.id, action)
            result = env.step(action)
        assert (result.reward, result.done, result.info["success"], result.info["won"]) == (1.0, True, True, True)
        assert env.available_actions() == []
    with pytest.raises(DreamGymError, match="after the episode ended"):
        env.step("look")


def test_invalid_action_answers_like_the_game_and_truncation_ends_episodes(cache):
    env = TextWorldEnv(levels=[3], test_games=1, max_steps=3, cache_dir=cache)
    task = env.tasks("test")[0]
    env.reset(task)
    bad = env.step("dance with the wardrobe")
    assert (bad.reward, bad.done, bad.info["invalid_action"]) == (0.0, False, True)
    assert bad.observation  # the game's own answer, e.g. "That's not a verb I recognise."
    env.step("look")
    last = env.step("inventory")
    assert last.done and last.info["truncated"] and last.info["success"] is False and last.reward == 0.0
    traj = run_episode(env, RandomPolicy(seed=0), task, max_turns=10)
    assert 1 <= len(traj.steps) <= 3 and all(s.action in s.available_actions for s in traj.steps)
    env.close()


def test_collect_oracle_wins_every_game_and_random_runs(cache, tmp_path):
    cfg = CollectConfig(policy="oracle", episodes=4, split="test", max_turns=15, progress=False,
                        env=EnvConfig(name="textworld"))
    cfg.env.textworld.levels, cfg.env.textworld.test_games, cfg.env.textworld.cache_dir = [1, 3], 2, str(cache)
    summary = collect(cfg, run_dir=tmp_path / "oracle")
    assert summary["success_rate"] == 1.0 and summary["mean_reward"] == 1.0 and summary["episodes"] == 4
    assert summary["invalid_action_rate"] == 0.0
    rows = [json.loads(line) for line in open(summary["trajectories"])]
    assert [r["task"]["id"] for r in rows] == [f"textworld:test-l{lv}-{i}" for lv in (1, 3) for i in (0, 1)]
    assert all(r["steps"][0]["action"] in r["steps"][0]["available_actions"] for r in rows)
    cfg.policy, cfg.max_turns = "random", 5
    summary = collect(cfg, run_dir=tmp_path / "random")
    assert summary["episodes"] == 4 and summary["avg_steps"] <= 5 and summary["invalid_action_rate"] == 0.0


def test_cli_collect_on_textworld(cache, tmp_path):
    result = CliRunner().invoke(app, ["collect", "--env", "textworld", "--policy", "oracle", "--episodes", "2",
                                      "--split", "test", "--run-dir", str(tmp_path / "run"), "env.textworld.levels=[1]",
                                      "env.textworld.test_games=2", f"env.textworld.cache_dir={cache}", "progress=false"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["success_rate"] == 1.0


def test_oracle_is_the_walkthrough_replay(env):
    oracle = make_policy("oracle", env)
    task = env.tasks("test")[3]
    oracle.reset(task)
    plan = [oracle.act("", ["look"]) for _ in task.goal["walkthrough"]]
    assert plan == task.goal["walkthrough"] and oracle.act("", ["look", "inventory"]) == "look"
