"""evaluate: LLM policy rows (base, adapter) and scripted reference rows with Wilson intervals."""

import json

from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import ModelConfig
from dreamgym.models.loading import load_model, save_adapter


def test_evaluate_adapter_with_reference_rows(tmp_path):
    model, _ = load_model(ModelConfig(name="tiny-random"), for_training=True)
    save_adapter(model, tmp_path / "adapter")
    args = ["evaluate", "--env", "webshop", "--policy", str(tmp_path / "adapter"), "--split", "dev", "--episodes", "4",
            "--run-dir", str(tmp_path / "run"), "model.name=tiny-random", "rollout.max_turns=5", "rollout.max_new_tokens=6"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"success_rate", "mean_reward", "episodes", "ci95", "rows"} <= s.keys()
    assert set(s["rows"]) == {"policy", "oracle", "random"} and s["episodes"] == 4
    assert s["rows"]["oracle"]["success_rate"] == 1.0 and s["success_rate"] == 0.0
    assert s["ci95"] == s["rows"]["policy"]["success_rate_ci95"] and s["ci95"][0] == 0.0
    assert len((tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()) == 4


def test_evaluate_scripted_policy_only(tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--policy", "oracle", "--episodes", "3", "references=false",
                                   "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(s["rows"]) == {"oracle"} and s["success_rate"] == 1.0 and s["split"] == "test"


class NoOracleCorridor(__import__("dreamgym.envs.toy", fromlist=["ChoiceCorridorEnv"]).ChoiceCorridorEnv):
    """The corridor without a scripted oracle (like `http` or `webarena`)."""

    def oracle(self):
        return None


def test_reference_rows_leave_out_the_oracle_of_an_env_without_one(tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--env", "tests.test_evaluate:NoOracleCorridor", "--policy", "random",
                                   "--episodes", "2", "--run-dir", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert set(summary["rows"]) == {"random"} and summary["policy"] == "random"
