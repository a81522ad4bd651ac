"""Fidelity audit math to exact values (balanced accuracy, majority baseline, precision/recall with zero
denominators, the deterministic/other split, stratified sampling) and the audit loop on real WebShop
oracle transitions with a tiny random world model: every output falls back, all rates stay in [0, 1],
and retrieval never returns the asking transition's own trajectory."""

from __future__ import annotations

import pytest

from dreamgym.config import EnvConfig, ExperiencePromptConfig, ModelConfig, ReplayConfig, SyntheticEnvConfig
from dreamgym.envs.base import make_env
from dreamgym.episodes import run_episode
from dreamgym.experience.fidelity import (audit_records, balanced_accuracy, fidelity_metrics, is_deterministic,
                                          majority_baseline, normalize_state, precision_recall, run_audit,
                                          samples_markdown, state_similarities, stratified_sample,
                                          webshop_is_deterministic)
from dreamgym.experience.prompts import Prediction
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import build_encoder
from dreamgym.stats import wilson_interval

RATE_SUFFIXES = ("_accuracy", "_precision", "_recall", "_match", "_similarity", "_rate", "_tpr", "_tnr",
                 "_deterministic", "_other")


def test_balanced_accuracy_exact_and_degenerate_cases():
    assert balanced_accuracy([True, True, False, False], [True, False, False, False]) == 0.75  # (1/2 + 1) / 2
    assert balanced_accuracy([True, True], [True, False]) == 0.5                # one class: its recall only
    assert balanced_accuracy([False, False, False], [True, True, True]) == 0.0
    assert balanced_accuracy([], []) == 0.0


def test_precision_recall_with_zero_denominators():
    assert precision_recall([True, False, True, False], [True, True, False, False]) == (0.5, 0.5)
    assert precision_recall([True, False], [False, False]) == (0.0, 0.0)        # nothing predicted positive
    assert precision_recall([False, False], [True, False]) == (0.0, 0.0)        # no real positive
    assert precision_recall([], []) == (0.0, 0.0)


def test_majority_baseline_value_ties_and_rounding():
    assert majority_baseline([0.0, 0.0, 0.0, 1.0, 0.5], 0.1) == (0.0, 0.6)
    assert majority_baseline([0.0, 1.0], 0.1) == (0.0, 0.5)                     # tie -> smaller value
    assert majority_baseline([0.3333, 0.33331, 1.0], 0.0) == (0.333, 0.0)       # buckets of 3 decimals
    assert majority_baseline([], 0.1) == (0.0, 0.0)


def test_webshop_deterministic_split():
    search_page = "WebShop [SEP] Instruction: [SEP] find red shoes [SEP] Search"
    results = "Instruction: [SEP] find red shoes [SEP] Back to Search [SEP] Page 1 (Total results: 2) [SEP] Next > " \
              "[SEP] B0AAAAAAA1 [SEP] Red Shoe [SEP] $10.00 [SEP] B0AAAAAAA2 [SEP] Blue Shoe [SEP] $12.00"
    assert webshop_is_deterministic(search_page, "search[red shoes]")
    assert not webshop_is_deterministic(results, "search[red shoes]")         # no search bar: invalid, no-op
    assert webshop_is_deterministic(results, "click[b0aaaaaaa2]")
    assert webshop_is_deterministic(results, "CLICK[B0AAAAAAA1]")
    assert not webshop_is_deterministic(results, "click[b0zzzzzzz9]")         # not listed on this page
    for action in ("click[next >]", "click[buy now]", "click[red]", "buy it", ""):
        assert not webshop_is_deterministic(results, action)
    assert is_deterministic("webshop", search_page, "search[x]")
    assert not is_deterministic("alfworld", search_page, "search[x]")        # no classifier: all 'other'


def test_stratified_sample_keeps_terminal_steps_and_is_seeded():
    terminal = [False] * 8 + [True, True]
    picked = stratified_sample(terminal, 4, 0.5, seed=1)
    assert len(picked) == 4 and {8, 9} <= set(picked) and picked == sorted(picked)
    assert picked == stratified_sample(terminal, 4, 0.5, seed=1)
    assert stratified_sample(terminal, 0, 0.5, 0) == list(range(10)) == stratified_sample(terminal, 10, 0.5, 0)
    few_rest = [True] * 6 + [False]
    assert stratified_sample(few_rest, 4, 0.25, 0).count(6) == 1 and len(stratified_sample(few_rest, 4, 0.25, 0)) == 4
    assert sum(terminal[i] for i in stratified_sample([True] * 5 + [False] * 5, 4, 0.25, 0)) == 1


