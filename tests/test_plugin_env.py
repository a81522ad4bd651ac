"""The plug-in API (docs/environments.md): the example user env under examples/ runs through the real
`dreamgym` commands by import path, without editing dreamgym, and an unimportable path says why."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import EnvConfig
from dreamgym.envs.base import UnknownEnvError, make_env
from dreamgym.episodes import run_episode

ROOT = Path(__file__).resolve().parents[1]
ENV = "examples.my_env.counter_env:CounterEnv"


def _dreamgym() -> list[str]:
    script = Path(sys.executable).parent / "dreamgym"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dreamgym.cli"]


def test_collect_by_import_path_from_another_folder(tmp_path):
    """The console command, run outside the repo, finds the env through PYTHONPATH alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _dreamgym() + ["collect", "--env", ENV, "--policy", "oracle", "--episodes", "6", "--split", "test",
                         "--run-dir", str(tmp_path / "run"), "env.kwargs.max_target=4", "progress=false"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["env"], summary["success_rate"], summary["episodes"]) == (ENV, 1.0, 6)
    rows = [json.loads(line) for line in open(summary["trajectories"])]
    assert rows[0]["task"]["env"] == "counter" and rows[0]["steps"][-1]["action"] == "submit"


def test_unimportable_path_names_the_module_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownEnvError, match=r"cannot import module 'nowhere_pkg\.env'.*PYTHONPATH"):
        make_env(EnvConfig(name="nowhere_pkg.env:MyEnv"))
    with pytest.raises(UnknownEnvError, match="has no attribute 'Nope'"):
        make_env(EnvConfig(name="dreamgym.envs.toy:Nope"))


def test_evaluate_and_kwargs_reach_the_user_env(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    env = make_env(EnvConfig(name=ENV, kwargs={"max_target": 2, "num_tasks": 4}))
    assert [t.goal["target"] for t in env.tasks("dev")] == [t.goal["target"] for t in env.spawn().tasks("dev")]
    assert {t.goal["target"] for t in env.tasks("dev")} <= {1, 2} and len(env.tasks("dev")) == 4
    traj = run_episode(env, env.oracle(), env.tasks("dev")[0], max_turns=5)
    assert traj.success and traj.final_reward == 1.0
    result = CliRunner().invoke(app, ["evaluate", "--env", ENV, "--policy", "random", "--split", "test",
                                      "--run-dir", str(tmp_path / "eval"), "episodes=5"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "eval" / "summary.json").read_text())["rows"]
    assert rows["oracle"]["success_rate"] == 1.0 and rows["random"]["episodes"] == 5
