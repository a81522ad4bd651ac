"""`dreamgym fit-world-model` end to end with the debug preset (tiny-random model) on trajectories the
real native WebShop env wrote with its oracle: run dir, config.yaml, summary keys, TensorBoard scalars
and `samples/wm` text, the peft adapter; `--resume` continues (global step grows); resumes that change
the model or the data are refused; dev/test data and a missing --data are refused."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.errors import DreamGymError
from dreamgym.metrics import check_metric_names
from dreamgym.types import write_trajectories
from tests.test_experience_sft import oracle_trajectories

DEBUG = "configs/world_model/debug.yaml"
SUMMARY_KEYS = {"train_loss", "val_loss", "tokens_per_s", "peak_mem_gb", "adapter_dir", "tokens_trained",
                "train_examples", "val_examples", "dropped_too_long", "real_transitions", "synthetic_transitions",
                "tokens_generated", "gpu_hours", "command", "run_dir", "config_path", "wall_clock_s", "seed"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "oracle.jsonl"
    write_trajectories(path, oracle_trajectories(6))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """One finished debug run (2 optimizer steps)."""
    run_dir = tmp_path_factory.mktemp("runs") / "wm"
    result = CliRunner().invoke(app, ["fit-world-model", "-c", DEBUG, "--data", str(data), "--run-dir", str(run_dir),
                                      "sft.max_steps=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.strip().splitlines()[-1] == str(run_dir)   # the run dir is printed last
    return run_dir


def tb_tags(run_dir) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, texts = set(), set()
    for events in (run_dir / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        texts |= set(acc.Tags()["tensors"])  # add_text is stored as a tensor summary
    return scalars, texts


def test_debug_preset_writes_config_summary_tb_and_adapter(run):
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["command"] == "fit-world-model" and summary["global_step"] == 2
    assert summary["train_examples"] > 0 and summary["val_examples"] > 0 and summary["tokens_trained"] > 0
    assert summary["real_transitions"] == summary["train_examples"] + summary["val_examples"]
    assert summary["synthetic_transitions"] == 0 and summary["gpu_hours"] == 0.0
    assert summary["train_loss"] > 0 and summary["val_loss"] > 0 and summary["val_loss_first"] > 0
    assert 0 < summary["answer_tokens_p50"] <= summary["answer_tokens_p90"] <= summary["answer_tokens_max"]
    assert summary["tokens_per_s"] > 0 and summary["peak_mem_gb"] > 0
    assert (run / "config.yaml").is_file() and "tiny-random" in (run / "config.yaml").read_text()
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["input_files"]) == 1
    adapter = run / "checkpoints" / "adapter"
    assert summary["adapter_dir"] == str(adapter)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    scalars, texts = tb_tags(run)
    assert {"wm/loss", "wm/val_loss", "perf/tokens_per_s", "perf/padding_share", "wm/tokens_trained", "wm/grad_norm",
            "wm/lr"} <= scalars
    assert check_metric_names(scalars) == []
    assert "samples/wm/text_summary" in texts                              # add_text stores <tag>/text_summary


def test_resume_refuses_model_or_data_changes(run, data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["fit-world-model", "--data", str(data), "--run-dir", str(run), "--resume",
                                 "model.name=smollm2-135m", "sft.max_steps=3"])
    assert result.exit_code != 0 and isinstance(result.exception, DreamGymError)
    assert "model.name: 'tiny-random' -> 'smollm2-135m'" in str(result.exception)
    other = tmp_path / "other.jsonl"
    write_trajectories(other, oracle_trajectories(2))
    result = runner.invoke(app, ["fit-world-model", "--data", str(other), "--run-dir", str(run), "--resume"])
    assert isinstance(result.exception, DreamGymError) and "same data" in str(result.exception)


def test_resume_continues_from_last_checkpoint(run, data, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    result = CliRunner().invoke(app, ["fit-world-model", "--data", str(data), "--run-dir", str(resumed), "--resume",
                                      "sft.max_steps=3"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    before = json.loads((run / "summary.json").read_text())
    after = json.loads((resumed / "summary.json").read_text())
    assert after["global_step"] == 3 > before["global_step"]
    assert after["tokens_trained"] > before["tokens_trained"]                 # counters carried over
    assert "max_steps: 3" in (resumed / "config.yaml").read_text()


def test_dev_data_and_missing_data_are_refused(tmp_path):
    dev = tmp_path / "dev.jsonl"
    write_trajectories(dev, oracle_trajectories(1, split="dev"))
    runner = CliRunner()
    result = runner.invoke(app, ["fit-world-model", "-c", DEBUG, "--data", str(dev), "--run-dir", str(tmp_path / "r")])
    assert isinstance(result.exception, DreamGymError) and "'dev' split" in str(result.exception)
    result = runner.invoke(app, ["fit-world-model", "-c", DEBUG, "--run-dir", str(tmp_path / "r2")])
    assert isinstance(result.exception, DreamGymError) and "--data" in str(result.exception)
