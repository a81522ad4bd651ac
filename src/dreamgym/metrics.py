"""The one list of every TensorBoard scalar name dreamgym writes, with its meaning (style §7).

Modules that log scalars use names from `METRICS`; tests check logged keys with `check_metric_names`.
Scalars live in the namespaces of `NAMESPACES`; free text (episodes as markdown, predicted vs real next
states) goes under `samples/`, which is not a scalar namespace. Names are snake_case with units as
suffixes (`_s`, `_per_s`). Rates are shares in [0, 1]; `cost/` values are running totals of the run.
Add a name here before logging it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["NAMESPACES", "TEXT_NAMESPACES", "LIGHTNING_BUILTINS", "PARSE_FAIL_REASONS", "METRICS",
           "check_metric_names", "read_scalars"]

NAMESPACES: tuple[str, ...] = ("wm/", "rollout/", "ppo/", "grpo/", "curriculum/", "eval/", "perf/", "cost/", "sft/",
                               "dpo/")
TEXT_NAMESPACES: tuple[str, ...] = ("samples/",)
LIGHTNING_BUILTINS: tuple[str, ...] = ("epoch", "hp_metric")
"""keys Lightning writes by itself; `check_metric_names` accepts them"""
PARSE_FAIL_REASONS: tuple[str, ...] = (
    "missing_tags", "empty_state", "bad_reward", "bad_done", "missing_reasoning", "truncated")
"""the fixed reason set of `dreamgym.experience.prompts.parse_transition` (a test keeps both equal)"""

_PARSE_FAIL_MEANING = {
    "missing_tags": "no <state> block at all",
    "empty_state": "the <state> block is empty",
    "bad_reward": "reward missing, not a number or outside [0, 1]",
    "bad_done": "done missing or not true/false/yes/no/1/0",
    "missing_reasoning": "reasoning required but absent or empty",
    "truncated": "output cut off inside an open block",
}

_FORCED_MEANING = {
    "think_closed": "closed a <think> block still open at the token budget",
    "state_clipped": "cut a next state past its character budget to its head and added ' ...'",
    "state_closed": "closed a <state> block at its character or token budget",
    "outcome_opened": "added the <reward> block after a closed state",
}

METRICS: dict[str, str] = {
    # -- experience model M_exp: SFT (Eq. 5), parsing, fidelity (eps_R, eps_P of Thm. 1) ----------
    "wm/loss": "SFT joint loss (Eq. 5): mean NLL over reasoning + next-state (+ outcome) target tokens",
    "wm/reasoning_loss": "mean NLL over reasoning-trace tokens of the target",
    "wm/state_loss": "mean NLL over next-state tokens of the target",
    "wm/outcome_loss": "mean NLL over reward/done tokens of the target",
    "wm/val_loss": "joint SFT loss on held-out transitions",
    "wm/val_state_loss": "next-state NLL on held-out transitions",
    "wm/lr": "learning rate of the experience-model optimizer",
    "wm/grad_norm": "global gradient norm before clipping (experience-model SFT)",
    "wm/tokens_trained": "target tokens that received the SFT loss so far (experience model)",
    "wm/parse_fail_rate": "experience-model outputs replaced by the no-op fallback",
    **{f"wm/parse_fail/{r}": f"share of outputs that fell back because: {m}" for r, m in _PARSE_FAIL_MEANING.items()},
    "wm/forced_rate": "experience-model answers that bounded decoding edited (a runaway block closed at its budget)",
    **{f"wm/forced/{k}": f"share of answers whose bounded decoding {m}" for k, m in _FORCED_MEANING.items()},
    "wm/reward_accuracy": "held-out transitions whose predicted reward is within reward_tolerance (0.1) of the real one",
    "wm/majority_baseline_accuracy": "reward accuracy of always predicting the most frequent real reward",
    "wm/reward_mae": "mean |predicted - real| reward on held-out transitions (eps_R estimate)",
    "wm/terminal_balanced_accuracy": "balanced accuracy of predicted success (reward) on real terminal transitions",
    "wm/done_accuracy": "held-out transitions whose predicted done flag equals the real one",
    "wm/success_precision": "share of predicted successes (done, reward 1) that are real successes",
    "wm/success_recall": "share of real successes (done, reward 1) predicted as successes",
    "wm/next_state_exact_match": "held-out transitions whose predicted next state equals the real one",
    "wm/next_state_similarity": "mean text similarity of predicted vs real next state in [0, 1] (1 - eps_P proxy)",
    "wm/next_state_exact_match_deterministic": "next-state exact match on deterministic transitions (search, product click)",
    "wm/next_state_exact_match_other": "next-state exact match on the other (non-deterministic) transitions",
    "wm/next_state_similarity_deterministic": "next-state similarity on deterministic transitions (search, product click)",
    "wm/next_state_similarity_other": "next-state similarity on the other (non-deterministic) transitions",
    "wm/transitions_per_s": "held-out transitions predicted per wall-clock second (fidelity audit)",
    "wm/output_tokens": "mean tokens generated per experience-model call",
    "wm/tokens_per_s": "experience-model tokens generated per wall-clock second",
    # -- policy rollouts (real or synthetic env) ----------------------------------------------
    "rollout/success_rate": "share of episodes ending with reward 1.0",
    "rollout/mean_reward": "mean final reward per episode",
    "rollout/episode_length": "mean number of agent turns per episode",
    "rollout/episodes": "episodes rolled out this iteration",
    "rollout/truncated_rate": "share of episodes cut at the turn limit",
    "rollout/repeated_action_rate": "turns repeating the previous action (echo-trap alarm)",
    "rollout/distinct_action_rate": "distinct actions / turns per episode, averaged (action diversity)",
    "rollout/invalid_action_rate": "turns whose action the env rejected as invalid/unavailable",
    "rollout/action_parse_fail_rate": "turns whose policy output held no parsable action",
    "rollout/response_tokens": "mean tokens sampled by the policy per turn",
    "rollout/synthetic_share": "share of this iteration's transitions produced by the experience model",
    # -- PPO --------------------------------------------------------------------------------------
    "ppo/policy_loss": "clipped surrogate policy loss (token mean over response_mask)",
    "ppo/value_loss": "critic loss against GAE returns",
    "ppo/entropy": "mean policy entropy over response tokens",
    "ppo/approx_kl": "approximate KL(old || new) over response tokens (k3 estimator)",
    "ppo/clipfrac": "share of response tokens whose ratio left [1 - eps, 1 + eps]",
    "ppo/value_clipfrac": "share of response tokens whose value update was clipped",
    "ppo/explained_variance": "1 - Var(returns - values) / Var(returns)",
    "ppo/advantage_mean": "mean GAE advantage over response tokens (before normalisation)",
    "ppo/advantage_std": "std of GAE advantages over response tokens (before normalisation)",
    "ppo/return_mean": "mean GAE return over response tokens",
    "ppo/value_mean": "mean critic value over response tokens",
    "ppo/grad_norm": "global gradient norm before clipping",
    "ppo/lr": "learning rate of the policy optimizer",
    "ppo/early_stopped": "1 when target_kl stopped this iteration's update epochs early, else 0",
    "ppo/dual_clipfrac": "share of response tokens (negative advantage) whose loss the dual clip capped",
    "ppo/ratio_mean": "mean new/old probability ratio over response tokens",
    "ppo/updates": "optimizer updates made this iteration",
    # -- GRPO -------------------------------------------------------------------------------------
    "grpo/policy_loss": "clipped surrogate loss with group-normalised advantages",
    "grpo/kl": "KL to the reference policy (k3 estimator) over response tokens",
    "grpo/approx_kl": "approximate KL(old || new) over response tokens",
    "grpo/clipfrac": "share of response tokens whose ratio left [1 - eps, 1 + eps]",
    "grpo/entropy": "mean policy entropy over response tokens",
    "grpo/zero_var_groups": "share of task groups with identical rewards (no signal)",
    "grpo/group_reward_std": "mean within-group reward std",
    "grpo/grad_norm": "global gradient norm before clipping",
    "grpo/lr": "learning rate of the policy optimizer",
    "grpo/dual_clipfrac": "share of response tokens (negative advantage) whose loss the dual clip capped",
    "grpo/ratio_mean": "mean new/old probability ratio over response tokens",
    "grpo/updates": "optimizer updates made this iteration (0 when every group had zero variance)",
    "grpo/score_mean": "mean sequence score (outcome reward) of this iteration's rollouts",
    # -- offline baselines: policy SFT (behaviour cloning) and DPO --------------------------------
    "sft/loss": "policy SFT: token-mean NLL over demonstrated action tokens (context tokens never count)",
    "sft/val_loss": "policy SFT: the same NLL on held-out demonstration episodes",
    "sft/tokens_trained": "action tokens that received the SFT loss so far",
    "sft/grad_norm": "policy SFT: global gradient norm before clipping",
    "dpo/grad_norm": "DPO: global gradient norm before clipping",
    "dpo/loss": "DPO loss -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), mean over pairs",
    "dpo/val_loss": "DPO loss on held-out preference pairs",
    "dpo/reward_accuracy": "share of pairs whose implicit reward margin is positive",
    "dpo/val_reward_accuracy": "reward accuracy on held-out preference pairs",
    "dpo/reward_margin": "mean implicit reward margin beta * (log-ratio chosen - log-ratio rejected)",
    "dpo/chosen_reward": "mean implicit reward beta * (log pi - log pi_ref) of the chosen actions",
    "dpo/rejected_reward": "mean implicit reward beta * (log pi - log pi_ref) of the rejected actions",
    "dpo/tokens_trained": "chosen + rejected action tokens that received the DPO loss so far",
    # -- curriculum task generator -----------------------------------------------------------
    "curriculum/pool_size": "tasks the curriculum can draw from (seeds + accepted variations)",
    "curriculum/synthetic_tasks": "generated task variations currently in the pool (<= max_synthetic)",
    "curriculum/seed_tasks": "tasks chosen as seeds (top V_tau) for variation this iteration",
    "curriculum/synthetic_share": "share of this iteration's tasks that are generated variations (<= lambda)",
    "curriculum/mean_variance": "mean reward variance V_tau of the tasks drawn this iteration",
    "curriculum/max_variance": "largest reward variance V_tau in the pool",
    "curriculum/selected_success_rate": "mean success rate of the tasks chosen for variation",
    "curriculum/new_tasks": "task variations accepted this iteration",
    "curriculum/rejected_variations": "generated lines dropped (empty, too short/long, duplicate)",
    # -- evaluation in the real env -------------------------------------------------------------
    "eval/success_rate": "share of evaluation episodes ending with reward 1.0",
    "eval/success_rate_ci95_lo": "lower end of the Wilson 95% interval of eval/success_rate",
    "eval/success_rate_ci95_hi": "upper end of the Wilson 95% interval of eval/success_rate",
    "eval/mean_reward": "mean final reward per evaluation episode",
    "eval/episode_length": "mean agent turns per evaluation episode",
    "eval/sim_real_gap": "synthetic minus real success rate of the same policy",
    # -- speed ----------------------------------------------------------------------------------
    "perf/tokens_per_s": "sampled policy tokens per wall-clock second during rollout; in SFT "
                         "(fit-world-model): non-padding tokens per second of train-step compute",
    "perf/padding_share": "share of padding tokens in this training batch (SFT length bucketing)",
    "perf/rollout_s": "wall-clock seconds spent producing this iteration's rollouts",
    "perf/wm_s": "wall-clock seconds spent in experience-model generation this iteration",
    "perf/retrieval_s": "wall-clock seconds spent in replay-buffer retrieval this iteration",
    "perf/env_s": "wall-clock seconds spent in real-env steps this iteration",
    "perf/train_s": "wall-clock seconds spent in optimizer updates this iteration",
    "perf/iteration_s": "wall-clock seconds of the whole iteration",
    "perf/iteration": "RL iterations completed so far",
    "perf/max_memory_gib": "peak accelerator memory in GiB (0 on CPU)",
    # -- cost ledger (running totals) ---------------------------------------------------------
    "cost/real_transitions": "real-env transitions used so far",
    "cost/synthetic_transitions": "experience-model transitions used so far",
    "cost/tokens_generated": "tokens generated so far (policy + experience model)",
    "cost/tokens_trained": "tokens that received a loss so far",
    "cost/gpu_hours": "accelerator hours used so far (0 on CPU)",
}


def check_metric_names(names: Iterable[str]) -> list[str]:
    """Names that are neither in METRICS, under a text namespace, nor a Lightning built-in; in the
    order first seen, without repeats. An empty list means every name is known."""
    unknown: list[str] = []
    for name in names:
        known = name in METRICS or name in LIGHTNING_BUILTINS or name.startswith(TEXT_NAMESPACES)
        if not known and name not in unknown:
            unknown.append(name)
    return unknown


def read_scalars(run_dir: str | Path, prefixes: Iterable[str] = ()) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every TensorBoard event file under `run_dir`, only tags starting with one of
    `prefixes` (all when empty), points in step order: a run's curves for tests and scripts/tb_scalars.py."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prefixes = tuple(prefixes)
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if not prefixes or tag.startswith(prefixes):
                out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points, key=lambda p: p[0]) for tag, points in out.items()}  # stable: file order on ties
