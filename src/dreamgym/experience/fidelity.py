"""Fidelity audit of the experience model M_exp: how close its predicted (next state, reward, done) come
to held-out REAL transitions. These are the two errors of the paper's bound (Thm. 1):
|J_M - J_M^| <= eps_R / (1 - gamma) + 2 gamma R_max eps_P / (1 - gamma)^2, measured, not assumed.

Called by `pipelines/eval_world_model.py` (`dreamgym eval-world-model`), once per mode (full,
no_retrieval, no_reasoning). The math is pure functions over plain lists, tested to exact values;
`run_audit` is the one loop that calls the model.

Metric definitions (every proportion also gets `<key>_ci95`, a Wilson 95% interval; an empty
denominator gives 0.0 and the `n_*` counts beside it say so):
  reward_accuracy            share of transitions with |r^ - r| <= reward_tolerance (default 0.1)
  reward_mae                 mean |r^ - r| (the eps_R estimate); terminal_reward_mae: on done steps only
  majority_baseline_accuracy the same accuracy for the constant predictor that always answers the most
                             frequent true reward (rounded to 3 decimals; ties -> the smaller value),
                             named in `majority_reward`. Most rewards are 0, so this is the bar to beat
  done_accuracy              share with predicted done == true done
  terminal_balanced_accuracy on true terminal (done) transitions: success (r >= reward_threshold) vs
                             not, predicted success = r^ >= reward_threshold (the reward prediction
                             alone); the mean of TPR (`terminal_tpr`) and TNR (`terminal_tnr`) over the
                             classes present (one class present -> that class's rate)
  success_precision/recall   over all transitions; success = done and r >= threshold, predicted
                             success = predicted done and r^ >= threshold
  next_state_exact_match     predicted == true next state after whitespace normalisation
  copy_baseline_exact_match  the same for the no-op predictor (next state = current state), which is
                             also what every parse fallback predicts: the bar for the exact match
  next_state_similarity      mean cosine of sentence embeddings (predicted vs true next state), each
                             clipped at 0 to lie in [0, 1] (1 - eps_P proxy). Encoders read a text
                             head (MiniLM: 256 word pieces), so long pages compare by their start
  *_deterministic / *_other  the two next-state keys on transitions the env's classifier calls
                             deterministic (WebShop: a search from a page with a search bar, a click
                             on a product listed on the page) and on the rest
  parse_fail_rate            outputs replaced by the no-op fallback; `parse_fail` by reason
Fallback predictions count as predictions (previous state, reward 0, not done): that is what the
synthetic env would use, so the audit scores the env a policy would actually train in.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from dreamgym.experience.annotate import transition_records
from dreamgym.experience.predictor import ExperiencePredictor, Query
from dreamgym.experience.prompts import PARSE_FAIL_REASONS, Prediction
from dreamgym.stats import wilson_interval
from dreamgym.types import Trajectory

__all__ = [
    "MODES",
    "DETERMINISTIC_CLASSIFIERS",
    "normalize_state",
    "balanced_accuracy",
    "precision_recall",
    "majority_baseline",
    "is_deterministic",
    "webshop_is_deterministic",
    "stratified_sample",
    "state_similarities",
    "fidelity_metrics",
    "audit_records",
    "run_audit",
    "samples_markdown",
]

MODES: tuple[str, ...] = ("full", "no_retrieval", "no_reasoning")
"""audit modes: retrieval + reasoning; no replay-buffer demos; no reasoning trace (paper ablations)"""


def normalize_state(text: str) -> str:
    """Whitespace-normalised text: every run of spaces/newlines becomes one space, ends stripped."""
    return " ".join(str(text).split())


def balanced_accuracy(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float:
    """Mean recall over the classes present in y_true (TPR and TNR when both are); 0.0 when empty."""
    rates = [_rate(sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c), sum(1 for t in y_true if t == c))
             for c in (True, False) if any(t == c for t in y_true)]
    return sum(rates) / len(rates) if rates else 0.0


def precision_recall(y_true: Sequence[bool], y_pred: Sequence[bool]) -> tuple[float, float]:
    """(precision, recall) of the positive class; a zero denominator gives 0.0 (sklearn's zero_division=0)."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t and p)
    return _rate(tp, sum(1 for p in y_pred if p)), _rate(tp, sum(1 for t in y_true if t))


def majority_baseline(rewards: Sequence[float], tolerance: float) -> tuple[float, float]:
    """(most frequent true reward rounded to 3 decimals (ties -> smallest), share of rewards within
    `tolerance` of it); (0.0, 0.0) when empty."""
    if not rewards:
        return 0.0, 0.0
    counts = Counter(round(float(r), 3) for r in rewards)
    value = min(counts, key=lambda v: (-counts[v], v))
    return value, _rate(sum(1 for r in rewards if abs(value - r) <= tolerance), len(rewards))


def webshop_is_deterministic(state: str, action: str) -> bool:
    """WebShop transitions whose next page follows from the action by lookup: `search[...]` from a page
    with a search bar (-> the results page) and `click[<asin>]` on a product listed on the page
    (-> its item page). Options, buy, navigation buttons and invalid actions are 'other'."""
    m = _ACTION.fullmatch(action.strip().lower())
    if m is None:
        return False
    segments = [s.strip() for s in state.split(" [SEP] ")]
    if m[1] == "search":
        return bool(segments) and segments[-1] == "Search"
    arg = m[2].strip()
    return m[1] == "click" and bool(_ASIN.fullmatch(arg)) and arg in {s.lower() for s in segments}


DETERMINISTIC_CLASSIFIERS: dict[str, Callable[[str, str], bool]] = {"webshop": webshop_is_deterministic}
"""env name -> (state, action) -> is the transition deterministic; envs without one: all 'other'"""


def is_deterministic(env: str, state: str, action: str) -> bool:
    """The env's registered classifier (`DETERMINISTIC_CLASSIFIERS`); False for envs without one."""
    fn = DETERMINISTIC_CLASSIFIERS.get(env)
    return bool(fn(state, action)) if fn is not None else False


def stratified_sample(terminal: Sequence[bool], max_n: int, terminal_share: float, seed: int) -> list[int]:
    """Indices (sorted) of at most max_n items: up to round(max_n * terminal_share) terminal ones, the rest
    non-terminal, and terminal ones again if non-terminal run short. Seeded; everything when max_n <= 0
    or there are at most max_n items."""
    n = len(terminal)
    if max_n <= 0 or n <= max_n:
        return list(range(n))
    rng = random.Random(seed)
    term = [i for i, t in enumerate(terminal) if t]
    rest = [i for i, t in enumerate(terminal) if not t]
    n_term = min(len(term), round(max_n * terminal_share))
    n_rest = min(len(rest), max_n - n_term)
    n_term = min(len(term), max_n - n_rest)
    return sorted(rng.sample(term, n_term) + rng.sample(rest, n_rest))


def state_similarities(encoder, predicted: list[str], true: list[str],
                       true_vecs: np.ndarray | None = None) -> list[float]:
    """Per pair max(0, cosine) of the encoder's embeddings (rows are unit-norm); `true_vecs` reuses
    embeddings of `true` computed earlier (the same for every mode)."""
    if not predicted:
        return []
    p = np.asarray(encoder.encode(predicted), dtype=np.float64)
    t = np.asarray(encoder.encode(true) if true_vecs is None else true_vecs, dtype=np.float64)
    p /= np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return [float(x) for x in np.clip((p * t).sum(axis=1), 0.0, 1.0)]


def fidelity_metrics(records: Sequence[dict], preds: Sequence[Prediction], similarities: Sequence[float],
                     deterministic: Sequence[bool], reward_tolerance: float = 0.1,
                     reward_threshold: float = 1.0 - 1e-6) -> dict:
    """All metrics of the module docstring for aligned lists: true transitions (`next_state`, `reward`,
    `done`), predictions, next-state similarities and deterministic flags."""
    if not len(records) == len(preds) == len(similarities) == len(deterministic):
        raise ValueError(f"unaligned inputs: {len(records)} records, {len(preds)} predictions, "
                         f"{len(similarities)} similarities, {len(deterministic)} flags")
    n = len(records)
    r_true = [float(r["reward"]) for r in records]
    r_pred = [float(p.reward) for p in preds]
    err = [abs(a - b) for a, b in zip(r_pred, r_true)]
    done_true = [bool(r["done"]) for r in records]
    out: dict = {"n_transitions": n}
    _prop(out, "reward_accuracy", sum(e <= reward_tolerance for e in err), n)
    out["reward_mae"] = _mean(err)
    out["majority_reward"] = majority_baseline(r_true, reward_tolerance)[0]
    _prop(out, "majority_baseline_accuracy",
          sum(abs(out["majority_reward"] - r) <= reward_tolerance for r in r_true), n)
    _prop(out, "done_accuracy", sum(p.done == d for p, d in zip(preds, done_true)), n)

    term = [i for i in range(n) if done_true[i]]
    t_true = [r_true[i] >= reward_threshold for i in term]
    t_pred = [r_pred[i] >= reward_threshold for i in term]
    out["n_terminal"], out["n_terminal_success"] = len(term), sum(t_true)
    out["terminal_balanced_accuracy"] = balanced_accuracy(t_true, t_pred)
    _prop(out, "terminal_tpr", sum(t and p for t, p in zip(t_true, t_pred)), sum(t_true))
    _prop(out, "terminal_tnr", sum(not t and not p for t, p in zip(t_true, t_pred)), len(term) - sum(t_true))
    out["terminal_reward_mae"] = _mean([err[i] for i in term])

    s_true = [d and r >= reward_threshold for d, r in zip(done_true, r_true)]
    s_pred = [p.done and p.reward >= reward_threshold for p in preds]
    tp = sum(t and p for t, p in zip(s_true, s_pred))
    out["n_true_success"], out["n_predicted_success"] = sum(s_true), sum(s_pred)
    _prop(out, "success_precision", tp, sum(s_pred))
    _prop(out, "success_recall", tp, sum(s_true))

    exact = [normalize_state(p.next_state) == normalize_state(r["next_state"]) for p, r in zip(preds, records)]
    copy = [normalize_state(r["state"]) == normalize_state(r["next_state"]) for r in records]
    groups = {"": range(n), "_deterministic": [i for i in range(n) if deterministic[i]],
              "_other": [i for i in range(n) if not deterministic[i]]}
    for suffix, idx in groups.items():
        if suffix:
            out[f"n{suffix}"] = len(idx)
        _prop(out, f"next_state_exact_match{suffix}", sum(exact[i] for i in idx), len(idx))
        out[f"next_state_similarity{suffix}"] = _mean([similarities[i] for i in idx])
        _prop(out, f"copy_baseline_exact_match{suffix}", sum(copy[i] for i in idx), len(idx))

    reasons = Counter(p.parse_fallback for p in preds if p.parse_fallback)
    _prop(out, "parse_fail_rate", sum(reasons.values()), n)
    extra = sorted(set(reasons) - set(PARSE_FAIL_REASONS))
    out["parse_fail"] = {r: _rate(reasons[r], n) for r in (*PARSE_FAIL_REASONS, *extra)}
    return out


def audit_records(trajectories: Sequence[Trajectory]) -> list[dict]:
    """One record per transition (fields of `Transition` + `history` + `split`, via
    `transition_records`) of the real trajectories, in file order."""
    return [rec for traj in trajectories for rec in transition_records(traj)]


def run_audit(predictor: ExperiencePredictor, records: list[dict], encoder, *, reward_tolerance: float = 0.1,
              reward_threshold: float = 1.0 - 1e-6, chunk_size: int = 16, true_vecs: np.ndarray | None = None,
              progress=None, description: str = "audit") -> tuple[dict, list[Prediction]]:
    """Predict every record's transition in batches (history from its trajectory; retrieval never sees
    the record's own trajectory), then score. Returns (metrics + cost/speed keys, predictions).
    `progress`: a rich Progress to report to (optional)."""
    job = progress.add_task(description, total=len(records)) if progress is not None else None
    tokens0, prompt0 = predictor.tokens_generated, predictor.prompt_tokens
    preds: list[Prediction] = []
    t0 = time.perf_counter()
    for start in range(0, len(records), max(1, chunk_size)):
        chunk = records[start:start + max(1, chunk_size)]
        preds.extend(predictor.predict([_query(r) for r in chunk]))
        if job is not None:
            progress.update(job, advance=len(chunk))
    predict_s = time.perf_counter() - t0
    sims = state_similarities(encoder, [p.next_state for p in preds], [r["next_state"] for r in records], true_vecs)
    det = [is_deterministic(r["env"], r["state"], r["action"]) for r in records]
    out = fidelity_metrics(records, preds, sims, det, reward_tolerance, reward_threshold)
    tokens = predictor.tokens_generated - tokens0
    out.update(tokens_generated=tokens, prompt_tokens=predictor.prompt_tokens - prompt0,
               output_tokens=_rate(tokens, len(records)), predict_s=round(predict_s, 3),
               wall_s=round(time.perf_counter() - t0, 3),
               transitions_per_s=len(records) / predict_s if predict_s > 0 else 0.0,
               tokens_per_s=tokens / predict_s if predict_s > 0 else 0.0)
    return out, preds


def samples_markdown(records: Sequence[dict], preds: Sequence[Prediction], n: int, max_chars: int = 600) -> str:
    """Up to n predicted-vs-true examples as markdown (terminal transitions first, then the others in
    order): instruction, action, true and predicted next state / reward / done, fallback, reasoning."""
    order = sorted(range(len(records)), key=lambda i: (not records[i]["done"], i))[:max(0, n)]
    blocks = []
    for i in order:
        r, p = records[i], preds[i]
        blocks.append(
            f"### {r['trajectory_id']} step {r['step']}\n\n**task:** {_clip(r['instruction'], max_chars)}  \n"
            f"**action:** `{_clip(r['action'], 200)}`  \n"
            f"**true:** reward {r['reward']:g}, done {str(r['done']).lower()}  \n"
            f"**predicted:** reward {p.reward:g}, done {str(p.done).lower()}, fallback {p.parse_fallback or 'none'}\n\n"
            f"true next state:\n\n    {_clip(r['next_state'], max_chars)}\n\n"
            f"predicted next state:\n\n    {_clip(p.next_state, max_chars)}\n\n"
            f"reasoning:\n\n    {_clip(p.reasoning or '', max_chars)}\n")
    return "\n".join(blocks) or "(no transitions)"


# -- internals ---------------------------------------------------------------------------------

_ACTION = re.compile(r"(search|click)\[(.+)\]", re.DOTALL)
_ASIN = re.compile(r"b[0-9a-z]{9}")


def _rate(k: int, n: int) -> float:
    return k / n if n else 0.0


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _prop(out: dict, key: str, k: int, n: int) -> None:
    """out[key] = k / n (0.0 when n == 0) and out[key_ci95] = Wilson 95% interval."""
    out[key] = _rate(int(k), int(n))
    out[f"{key}_ci95"] = wilson_interval(int(k), int(n))


def _query(rec: dict) -> Query:
    return Query(rec["instruction"], [(s, a) for s, a in rec["history"]], rec["state"], rec["action"],
                 env=rec["env"], exclude_trajectory=rec["trajectory_id"])


def _clip(text: str, n: int) -> str:
    text = normalize_state(text)
    return text if len(text) <= n else text[:n - 4] + " ..."
