"""Run directories: layout, refusal to clobber, summary keys, atomic writes, Wilson intervals."""

import json

import pytest

from dreamgym.config import CollectConfig
from dreamgym.runs import RunDir, RunDirError, atomic_write_text
from dreamgym.stats import wilson_interval


def test_run_dir_writes_config_provenance_and_summary(tmp_path):
    run = RunDir.open("collect", tmp_path / "r", CollectConfig(seed=5))
    with run.phase("work"):
        pass
    summary = run.write_summary(episodes=3)
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert on_disk == summary
    assert {"command", "run_dir", "config_path", "started_at", "wall_clock_s", "seed", "episodes"} <= summary.keys()
    assert summary["seed"] == 5 and set(summary["wall_clock_s"]) == {"work", "total"}
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("env:")
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert {"git_sha", "packages", "machine", "input_files"} <= prov.keys()
    assert any(p.startswith("omegaconf==") for p in prov["packages"])


def test_default_location_and_no_clobber(tmp_path):
    run = RunDir.open("collect", None, CollectConfig(), logs_root=tmp_path)
    assert run.path.parent == tmp_path / "collect"
    run2 = RunDir.open("collect", None, CollectConfig(), logs_root=tmp_path)
    assert run2.path != run.path
    with pytest.raises(RunDirError, match="not empty; pass --resume"):
        RunDir.open("collect", run.path, CollectConfig())
    with pytest.raises(RunDirError, match="--resume needs --run-dir"):
        RunDir.open("collect", None, CollectConfig(), resume=True)
    with pytest.raises(RunDirError, match="no config.yaml"):
        RunDir.open("collect", tmp_path / "empty", CollectConfig(), resume=True)
    assert RunDir.open("collect", run.path, CollectConfig(), resume=True).path == run.path


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.json", "1")
    atomic_write_text(tmp_path / "a.json", "2")
    assert (tmp_path / "a.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_wilson_interval_exact_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775327, abs=1e-6)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2365931, abs=1e-6), pytest.approx(0.7634069, abs=1e-6))
    assert wilson_interval(0, 0) == [0.0, 1.0]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
