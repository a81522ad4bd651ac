"""The `alfworld` env (native engine): ALFWorld's own engine (alfworld 0.4.2, textworld[pddl], Fast Downward) over the
24 shipped games. Pure checks first (config, registry, game discovery and split assignment, the generator
rebuilding the shipped PDDL problems exactly), then the engine: every game loads and its walkthrough wins it,
invalid actions, truncation of a random policy, `collect` and the CLI, and the speed caches leaving the text
unchanged. Tests that need the engine skip, saying why, where it is not installed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import CollectConfig, EnvConfig
from dreamgym.config.envs import ALFWORLD_TASK_TYPES, AlfWorldNativeConfig
from dreamgym.config.loading import ConfigError
from dreamgym.envs.alfworld_games import GAMES_DIR
from dreamgym.envs.base import registered_envs, resolve_env_class
from dreamgym.errors import DreamGymError


def _engine_missing() -> str:
    try:
        import alfworld.agents.environment.alfred_tw_env  # noqa: F401
        from fast_downward.interface import DOWNWARD_LIB_PATH
    except ImportError as e:
        return f"ALFWorld's engine is not installed ({e}): pip install 'dreamgym[alfworld]'"
    if not Path(DOWNWARD_LIB_PATH).is_file():
        return f"fast-downward-textworld is installed without its compiled library {DOWNWARD_LIB_PATH}"
    return ""


MISSING = _engine_missing()
needs_engine = pytest.mark.skipif(bool(MISSING), reason=MISSING or "-")

SHIPPED = sorted(p.parent.name for p in GAMES_DIR.glob("*/game.tw-pddl"))


def test_registered_and_config_validated():
    assert "alfworld" in registered_envs() and "alfworld-http" in registered_envs()
    assert AlfWorldNativeConfig().task_types == list(ALFWORLD_TASK_TYPES) and AlfWorldNativeConfig().max_steps == 50
    with pytest.raises(ConfigError, match="env.alfworld_native.task_types"):
        AlfWorldNativeConfig(task_types=["pick_and_place"])
    with pytest.raises(ConfigError, match="env.alfworld_native.max_steps"):
        AlfWorldNativeConfig(max_steps=0)
    with pytest.raises(ConfigError, match="dev_fraction'/'test_fraction"):
        AlfWorldNativeConfig(dev_fraction=0.5, test_fraction=0.5)
    assert EnvConfig().alfworld_native.data_dir is None


def test_shipped_games_cover_every_task_type_and_match_the_generator():
    from dreamgym.envs.alfworld_games.make_games import TASKS, build_game

    assert SHIPPED == sorted(spec.name for spec in TASKS) and len(SHIPPED) == 24
    for spec in TASKS:
        folder = GAMES_DIR / spec.name
        game = json.loads((folder / "game.tw-pddl").read_text())
        traj = json.loads((folder / "traj_data.json").read_text())
        assert set(game) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        assert game["solvable"] is True and 1 <= len(game["walkthrough"]) <= 50
        assert traj["task_type"] == spec.task_type and traj["expert"] in ("handcoded", "planner")
        if MISSING:
            continue
        problem, traj_data, text = build_game(spec)  # the seeds fix the game: same problem, same task text
        assert problem == game["pddl_problem"] and f"Your task is to: {text}." in game["grammar"]
        assert traj_data["pddl_params"] == traj["pddl_params"]
    assert {json.loads((GAMES_DIR / n / "traj_data.json").read_text())["task_type"] for n in SHIPPED} == set(
        ALFWORLD_TASK_TYPES)


def test_find_games_and_split_assignment(tmp_path):
    from dreamgym.envs.alfworld_native import assign_splits, find_games

    games = find_games(GAMES_DIR)
    assert [g.rel for g in games] == SHIPPED
    mug = next(g for g in games if g.rel.startswith("pick_and_place_simple-Mug"))
    assert mug.instruction.endswith("coffeemachine.") and mug.task_type == "pick_and_place_simple"
    splits = assign_splits(games, seed=0, dev_fraction=0.25, test_fraction=0.25)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "dev": 6, "test": 6}
    names = [{g.rel for g in splits[s]} for s in ("train", "dev", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert all({g.task_type for g in splits[s]} == set(ALFWORLD_TASK_TYPES) for s in splits)
    assert assign_splits(list(reversed(games)), 0, 0.25, 0.25) == splits  # stable: input order does not matter
    other = assign_splits(games, seed=1, dev_fraction=0.25, test_fraction=0.25)
    assert other != splits and sum(map(len, other.values())) == 24
    # official-style folders: task type from the folder name; unsolvable, movable and Sliced games skipped
    src = GAMES_DIR / SHIPPED[0]
    for rel, solvable in (("pick_two_obj_and_place-CD-None-Drawer-301/trial_T1", True),
                          ("pick_two_obj_and_place-CD-None-Drawer-302/trial_T2", False),
                          ("pick_and_place_with_movable_recep-CD-Bowl-Desk-303/trial_T3", True)):
        (tmp_path / rel).mkdir(parents=True)
        game = json.loads((src / "game.tw-pddl").read_text())
        game["solvable"] = solvable
        (tmp_path / rel / "game.tw-pddl").write_text(json.dumps(game))
    found = find_games(tmp_path)
    assert [(g.rel, g.task_type) for g in found] == [("pick_two_obj_and_place-CD-None-Drawer-301/trial_T1",
                                                      "pick_two_obj_and_place")]
    assert find_games(tmp_path, ["look_at_obj_in_light"]) == []


@needs_engine
def test_task_lists_official_layout_and_spawn(tmp_path):
    from dreamgym.envs.alfworld_native import AlfWorldEnv

    env = AlfWorldEnv()
    train, dev, test = env.tasks("train"), env.tasks("dev"), env.tasks("test")
    assert (len(train), len(dev), len(test)) == (12, 6, 6)
    ids = [{t.id for t in s} for s in (train, dev, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and len(set().union(*ids)) == 24
    again = AlfWorldEnv()
    assert [(t.id, t.instruction, t.goal) for t in again.tasks("test")] == [(t.id, t.instruction, t.goal) for t in test]
    task = test[0]
    assert task.id == f"alfworld:{task.goal['game']}" and task.env == "alfworld" and task.split == "test"
    assert task.goal["walkthrough"] and task.goal["task_type"] in ALFWORLD_TASK_TYPES
    assert [t.id for t in AlfWorldEnv(max_games=2).tasks("train")] == [t.id for t in train[:2]]
    only = AlfWorldEnv(task_types=["pick_two_obj_and_place"])
    assert {t.goal["task_type"] for t in only.tasks("train") + only.tasks("test")} == {"pick_two_obj_and_place"}
    sibling = env.spawn()
    assert sibling.tasks("dev") == dev and sibling._tasks is env._tasks
    with pytest.raises(DreamGymError, match="split 'valid'"):
        env.tasks("valid")
    # ALFWorld's own layout: train/valid_seen/valid_unseen become train/dev/test
    for sub, names in (("train", SHIPPED[:3]), ("valid_seen", SHIPPED[3:4]), ("valid_unseen", SHIPPED[4:6])):
        for name in names:
            shutil.copytree(GAMES_DIR / name, tmp_path / "json_2.1.1" / sub / name)
    official = AlfWorldEnv(data_dir=str(tmp_path / "json_2.1.1"))
    assert official.official_layout
    assert sorted(t.goal["game"] for t in official.tasks("dev")) == [f"valid_seen/{SHIPPED[3]}"]
    assert len(official.tasks("train")) == 3 and len(official.tasks("test")) == 2
    result = official.reset(official.tasks("dev")[0])
    assert result.observation.startswith("-= Welcome to TextWorld, ALFRED! =-")
    official.close()
    with pytest.raises(DreamGymError, match="env.alfworld_native.data_dir"):
        AlfWorldEnv(data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DreamGymError, match="no playable game.tw-pddl"):
        AlfWorldEnv(data_dir=str(tmp_path / "empty")).tasks("train")


@needs_engine
def test_every_shipped_game_loads_and_its_walkthrough_wins_it():
    from dreamgym.envs.alfworld_native import AlfWorldEnv

    env = AlfWorldEnv()
    argv = list(sys.argv)
    for task in env.tasks("train") + env.tasks("dev") + env.tasks("test"):
        first = env.reset(task)
        assert first.observation.startswith("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room.")
        assert first.observation.endswith(f"Your task is to: {task.instruction}") and not first.done
        assert "look" in env.available_actions() and "inventory" in env.available_actions()
        walkthrough = task.goal["walkthrough"]
        for i, action in enumerate(walkthrough):
            assert action in env.available_actions(), (task.id, i, action)
            result = env.step(action)
            assert result.done == (i == len(walkthrough) - 1), (task.id, i)
        assert (result.reward, result.done, result.info["success"], result.info["won"]) == (1.0, True, True, True)
        assert "truncated" not in result.info and env.available_actions() == []
    assert sys.argv == argv  # Fast Downward's translator rewrites sys.argv; the env puts it back
    with pytest.raises(DreamGymError, match="after the episode ended"):
        env.step("look")
    env.close()


@needs_engine
def test_invalid_actions_answer_nothing_happens_and_random_play_is_truncated():
    from dreamgym.envs.alfworld_native import AlfWorldEnv
    from dreamgym.episodes import run_episode
    from dreamgym.policies import RandomPolicy

    env = AlfWorldEnv(max_steps=4)
    task = env.tasks("test")[0]
    env.reset(task)
    before = env.available_actions()
    bad = env.step("dance with the fridge")
    assert (bad.observation, bad.reward, bad.done, bad.info) == ("Nothing happens.", 0.0, False, {"invalid_action": True})
    assert env.available_actions() == before
    assert env.step("").info["invalid_action"] and env.step("go to the moon").observation == "Nothing happens."
    last = env.step("inventory")
    assert last.done and last.info == {"won": False, "success": False, "truncated": True} and last.reward == 0.0
    traj = run_episode(env, RandomPolicy(seed=3), task, max_turns=20)
    assert len(traj.steps) == 4 and traj.steps[-1].info["truncated"] and not traj.success
    assert all(s.action in s.available_actions and "invalid_action" not in s.info for s in traj.steps)
    env.close()


@needs_engine
def test_collect_oracle_and_random_on_the_test_split(tmp_path):
    from dreamgym.pipelines.collect import collect

    cfg = CollectConfig(policy="oracle", episodes=6, split="test", max_turns=60, progress=False,
                        env=EnvConfig(name="alfworld"))
    summary = collect(cfg, run_dir=tmp_path / "oracle")
    assert (summary["success_rate"], summary["mean_reward"], summary["episodes"]) == (1.0, 1.0, 6)
    assert summary["invalid_action_rate"] == 0.0
    rows = [json.loads(line) for line in open(summary["trajectories"])]
    assert len({r["task"]["id"] for r in rows}) == 6 and all(r["steps"][-1]["reward"] == 1.0 for r in rows)
    cfg.policy = "random"
    cfg.env.alfworld_native.max_steps = 5
    summary = collect(cfg, run_dir=tmp_path / "random")
    assert summary["episodes"] == 6 and summary["avg_steps"] <= 5 and summary["invalid_action_rate"] == 0.0
    rows = [json.loads(line) for line in open(summary["trajectories"])]
    assert all(r["steps"][-1]["done"] for r in rows)
    assert all(r["steps"][-1]["info"].get("truncated") or r["steps"][-1]["reward"] == 1.0 for r in rows)


@needs_engine
def test_cli_collect_oracle_on_alfworld_native(tmp_path):
    result = CliRunner().invoke(app, ["collect", "--env", "alfworld", "--policy", "oracle", "--episodes", "3",
                                      "--split", "dev", "--run-dir", str(tmp_path / "run"), "max_turns=60",
                                      "env.alfworld_native.max_games=3", "progress=false"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["env"], summary["success_rate"], summary["episodes"]) == ("alfworld", 1.0, 3)


@needs_engine
def test_speed_caches_leave_the_engine_text_unchanged():
    """Play one game through the env (caches on) and through the bare engine in a fresh process."""
    from dreamgym.envs.alfworld_native import AlfWorldEnv

    env = AlfWorldEnv()
    task = next(t for t in env.tasks("train") if t.goal["task_type"] == "pick_two_obj_and_place")
    actions = ["look", "dance", "inventory"] + task.goal["walkthrough"]
    ours = [env.reset(task).observation, env.available_actions()]
    for action in actions:
        ours += [env.step(action).observation, env.available_actions()]
    env.close()
    script = (
        "import json, sys, textworld\n"
        "path, actions = sys.argv[1], json.loads(sys.argv[2])  # loading a game rewrites sys.argv\n"
        "from textworld.envs import PddlEnv\n"
        "from alfworld.agents.environment.alfred_tw_env import AlfredDemangler\n"
        "env = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)), shuffle=False)\n"
        "env.load(path); s = env.reset(); out = [s.feedback.strip(), s['admissible_commands']]\n"
        "for a in actions:\n"
        "    s, _, _ = env.step(a); out += [s.feedback.strip(), [] if s['won'] else s['admissible_commands']]\n"
        "print(json.dumps(out))\n")
    bare = subprocess.run([sys.executable, "-c", script, str(GAMES_DIR / task.goal["game"] / "game.tw-pddl"),
                           json.dumps(actions)], capture_output=True, text=True, check=True)
    assert json.loads(bare.stdout.strip().splitlines()[-1]) == ours


def test_missing_engine_fails_with_the_install_command(monkeypatch):
    from dreamgym.envs.alfworld_native import require_alfworld

    monkeypatch.setitem(sys.modules, "alfworld.agents.environment.alfred_tw_env", None)
    with pytest.raises(DreamGymError, match=r"pip install 'dreamgym\[alfworld\]'.*fast-downward-textworld from source"):
        require_alfworld()
    cls = resolve_env_class("alfworld")  # the module itself imports without the engine
    with pytest.raises(DreamGymError, match="env 'alfworld'"):
        cls()
