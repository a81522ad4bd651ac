"""The metric-name list: namespaces, naming, and agreement with the parser's reason set."""

from __future__ import annotations

import re

from dreamgym import metrics
from dreamgym.experience import prompts
from dreamgym.experience.prompts import ParseStats
from dreamgym.metrics import METRICS, NAMESPACES, PARSE_FAIL_REASONS, check_metric_names

NAME = re.compile(r"[a-z][a-z0-9_]*/[a-z][a-z0-9_]*(?:/[a-z][a-z0-9_]*)?")


def test_every_name_is_namespaced_snake_case_and_described():
    assert NAMESPACES == ("wm/", "rollout/", "ppo/", "grpo/", "curriculum/", "eval/", "perf/", "cost/", "sft/", "dpo/")
    for name, meaning in METRICS.items():
        assert name.startswith(NAMESPACES), name
        assert NAME.fullmatch(name), f"{name} is not namespace/snake_case"
        assert isinstance(meaning, str) and meaning.strip() and "\n" not in meaning, name
    assert {n.split("/")[0] + "/" for n in METRICS} == set(NAMESPACES)       # every namespace is used


def test_parse_fail_reasons_match_the_parser():
    assert PARSE_FAIL_REASONS == prompts.PARSE_FAIL_REASONS
    per_reason = {n.removeprefix("wm/parse_fail/") for n in METRICS if n.startswith("wm/parse_fail/")}
    assert per_reason == set(prompts.PARSE_FAIL_REASONS)
    assert check_metric_names(ParseStats().as_metrics()) == []              # what the parser logs is listed


def test_names_the_brief_requires_are_listed():
    required = [
        "wm/loss", "wm/val_loss", "wm/parse_fail_rate", "wm/reward_accuracy", "wm/terminal_balanced_accuracy",
        "wm/next_state_exact_match", "wm/next_state_similarity", "wm/tokens_per_s",
        "rollout/success_rate", "rollout/mean_reward", "rollout/episode_length", "rollout/repeated_action_rate",
        "rollout/invalid_action_rate", "ppo/policy_loss", "ppo/value_loss", "ppo/approx_kl", "ppo/clipfrac",
        "ppo/entropy", "ppo/explained_variance", "grpo/policy_loss", "grpo/kl", "grpo/zero_var_groups",
        "curriculum/pool_size", "curriculum/synthetic_share", "curriculum/mean_variance", "eval/success_rate",
        "eval/mean_reward", "eval/sim_real_gap", "perf/tokens_per_s", "perf/rollout_s", "perf/train_s",
        "cost/real_transitions", "cost/synthetic_transitions", "cost/tokens_generated", "cost/tokens_trained",
        "cost/gpu_hours"]
    assert check_metric_names(required) == []


def test_check_metric_names_reports_unknown_once_in_order():
    names = ["rollout/success_rate", "reward", "ppo/clip_frac", "reward", "samples/rollout", "epoch", "wm/loss"]
    assert check_metric_names(names) == ["reward", "ppo/clip_frac"]
    assert check_metric_names([]) == []
    assert set(metrics.__all__) >= {"METRICS", "NAMESPACES", "check_metric_names", "PARSE_FAIL_REASONS"}


def test_read_scalars_gathers_every_event_file_below_a_run_and_filters_by_prefix(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from dreamgym.metrics import read_scalars

    for sub, step in (("tb", 0), ("phase/tb", 1)):
        w = SummaryWriter(str(tmp_path / sub))
        w.add_scalar("eval/success_rate", 0.5 + step, step)
        w.add_scalar("perf/step_s", 2.0, step)
        w.close()
    assert read_scalars(tmp_path, ["eval/"]) == {"eval/success_rate": [(0, 0.5), (1, 1.5)]}
    assert set(read_scalars(tmp_path)) == {"eval/success_rate", "perf/step_s"}
