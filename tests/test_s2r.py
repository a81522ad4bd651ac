"""s2r end to end on tiny models: phase 1 in the synthetic env, phase 2 in the real env within the
real-transition budget (exactly, even mid-iteration), real transitions grow the buffer, the summary holds the
cost ledger per phase and real success before/after with Wilson intervals; an interrupted run resumes
without redoing finished work; any registered env works; train-policy's own budget cap."""

import gc
import json

import pytest
import torch
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import S2RConfig, TrainPolicyConfig, load_config
from dreamgym.data.budget import BUDGET_FLAG
from dreamgym.pipelines import evaluate as evaluate_module
from dreamgym.pipelines import train_policy as train_policy_module
from dreamgym.pipelines.s2r import s2r
from dreamgym.pipelines.train_policy import train_policy
from dreamgym.replay.buffer import ReplayBuffer

DEBUG = "configs/policy/debug.yaml"


def _summary(path):
    return json.loads((path / "summary.json").read_text())


def _models_in_memory() -> int:
    """Causal LMs the process still holds, reachable or not (uncollected garbage cycles count)."""
    return sum(isinstance(o, torch.nn.Module) and type(o).__name__.endswith("ForCausalLM") for o in gc.get_objects())


@pytest.fixture
def no_automatic_gc():
    """Full collections only where the code asks for one: what a phase leaves behind stays visible."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_s2r_cli_budget_buffer_and_ledger(tmp_path, tiny_world_model, monkeypatch, no_automatic_gc):
    run = tmp_path / "s2r"
    held = []  # models in memory as each evaluation starts: the earlier phases' must be gone (session 9's OOM)
    evaluate_policy = evaluate_module.evaluate_policy
    monkeypatch.setattr(evaluate_module, "evaluate_policy", lambda *a, **k: (held.append(_models_in_memory()),
                                                                             evaluate_policy(*a, **k))[1])
    res = CliRunner().invoke(app, ["s2r", "-c", DEBUG, "--real-env", "webshop", "--world-model",
                                   str(tiny_world_model / "adapter"), "--buffer", str(tiny_world_model / "buffer"),
                                   "--run-dir", str(run), "s2r.real_budget=5", "s2r.eval_episodes=2"])
    assert res.exit_code == 0, res.output
    s = _summary(run)
    p1, p2 = s["phases"]["synthetic"], s["phases"]["real"]
    assert (p1["iterations"], p1["real_transitions"]) == (2, 0) and p1["synthetic_transitions"] > 0
    assert s["real_budget"] == 5 and p2["real_transitions"] == 5 and p2["synthetic_transitions"] == 0
    assert p2["iterations"] == 1  # one iteration of 4 episodes x up to 3 turns would take 12; the cap cut it at 5
    assert s["real_transitions"] == 5 and s["synthetic_transitions"] == p1["synthetic_transitions"]
    for k in ("tokens_generated", "tokens_trained", "gpu_hours", "wall_clock_s"):
        assert k in p1 and k in p2
    assert {"eval_before", "synthetic", "eval_after_synthetic", "real", "eval_after", "total"} <= s["wall_clock_s"].keys()
    for rate in ("success_rate_before", "success_rate_after_synthetic", "success_rate"):
        lo, hi = s[f"{rate}_ci95"]
        assert 0.0 <= lo <= s[rate] <= hi <= 1.0
    assert s["eval_real_transitions"] > 0 and s["evaluations"]["before"]["episodes"] == 2
    assert s["adapter_dir"] == p2["adapter_dir"] and (run / "phase2_real" / "checkpoints" / "adapter").is_dir()
    rollouts = [json.loads(x) for x in (run / "phase2_real" / "rollouts.jsonl").read_text().splitlines()]
    assert sum(len(t["steps"]) for t in rollouts) == 5  # budget-ended steps are not transitions
    assert not any(st["info"].get(BUDGET_FLAG) for t in rollouts for st in t["steps"])
    before = ReplayBuffer.load(tiny_world_model / "buffer").counts()["real"]
    after = ReplayBuffer.load(run / "phase2_real" / "checkpoints" / "buffer").counts()
    assert after["real"] > before and after["synthetic"] > 0  # phase 2's real steps joined phase 1's buffer copy
    assert (run / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    assert held == [0, 0, 0] and s["peak_rss_mb"] > 0
    from dreamgym.metrics import check_metric_names, read_scalars

    assert check_metric_names(read_scalars(run)) == []             # the run's and both phases' curves


def test_s2r_resumes_after_an_interrupted_phase_2(tmp_path, tiny_world_model, monkeypatch):
    cfg = load_config(S2RConfig, [DEBUG], ["max_iterations=1", "s2r.real_budget=4", "s2r.eval_episodes=1"])
    run = tmp_path / "s2r"
    real_train = train_policy_module.train_policy

    def killed_in_phase_2(pcfg, **kwargs):
        if pcfg.train_env == "real":
            raise KeyboardInterrupt("killed")
        return real_train(pcfg, **kwargs)

    monkeypatch.setattr(train_policy_module, "train_policy", killed_in_phase_2)
    with pytest.raises(KeyboardInterrupt):
        s2r(cfg, str(tiny_world_model / "adapter"), str(tiny_world_model / "buffer"), run_dir=run, progress=False)
    phase1 = _summary(run / "phase1_synthetic")
    state = json.loads((run / "s2r_state.json").read_text())
    assert set(state["evals"]) == {"before", "after_synthetic"} and state["budget"] == 4
    monkeypatch.setattr(train_policy_module, "train_policy", real_train)
    with pytest.raises(ValueError, match="not empty"):  # no silent overwrite without --resume
        s2r(cfg, str(tiny_world_model / "adapter"), run_dir=run, progress=False)
    s = s2r(cfg, str(tiny_world_model / "adapter"), str(tiny_world_model / "buffer"), run_dir=run, resume=True,
            progress=False)
    assert _summary(run / "phase1_synthetic")["started_at"] == phase1["started_at"]  # phase 1 not redone
    assert s["phases"]["real"]["real_transitions"] == 4 and s["evaluations"]["before"] == state["evals"]["before"]
    again = s2r(cfg, str(tiny_world_model / "adapter"), run_dir=run, resume=True, progress=False)
    assert again["phases"] == s["phases"]  # a finished run resumes to the same result
    bad = load_config(S2RConfig, [DEBUG], ["max_iterations=1", "s2r.real_budget=9"])
    with pytest.raises(ValueError, match="budget"):
        s2r(bad, str(tiny_world_model / "adapter"), run_dir=run, resume=True, progress=False)


def test_s2r_with_another_registered_env(tmp_path, tiny_world_model):
    run = tmp_path / "corridor"
    res = CliRunner().invoke(app, ["s2r", "-c", DEBUG, "--real-env", "choice-corridor", "--world-model",
                                   str(tiny_world_model / "adapter"), "--run-dir", str(run), "max_iterations=1",
                                   "curriculum.enabled=false", "s2r.eval_episodes=1"])
    assert res.exit_code == 0, res.output
    s = _summary(run)
    # default budget: 10% of 1 iteration x 4 rollouts x 3 turns = 1.2 -> 2
    assert s["real_env"] == "choice-corridor" and s["real_budget"] == 2 and s["real_budget_reference"] == 12
    assert s["phases"]["real"]["real_transitions"] == 2


def test_train_policy_real_budget_is_a_hard_cap(tmp_path):
    cfg = load_config(TrainPolicyConfig, [DEBUG], ["train_env=real", "real_transition_budget=7", "max_iterations=5"])
    s = train_policy(cfg, run_dir=tmp_path / "run", progress=False)
    assert s["real_transitions"] == 7 and s["real_transition_budget"] == 7 and s["iterations"] == 1
