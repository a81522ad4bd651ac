"""`dreamgym quickstart` end to end on tiny models (seconds): every step runs, the report compares every
policy on the same real tasks, and `--resume` keeps finished steps. The report's pure parts: the table and
the PNG."""

import json
from dataclasses import replace

import pytest
from PIL import Image
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.errors import DreamGymError
from dreamgym.pipelines.quickstart import STEPS
from dreamgym.pipelines.report import draw_bars, markdown_table

TINY = ["world_model_presets=[configs/world_model/debug.yaml]", "sft_presets=[configs/policy/offline_debug.yaml]",
        "rl_presets=[configs/policy/debug.yaml]", "demos=4", "failures=2", "near_misses=2", "eval_episodes=2",
        "rl_overrides=[max_iterations=1,s2r.real_budget=3,synthetic.max_steps=2]"]


def test_quickstart_end_to_end_and_resume(tmp_path):
    run = tmp_path / "qs"
    res = CliRunner().invoke(app, ["quickstart", "--run-dir", str(run), *TINY])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["rows"]) == {"base", "sft", "synthetic_only", "s2r", "real_only", "oracle", "random"}
    assert all(r["episodes"] == 2 for r in summary["rows"].values())
    assert summary["success_rate_oracle_ci95"] == summary["rows"]["oracle"]["success_rate_ci95"]
    assert summary["real_budget"] == 3
    assert set(summary["results"]) == {"base", "sft", "synthetic_only", "s2r", "real_only_same_budget", "oracle", "random"}
    assert summary["results"]["real_only_same_budget"]["success_rate"] == summary["rows"]["real_only"]["success_rate"]
    assert summary["results"]["base"]["real_transitions"] == 0 and summary["results"]["sft"]["real_transitions"] > 0
    real_only = json.loads((run / "steps" / "real_only" / "summary.json").read_text())
    s2r = json.loads((run / "steps" / "s2r" / "summary.json").read_text())
    assert real_only["real_transitions"] <= 3 and s2r["phases"]["real"]["real_transitions"] <= 3
    assert sorted(p.name for p in (run / "steps").iterdir()) == sorted(STEPS)
    report = (run / "report.md").read_text()
    assert "DreamGym-S2R" in report and "Smoke scale" in report and "2 noisy-oracle (epsilon 0.3)" in report
    noisy = json.loads((run / "steps" / "collect_noisy" / "summary.json").read_text())
    assert noisy["policy"] == "noisy-oracle" and noisy["episodes"] == 2
    annotated = json.loads((run / "steps" / "annotate" / "summary.json").read_text())
    assert annotated["records"] == sum(json.loads((run / "steps" / s / "summary.json").read_text())["transitions"]
                                             for s in ("collect_oracle", "collect_random", "collect_noisy"))
    assert Image.open(run / "report.png").size[0] == 900
    stamp = (run / "steps" / "s2r" / "summary.json").stat().st_mtime_ns
    (run / "summary.json").unlink()
    res = CliRunner().invoke(app, ["quickstart", "--run-dir", str(run), "--resume"])
    assert res.exit_code == 0, res.output
    assert (run / "steps" / "s2r" / "summary.json").stat().st_mtime_ns == stamp, "finished steps are kept"
    assert json.loads((run / "summary.json").read_text())["rows"] == summary["rows"]


def test_markdown_table_and_bars(tmp_path):
    rows = {"sft": {"success_rate": 0.25, "success_rate_ci95": [0.05, 0.7], "mean_reward": 0.5, "avg_steps": 4.0,
                    "episodes": 4},
            "oracle": {"success_rate": 1.0, "success_rate_ci95": [0.51, 1.0], "mean_reward": 1.0, "avg_steps": 4.5,
                       "episodes": 4}}
    table = markdown_table(rows, {"sft": {"real": 12, "synthetic": 0}})
    assert table.splitlines()[2] == "| SFT warm start | 0.250 | [0.050, 0.700] | 0.500 | 4.00 | 4 | 12 | 0 |"
    assert table.splitlines()[3].endswith("| 4 | - | - |")
    draw_bars(rows, tmp_path / "b.png", "t")
    img = Image.open(tmp_path / "b.png").convert("RGB")
    assert img.size == (900, 50 + 2 * 40 + 40)
    span = 900 - 300 - 40
    y = 50 + 40 + 3  # inside the oracle bar (above its whisker line): filled up to its rate (1.0)
    assert img.getpixel((300 + span - 5, y)) == (70, 120, 190)
    assert img.getpixel((300 + int(span * 0.25) + 5, 50 + 3)) == (255, 255, 255)


def test_cpu_study_and_quickstart_presets_load():
    """Every step config the quickstart would build from the shipped presets loads (typos fail here)."""
    from dreamgym.config import FitWorldModelConfig, S2RConfig, SFTPolicyConfig, load_config
    from dreamgym.config.quickstart import QuickstartConfig
    from dreamgym.pipelines.quickstart import _check_same_layout, resolve_preset

    for files in ([], ["configs/cpu_study.yaml"]):
        cfg = load_config(QuickstartConfig, files, [])
        wm = load_config(FitWorldModelConfig, [resolve_preset(f) for f in cfg.world_model_presets], cfg.world_model_overrides)
        sft = load_config(SFTPolicyConfig, [resolve_preset(f) for f in cfg.sft_presets], cfg.sft_overrides)
        rl = load_config(S2RConfig, [resolve_preset(f) for f in cfg.rl_presets], cfg.rl_overrides)
        _check_same_layout(sft, rl)
        assert rl.synthetic.prompt == wm.prompt, "the synthetic env prompts the experience model as it was trained"
        assert rl.rollout.action_space == "choice" and rl.model.name == "smollm2-135m"
    _check_same_layout(sft, replace(rl, rollout=replace(rl.rollout, temperature=1.5)))   # sampling may differ
    with pytest.raises(DreamGymError, match="rollout"):                                  # the layout may not
        _check_same_layout(sft, replace(rl, rollout=replace(rl.rollout, observation_chars=300)))