def _rec(state, next_state, reward, done):
    return {"state": state, "next_state": next_state, "reward": reward, "done": done}


def test_fidelity_metrics_exact_values():
    records = [_rec("S0", "A", 0.0, False), _rec("S1", "B", 0.0, False), _rec("S2", "Thank you", 1.0, True),
               _rec("S3", "Y", 0.25, True), _rec("S4", "Z", 1.0, True)]
    preds = [Prediction(" A \n", 0.05, False), Prediction("C", 0.5, False), Prediction("Thank  you", 1.0, True),
             Prediction("X", 1.0, True), Prediction("S4", 0.0, False, parse_fallback="missing_tags")]
    sims, det = [1.0, 0.2, 0.9, 0.5, 0.0], [True, True, False, False, False]
    m = fidelity_metrics(records, preds, sims, det, reward_tolerance=0.1)
    assert m["n_transitions"] == 5
    assert m["reward_accuracy"] == 0.4 and m["reward_accuracy_ci95"] == wilson_interval(2, 5)
    assert m["reward_mae"] == pytest.approx(2.3 / 5)
    assert m["majority_reward"] == 0.0 and m["majority_baseline_accuracy"] == 0.4   # 0 and 1 tie twice each
    assert m["done_accuracy"] == 0.8
    # terminal: true success [T, F, T], predicted success by reward [T, T, F]
    assert (m["n_terminal"], m["n_terminal_success"]) == (3, 2)
    assert (m["terminal_tpr"], m["terminal_tnr"], m["terminal_balanced_accuracy"]) == (0.5, 0.0, 0.25)
    assert m["terminal_tnr_ci95"] == wilson_interval(0, 1)
    assert m["terminal_reward_mae"] == pytest.approx(1.75 / 3)
    assert (m["success_precision"], m["success_recall"]) == (0.5, 0.5)
    assert (m["n_true_success"], m["n_predicted_success"]) == (2, 2)
    assert m["next_state_exact_match"] == 0.4 and m["next_state_similarity"] == pytest.approx(0.52)
    assert (m["n_deterministic"], m["n_other"]) == (2, 3)
    assert m["next_state_exact_match_deterministic"] == 0.5
    assert m["next_state_exact_match_other"] == pytest.approx(1 / 3)
    assert m["next_state_similarity_deterministic"] == pytest.approx(0.6)
    assert m["next_state_similarity_other"] == pytest.approx(1.4 / 3)
    assert m["next_state_exact_match_other_ci95"] == wilson_interval(1, 3)
    assert m["copy_baseline_exact_match"] == 0.0
    assert m["parse_fail_rate"] == 0.2 and m["parse_fail"]["missing_tags"] == 0.2 and m["parse_fail"]["bad_done"] == 0.0


def test_fidelity_metrics_zero_division_and_alignment():
    m = fidelity_metrics([], [], [], [])
    assert m["n_transitions"] == 0 and m["reward_accuracy"] == 0.0 and m["reward_accuracy_ci95"] == [0.0, 1.0]
    assert m["terminal_balanced_accuracy"] == 0.0 and m["success_precision"] == 0.0
    # never predicting success: precision has no denominator, recall is 0
    m = fidelity_metrics([_rec("s", "s", 1.0, True)], [Prediction("s", 0.0, False)], [1.0], [False])
    assert (m["success_precision"], m["success_recall"], m["n_predicted_success"]) == (0.0, 0.0, 0)
    assert m["copy_baseline_exact_match"] == 1.0 and m["next_state_exact_match_deterministic"] == 0.0
    with pytest.raises(ValueError, match="unaligned"):
        fidelity_metrics([_rec("s", "t", 0.0, False)], [], [], [])


def test_default_modes_are_the_audit_modes():
    from dreamgym.config import EvalWorldModelConfig
    from dreamgym.experience.fidelity import MODES

    assert EvalWorldModelConfig().modes == list(MODES)


def test_state_similarities_and_normalisation():
    enc = build_encoder("hashing")
    sims = state_similarities(enc, ["red shoes size 9", "alpha beta"], ["red shoes  size 9", "gamma delta"])
    assert sims[0] == pytest.approx(1.0) and 0.0 <= sims[1] < 0.5
    assert normalize_state("  a\n\tb  c ") == "a b c"
    assert state_similarities(enc, [], []) == []


# -- the audit loop on real WebShop transitions ------------------------------------------------

@pytest.fixture(scope="module")
def oracle_trajectories():
    env = make_env(EnvConfig())
    return [run_episode(env, env.oracle(), t, max_turns=15, episode=i) for i, t in enumerate(env.tasks("train")[:3])]


