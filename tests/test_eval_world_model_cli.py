"""`dreamgym eval-world-model` end to end on a tiny random world model (a saved LoRA adapter) and WebShop
oracle trajectories: summary.json keys for every mode, TensorBoard events, retrieval from a buffer that
is left unchanged; without a buffer full == no_retrieval and the summary says so; clear user errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from tests.audit_fixtures import write_audit_inputs
from dreamgym.config import ConfigError, EvalWorldModelConfig, load_config
from dreamgym.errors import DreamGymError
from dreamgym.runs import file_sha256

PRESET = "configs/world_model/eval_debug.yaml"
SMALL = ["max_transitions=4", "synthetic.max_new_tokens=8", "synthetic.prompt.state_chars=200",
         "synthetic.prompt.demo_state_chars=64", "synthetic.prompt.history_state_chars=64"]
FLAT_KEYS = {"reward_accuracy", "majority_baseline_accuracy", "terminal_balanced_accuracy", "success_precision",
             "success_recall", "next_state_exact_match", "next_state_similarity", "parse_fail_rate", "n_transitions"}
SPLIT_KEYS = {f"{k}_{g}" for k in ("next_state_exact_match", "next_state_similarity")
              for g in ("deterministic", "other")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Oracle trajectories (held-out file + a hashing buffer of other ones) and a tiny-random adapter."""
    return write_audit_inputs(tmp_path_factory.mktemp("eval_wm"), n_tasks=4)


def test_cli_writes_summary_for_every_mode_with_retrieval(inputs, tmp_path):
    records_hash = file_sha256(inputs / "buffer" / "records.jsonl")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval-world-model", "-c", PRESET, *SMALL,
                                      "--data", str(inputs / "held_out.jsonl"),
                                      "--world-model", str(inputs / "adapter"), "--buffer", str(inputs / "buffer"),
                                      "--no-reasoning-model", str(inputs / "adapter"),
                                      "--run-dir", str(run_dir), "--seed", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert FLAT_KEYS | SPLIT_KEYS <= summary.keys() and summary["seed"] == 3
    assert set(summary["by_mode"]) == {"full", "no_retrieval", "no_reasoning"}
    for mode, m in summary["by_mode"].items():
        assert FLAT_KEYS | SPLIT_KEYS | {"tokens_generated", "prompt_tokens", "transitions_per_s"} <= m.keys(), mode
        assert m["predictions_from"] == mode                  # retrieval on: three distinct passes
        assert m["n_transitions"] == 4 and m["parse_fail_rate"] == 1.0   # random model: no tags
        for key in (FLAT_KEYS | SPLIT_KEYS) - {"n_transitions"}:
            assert 0.0 <= m[key] <= 1.0, (mode, key)
    assert summary["n_terminal"] == 2                          # both purchases kept by the stratified sample
    assert summary["retrieval"] is True and summary["notes"] == [] and summary["held_out_in_buffer"] == 0
    assert summary["no_reasoning_source"] == f"adapter:{inputs / 'adapter'}"
    assert summary["mode_settings"]["no_reasoning"] == {"model": "no_reasoning_model", "retrieval": True,
                                                        "reasoning": False}
    assert summary["mode_settings"]["no_retrieval"] == {"model": "world_model", "retrieval": False, "reasoning": True}
    assert summary["by_mode"]["full"]["prompt_tokens"] > summary["by_mode"]["no_retrieval"]["prompt_tokens"]
    assert summary["tokens_generated"] == sum(m["tokens_generated"] for m in summary["by_mode"].values())
    assert {"load", "predict_full", "predict_no_retrieval", "predict_no_reasoning"} <= summary["wall_clock_s"].keys()
    for mode in ("full", "no_retrieval", "no_reasoning"):
        assert list((run_dir / "tb" / mode).glob("events.out.tfevents.*")), mode
    assert (run_dir / "config.yaml").is_file() and result.output.strip().endswith(str(run_dir))
    assert file_sha256(inputs / "buffer" / "records.jsonl") == records_hash   # the audit never writes back


def test_without_buffer_full_equals_no_retrieval_and_says_so(inputs, tmp_path):
    from dreamgym.pipelines.eval_world_model import eval_world_model

    cfg = load_config(EvalWorldModelConfig, [PRESET], [*SMALL, "max_transitions=2", "modes=[full,no_retrieval]"])
    summary = eval_world_model(cfg, [inputs / "held_out.jsonl"], run_dir=tmp_path / "run")
    assert summary["retrieval"] is False and summary["buffer"] is None and summary["world_model"] is None
    assert summary["no_reasoning_source"] == "same model, no-reasoning prompt"
    assert any("full == no_retrieval" in n for n in summary["notes"])
    assert summary["by_mode"]["no_retrieval"]["predictions_from"] == "full"
    assert summary["by_mode"]["no_retrieval"]["reward_accuracy"] == summary["reward_accuracy"]
    assert summary["synthetic_transitions"] == 2                # one pass only
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb" / "full"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"wm/reward_accuracy", "wm/next_state_exact_match_other", "wm/parse_fail/missing_tags"} <= tags
    assert acc.Scalars("wm/parse_fail_rate")[0].value == 1.0


def test_user_errors_are_clear(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval-world-model", "-c", PRESET, "--run-dir", str(tmp_path / "r")])
    assert isinstance(result.exception, DreamGymError) and "needs --data" in str(result.exception)
    result = runner.invoke(app, ["eval-world-model", "-c", PRESET, "--data", str(tmp_path / "missing.jsonl"),
                                 "--run-dir", str(tmp_path / "r2")])
    assert isinstance(result.exception, DreamGymError)
    assert "missing.jsonl: trajectory file not found" in str(result.exception)
    with pytest.raises(ConfigError, match="modes"):
        load_config(EvalWorldModelConfig, [PRESET], ["modes=[full,dreaming]"])
