"""Trajectory records round-trip and validate; the env registry finds names and import paths."""

import json

import pytest

from dreamgym.config import EnvConfig
from dreamgym.envs.base import UnknownEnvError, make_env, registered_envs, resolve_env_class
from dreamgym.types import Step, StepResult, Task, Trajectory, TrajectoryFileError, read_trajectories, write_trajectories


def _traj(source="real"):
    task = Task(id="webshop:42", instruction="i need x", env="webshop", split="train", goal={"asin": "B0X"})
    steps = [Step(0, "page0", ["search[...]"], "search[x]", 0.0, False, {}),
             Step(1, "page1", ["click[b0x]"], "click[b0x]", 1.0, True, {"success": True})]
    return Trajectory(id="webshop-train-00042-oracle-0", source=source, env="webshop", task=task, steps=steps,
                      final_reward=1.0, success=True, policy="oracle", seed=0, final_observation="done page")


def test_trajectory_round_trip_and_transitions(tmp_path):
    path = tmp_path / "t.jsonl"
    assert write_trajectories(path, [_traj(), _traj("synthetic")]) == 2
    back = list(read_trajectories(path))
    assert back[0] == _traj()
    line = json.loads(path.read_text().splitlines()[0])
    assert line["schema"] == 1 and "reasoning" not in line["steps"][0]
    assert "reasoning" in json.loads(path.read_text().splitlines()[1])["steps"][0]
    tr = back[0].transitions()
    assert [(t.state, t.action, t.next_state, t.reward, t.done) for t in tr] == [
        ("page0", "search[x]", "page1", 0.0, False), ("page1", "click[b0x]", "done page", 1.0, True)]
    assert tr[0].trajectory_id == "webshop-train-00042-oracle-0" and tr[0].task_id == "webshop:42"


def test_step_limit_cut_is_not_a_done_transition():
    """A step limit's cut (info truncated) ends the episode but is no outcome of the last action: its
    transition is not done, while a real end (purchase) stays done."""
    traj = _traj()
    traj.steps[1] = Step(1, "page1", ["click[b0x]"], "click[next >]", 0.0, True, {"truncated": True})
    assert [t.done for t in traj.transitions()] == [False, False]
    assert traj.transitions()[1].reward == 0.0 and traj.steps[1].done  # the stored step keeps the env's answer
    assert [t.done for t in _traj().transitions()] == [False, True]


def test_bad_trajectory_lines_name_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trajectories(path, [_traj()])
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(TrajectoryFileError, match=r"t.jsonl:2: bad trajectory record"):
        list(read_trajectories(path))
    path.write_text(json.dumps({**_traj().to_dict(), "schema": 2}) + "\n")
    with pytest.raises(TrajectoryFileError, match=r"t.jsonl:1: .*schema is 2, expected 1"):
        list(read_trajectories(path))
    d = _traj().to_dict()
    del d["steps"]
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(TrajectoryFileError, match=r"missing key 'steps'"):
        list(read_trajectories(path))
    with pytest.raises(TrajectoryFileError, match="not found"):
        list(read_trajectories(tmp_path / "missing.jsonl"))


class CounterEnv:
    """A user env defined outside dreamgym: reach 3 by stepping 'inc'."""

    def __init__(self, target: int = 3):
        self.target, self.n = target, 0

    def tasks(self, split):
        return [Task(id=f"counter:{split}", instruction=f"count to {self.target}", env="counter", split=split)]

    def reset(self, task):
        self.n = 0
        return StepResult("0")

    def step(self, action):
        self.n += action == "inc"
        done = self.n >= self.target
        return StepResult(str(self.n), float(done), done, {})

    def available_actions(self):
        return ["inc", "wait"]

    def close(self):
        pass


def test_registry_by_name_and_import_path():
    assert {"webshop", "http"} <= set(registered_envs())
    env = make_env(EnvConfig(name="tests.test_types_and_registry:CounterEnv", kwargs={"target": 2}))
    env.reset(env.tasks("train")[0])
    assert [env.step("inc").done for _ in range(2)] == [False, True]


def test_registry_errors_list_envs_and_reasons():
    with pytest.raises(UnknownEnvError, match=r"unknown env 'webshp'; registered envs: .*http.*webshop"):
        resolve_env_class("webshp")
    with pytest.raises(UnknownEnvError, match=r"cannot import module 'no_such_pkg.mod'"):
        resolve_env_class("no_such_pkg.mod:Env")
    with pytest.raises(UnknownEnvError, match=r"has no attribute 'Nope'"):
        resolve_env_class("tests.test_types_and_registry:Nope")
    with pytest.raises(UnknownEnvError, match=r"lacks tasks, reset, step, available_actions, close"):
        resolve_env_class("tests.test_types_and_registry:_traj")