class _SpyBuffer:
    """Wraps a ReplayBuffer; records every search's exclusions and hits."""

    def __init__(self, buffer):
        self.buffer, self.calls = buffer, []

    def search(self, states, actions, k, **kw):
        hits = self.buffer.search(states, actions, k, **kw)
        self.calls.append((kw.get("exclude_trajectories"), hits))
        return hits


def test_audit_loop_on_oracle_transitions_excludes_own_trajectory(oracle_trajectories):
    from dreamgym.experience.synthetic_env import build_predictor

    buffer = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    buffer.add_trajectories(oracle_trajectories)
    n_before = len(buffer)
    spy = _SpyBuffer(buffer)
    cfg = SyntheticEnvConfig(model=ModelConfig(name="tiny-random"), max_new_tokens=8, batch_size=8,
                             prompt=ExperiencePromptConfig(state_chars=200, demo_state_chars=64,
                                                           history_state_chars=64, demos_k=2))
    predictor = build_predictor(cfg, buffer=spy)
    records = audit_records(oracle_trajectories)
    records = [records[i] for i in stratified_sample([r["done"] for r in records], 6, 0.5, 0)]
    assert sum(r["done"] for r in records) == 3 and all(r["history"] or r["step"] == 0 for r in records)
    metrics, preds = run_audit(predictor, records, build_encoder("hashing"), chunk_size=4)
    assert len(preds) == 6 and metrics["n_transitions"] == 6
    assert metrics["parse_fail_rate"] == 1.0                # a random model writes no tags
    for key, value in metrics.items():
        if key.endswith(RATE_SUFFIXES) and not key.startswith("n_"):
            assert 0.0 <= value <= 1.0, key
        if key.endswith("_ci95"):
            assert 0.0 <= value[0] <= value[1] <= 1.0, key
    assert metrics["tokens_generated"] > 0 and metrics["prompt_tokens"] > 0 and metrics["transitions_per_s"] > 0
    # retrieval: every query excludes its own trajectory, and no hit comes from it
    asked = [(ex, hs) for excl, hits in spy.calls for ex, hs in zip(excl, hits)]
    assert [ex for ex, _ in asked] == [r["trajectory_id"] for r in records]
    assert all(hs for _, hs in asked)                       # demos were retrieved (from other trajectories)
    assert all(h.transition.trajectory_id != ex for ex, hs in asked for h in hs)
    assert len(buffer) == n_before                         # the audit never writes to the buffer
    md = samples_markdown(records, preds, 2)
    assert md.count("### ") == 2 and "step" in md and "true next state" in md


class _TablePredictor:
    """A stand-in world model answering from a table of true outcomes (or copying the state)."""

    def __init__(self, records, copy=False):
        self.table = {(r["trajectory_id"], r["state"], r["action"]): r for r in records}
        self.copy, self.tokens_generated, self.prompt_tokens = copy, 0, 0

    def predict(self, queries):
        out = []
        for q in queries:
            r = self.table[(q.exclude_trajectory, q.state, q.action)]
            assert q.history == [tuple(h) for h in r["history"]]          # the episode's history goes in
            out.append(Prediction(q.state, 0.0, False) if self.copy else
                       Prediction(r["next_state"] + "\n", r["reward"], r["done"], reasoning="known"))
        return out


def test_audit_scores_a_perfect_model_one_and_a_copying_model_as_the_copy_baseline(oracle_trajectories):
    records = audit_records(oracle_trajectories)
    enc = build_encoder("hashing")
    perfect, _ = run_audit(_TablePredictor(records), records, enc, chunk_size=5)
    for key in ("reward_accuracy", "done_accuracy", "terminal_balanced_accuracy", "success_precision",
                "success_recall", "next_state_exact_match", "next_state_exact_match_deterministic",
                "next_state_exact_match_other"):
        assert perfect[key] == 1.0, key
    assert perfect["next_state_similarity"] == pytest.approx(1.0) and perfect["reward_mae"] == 0.0
    assert perfect["parse_fail_rate"] == 0.0 and perfect["n_deterministic"] > 0 and perfect["n_other"] > 0
    copy, _ = run_audit(_TablePredictor(records, copy=True), records, enc)
    assert copy["next_state_exact_match"] == copy["copy_baseline_exact_match"]
    assert copy["next_state_exact_match_deterministic"] == 0.0       # search and product clicks change the page
    assert copy["success_recall"] == 0.0 and copy["reward_accuracy"] == copy["majority_baseline_accuracy"]
