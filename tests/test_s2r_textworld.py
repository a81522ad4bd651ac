"""The whole loop (collect, buffer, experience model, SFT, s2r --real-env textworld, real-only RL, evaluate)
on TextWorld games generated here, with tiny models: any registered env runs through the same code."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("textworld", reason="textworld is not installed (pip install 'dreamgym[textworld]')")

from dreamgym.cli import app  # noqa: E402


def test_quickstart_on_textworld(tmp_path):
    run = tmp_path / "qs"
    args = ["quickstart", "--env", "textworld", "--run-dir", str(run),
            "world_model_presets=[configs/world_model/debug.yaml]", "sft_presets=[configs/policy/offline_debug.yaml]",
            "rl_presets=[configs/policy/debug.yaml]", "demos=3", "failures=1", "eval_episodes=1",
            "rl_overrides=[max_iterations=1,s2r.real_budget=3,synthetic.max_steps=2]",
            "env.textworld.levels=[1]", "env.textworld.train_games=3", "env.textworld.dev_games=1",
            "env.textworld.test_games=1", f"env.textworld.cache_dir={tmp_path / 'games'}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env"] == "textworld" and summary["rows"]["oracle"]["episodes"] == 1
    s2r = json.loads((run / "steps" / "s2r" / "summary.json").read_text())
    assert s2r["real_env"] == "textworld" and 0 < s2r["phases"]["real"]["real_transitions"] <= 3
    assert s2r["phases"]["synthetic"]["synthetic_transitions"] > 0
