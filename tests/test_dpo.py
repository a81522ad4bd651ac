"""DPO: the loss and its stats to exact values, sequence sums blind to masked positions, preference-pair
construction (failed-trajectory rejections first, seeded random ones, slot rule, split hygiene) by hand,
and `dpo-policy` end to end on the tiny model."""

import json
import math

import torch
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.rl.dpo import dpo_loss, sequence_logps
from dreamgym.rl.sft_data import action_as_offered, preference_pairs, select_trajectories
from dreamgym.types import Step, Task, Trajectory
from dreamgym.metrics import check_metric_names
from tests.offline_fixtures import tb_scalars


def test_dpo_loss_exact_values_and_stats():
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: z = 0.5 * (0.5 - (-0.5)) = 0.5; pair 1: z = 0.5 * (-1 - 1) = -1
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2
    assert abs(loss.item() - expected) < 1e-6 and abs(expected - 0.8936693) < 1e-6
    assert stats == {"chosen_reward": -0.125, "rejected_reward": 0.125, "reward_margin": -0.25, "reward_accuracy": 0.5}


def test_dpo_loss_label_smoothing_and_identity_with_reference():
    one = torch.tensor([-1.0])
    loss, _ = dpo_loss(one, torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.5,
                       label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-0.5)) + 0.1 * math.log1p(math.exp(0.5))
    assert abs(loss.item() - expected) < 1e-6
    same, stats = dpo_loss(one, one * 3, one, one * 3, beta=0.1)  # policy == reference: log 2, no margin
    assert abs(same.item() - math.log(2)) < 1e-6 and stats["reward_accuracy"] == 0.0


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = torch.tensor([-1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-1.0]), torch.tensor([-1.0]), beta=1.0)
    loss.backward()
    assert pc.grad.item() == -0.5 and pr.grad.item() == 0.5  # d/dz -log sigmoid(z) at 0 = -1/2


def test_sequence_logps_sums_masked_positions_only():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, float("nan"), -0.25]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    torch.testing.assert_close(sequence_logps(logp, mask), torch.tensor([-4.0, -0.75]))


def _traj(tid, task, actions, success, split="train", source="real"):
    obs = {"search": ("WebShop search page", ["search[...]"]),
           "results": ("Results: b01 red shoes, b02 blue shoes", ["click[back to search]", "click[b01]", "click[b02]"]),
           "item": ("Item b01 red shoes", ["click[< prev]", "click[buy now]"])}
    steps = [Step(t=i, observation=obs[page][0], available_actions=obs[page][1], action=a, reward=0.0, done=False)
             for i, (page, a) in enumerate(actions)]
    return Trajectory(id=tid, source=source, env="webshop", task=task, steps=steps, final_reward=float(success),
                      success=success, policy="oracle" if success else "random", seed=0)


TASK = Task(id="webshop:7", instruction="find red shoes", env="webshop", split="train")
DEMO = _traj("demo", TASK, [("search", "search[red shoes]"), ("results", "click[b01]"), ("item", "click[buy now]")], True)
FAILED = _traj("fail", TASK, [("search", "search[blue]"), ("results", "click[b02]")], False)


def test_pairs_prefer_failed_actions_then_random_and_skip_other_fillings_of_the_chosen_slot():
    pairs, counts = preference_pairs([DEMO], [FAILED], "free", "failed_then_random", seed=0)
    assert counts == {"failed": 1, "random": 1, "no_alternative": 1}
    # t=0: the only other action is another search query (same slot): no pair, even from the failed run
    assert [(p.t, p.chosen, p.rejected, p.source) for p in pairs] == [
        (1, "click[b01]", "click[b02]", "failed"), (2, "click[buy now]", "click[< prev]", "random")]
    assert all(p.trajectory_id == "demo" and p.task_id == "webshop:7" for p in pairs)


def test_random_rejections_are_seeded_and_never_the_chosen_action():
    a, counts = preference_pairs([DEMO], [FAILED], "free", "random", seed=3)
    b, _ = preference_pairs([DEMO], [FAILED], "free", "random", seed=3)
    assert [(p.rejected, p.source) for p in a] == [(p.rejected, p.source) for p in b]
    assert counts == {"failed": 0, "random": 2, "no_alternative": 1}
    assert a[0].rejected in ("click[back to search]", "click[b02]") and a[1].rejected == "click[< prev]"


def test_choice_mode_offers_slot_actions_filled_with_the_instruction():
    assert action_as_offered("search[red shoes]", ["search[...]"], "find red shoes", "choice") == "search[find red shoes]"
    assert action_as_offered("search[red shoes]", ["search[...]"], "find red shoes", "free") == "search[red shoes]"
    assert action_as_offered("click[b01]", ["click[b01]"], "x", "choice") == "click[b01]"


def test_only_train_split_real_trajectories_are_used():
    dev = _traj("d", Task("webshop:1", "x", "webshop", "dev"), [("item", "click[buy now]")], True, split="dev")
    syn = _traj("s", TASK, [("item", "click[buy now]")], True, source="synthetic")
    demos, failed, skipped = select_trajectories([DEMO, FAILED, dev, syn], only_success=True)
    assert [t.id for t in demos] == ["demo"] and [t.id for t in failed] == ["fail"]
    assert skipped == {"dev": 1, "synthetic": 1, "failed": 1}


def test_dpo_policy_cli_from_sft_warm_start(tmp_path, offline_data):
    sft = tmp_path / "sft"
    res = CliRunner().invoke(app, ["sft-policy", "-c", "configs/policy/offline_debug.yaml", "--data", str(offline_data),
                                   "--run-dir", str(sft), "train.max_epochs=1"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "dpo"
    res = CliRunner().invoke(app, ["dpo-policy", "-c", "configs/policy/offline_debug.yaml", "--data", str(offline_data),
                                   "--policy", str(sft), "--run-dir", str(run), "train.max_epochs=3", "dpo.beta=0.5"])
    assert res.exit_code == 0, res.output
    s = json.loads((run / "summary.json").read_text())
    assert s["mode"] == "dpo" and s["pairs"] > 0 and s["rejected_sources"]["failed"] > 0
    assert abs(s["train_loss_first"] - math.log(2)) < 1e-4  # the reference is the starting policy
    assert s["train_loss"] < s["train_loss_first"]
    assert (run / "checkpoints" / "adapter" / "adapter_config.json").is_file() and s["policy_init"] == str(sft)
    assert (run / "config.yaml").is_file()
    scalars = tb_scalars(run)
    assert {"dpo/loss", "dpo/val_loss", "dpo/reward_accuracy", "dpo/val_reward_accuracy", "dpo/grad_norm"} <= scalars
    assert check_metric_names(scalars) == []
