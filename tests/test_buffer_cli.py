"""`dreamgym buffer build|info`: split hygiene (dev/test refused and counted), summary keys, append,
refusals with clear errors, and `info --json` counts by source. Uses the hashing encoder (no model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import BufferBuildConfig, load_config
from dreamgym.errors import DreamGymError
from dreamgym.pipelines.buffer import buffer_build
from dreamgym.replay import ReplayBuffer
from dreamgym.types import Step, Task, Trajectory, write_trajectories

HASHING = ["replay.encoder=hashing", "progress=false"]


def traj(i: int, split: str = "train", source: str = "real", n_steps: int = 3) -> Trajectory:
    task = Task(id=f"webshop:{i}", instruction=f"i need item {i}", env="webshop", split=split)
    steps = [Step(t=t, observation=f"Instruction: [SEP] i need item {i} [SEP] page {t}", available_actions=[],
                  action=f"click[item {i} option {t}]", reward=0.0, done=False) for t in range(n_steps)]
    return Trajectory(id=f"webshop-{split}-{i}-{source}", source=source, env="webshop", task=task, steps=steps,
                      final_reward=1.0, success=True, policy="oracle", seed=0, final_observation="Thank you")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "trajs.jsonl"
    write_trajectories(path, [traj(0), traj(1), traj(2, split="dev"), traj(3, split="test", n_steps=2), traj(4),
                              traj(0)])                          # the last one repeats traj 0 exactly
    syn = tmp_path / "synthetic.jsonl"
    write_trajectories(syn, [traj(10, source="synthetic"), traj(11, source="synthetic", n_steps=1)])
    return path, syn


def test_build_refuses_dev_test_counts_them_and_writes_summary(tmp_path, data):
    path, _ = data
    result = CliRunner().invoke(app, ["buffer", "build", "--from", str(path), "--out", str(tmp_path / "buf"),
                                      "--run-dir", str(tmp_path / "run"), "--seed", "3", *HASHING])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_trajectories"] == {"dev": 1, "test": 1} and summary["skipped_transitions"] == 5
    assert summary["real_transitions"] == 9 and summary["synthetic_transitions"] == 0
    assert summary["duplicates"] == 3 and summary["trajectories_read"] == 6 and summary["seed"] == 3
    assert summary["encoder"] == "hashing" and summary["encode_texts_per_s"] > 0
    assert {"command", "run_dir", "config_path", "wall_clock_s", "counts", "buffer_dir"} <= summary.keys()
    assert (tmp_path / "run" / "config.yaml").is_file()
    buf = ReplayBuffer.load(tmp_path / "buf")
    assert {t.task_id for t in buf.transitions()} == {"webshop:0", "webshop:1", "webshop:4"}


def test_info_json_prints_counts_by_source(tmp_path, data):
    path, syn = data
    cfg = load_config(BufferBuildConfig, [], HASHING)
    buffer_build(cfg, [path, syn], out=tmp_path / "buf", run_dir=tmp_path / "run")
    result = CliRunner().invoke(app, ["buffer", "info", str(tmp_path / "buf"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.strip().splitlines()[-1])
    assert (info["total"], info["real"], info["synthetic"]) == (13, 9, 4)
    assert info["by_env"] == {"webshop": {"real": 9, "synthetic": 4}} and info["encoder"] == "hashing"
    plain = CliRunner().invoke(app, ["buffer", "info", str(tmp_path / "buf")])
    assert plain.exit_code == 0 and "9 real, 4 synthetic" in plain.output


def test_append_grows_an_existing_buffer_and_plain_build_refuses_it(tmp_path, data):
    path, syn = data
    cfg = load_config(BufferBuildConfig, [], HASHING)
    buffer_build(cfg, [path], out=tmp_path / "buf", run_dir=tmp_path / "run1")
    with pytest.raises(DreamGymError, match="not empty; pass --append"):
        buffer_build(cfg, [syn], out=tmp_path / "buf", run_dir=tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
    summary = buffer_build(cfg, [syn], out=tmp_path / "buf", run_dir=tmp_path / "run3", append=True)
    assert summary["appended"] and summary["counts"]["total"] == 13 and summary["synthetic_transitions"] == 4


def test_missing_file_only_held_out_data_and_no_input_are_clear_errors(tmp_path):
    cfg = load_config(BufferBuildConfig, [], HASHING)
    with pytest.raises(DreamGymError, match="nope.jsonl: trajectory file not found"):
        buffer_build(cfg, [tmp_path / "nope.jsonl"], out=tmp_path / "buf", run_dir=tmp_path / "run0")
    held_out = tmp_path / "test.jsonl"
    write_trajectories(held_out, [traj(0, split="test")])
    with pytest.raises(DreamGymError, match=r"no train transitions .*1 dev/test skipped"):
        buffer_build(cfg, [held_out], out=tmp_path / "buf", run_dir=tmp_path / "run1")
    result = CliRunner().invoke(app, ["buffer", "build", *HASHING, "--run-dir", str(tmp_path / "run2")])
    assert isinstance(result.exception, DreamGymError) and "--from/--data" in str(result.exception)
    result = CliRunner().invoke(app, ["buffer", "info", str(tmp_path / "nowhere")])
    assert isinstance(result.exception, DreamGymError) and "meta.json: not found" in str(result.exception)


def test_bad_replay_key_names_it():
    with pytest.raises(DreamGymError, match="replay.ef_search"):
        load_config(BufferBuildConfig, [], ["replay.ef_search=0"])
