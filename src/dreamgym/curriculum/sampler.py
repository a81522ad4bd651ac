"""Curriculum task sampler (paper component 4): which tasks the policy trains on, iteration by iteration.

The training loop, once per iteration:
1. `pool.sample_batch(n, cfg.synthetic_share_cap)`: exactly min(floor(lambda * n), #generated) generated
   variations, the rest original train tasks, in a seeded random order (lambda = the paper's cap on the
   share of synthetic tasks per iteration);
2. rolls the batch out and scores it: `group_variances(task_ids, rewards)` for GRPO (each task's group of
   rollouts), or for PPO (one rollout per task) `cluster_variances(task_ids, rewards,
   encoder.encode(instructions), cfg.ppo_clusters, seed)`, V_tau pooled over k-means clusters of the
   instruction embeddings; then `pool.update_scores(variances, group_means(task_ids, rewards))`;
3. `grow_pool(pool, generator, cfg)`: the top-k tasks by V_tau (success near 50%: the most learning signal)
   become seeds, the experience model writes variations of them (`curriculum/generator.py`), and the pool
   keeps the new, non-duplicate ones, evicting the oldest generated tasks beyond `max_synthetic`;
4. `pool.metrics()` (the `curriculum/*` scalars), then `pool.log()` closes the iteration's log entry.

V_tau = (1/n) sum_i (r_i - mean r)^2, the population variance, as in the paper. `state_dict` holds only
plain Python values, so Lightning checkpoints load with `torch.load(weights_only=True)`.

Split hygiene (contracts): the pool refuses dev/test tasks and seeds come only from the pool. A variation
is a `Task` with split "train", the seed's env, id "<seed id>~var<n>" (n counts per seed, never reused) and
the SEED's goal record plus {"seed_task": <seed id>, "generated": True}: the synthetic env's prompts and
reward context stay grounded in a real goal, but the new instruction and that goal may disagree, so
variations are for the synthetic env only (a real env would score them against the seed's goal). Draw
real-env batches with lambda_cap=0.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamgym.errors import DreamGymError
from dreamgym.types import Task

__all__ = [
    "CurriculumError",
    "reward_variance",
    "group_variances",
    "group_means",
    "cluster_variances",
    "kmeans",
    "select_seeds",
    "TaskPool",
    "CurriculumLog",
    "grow_pool",
]

_EXAMPLES = 3
"""new instructions quoted per log entry"""


class CurriculumError(DreamGymError):
    """A dev/test task offered to the curriculum, or a seed that is not in the pool."""


def reward_variance(rewards: Sequence[float]) -> float:
    """V_tau = (1/n) sum_i (r_i - mean r)^2 (population variance); 0.0 for an empty group."""
    if len(rewards) == 0:
        return 0.0
    r = np.asarray(rewards, dtype=np.float64)
    return float(np.mean((r - r.mean()) ** 2))


def group_variances(task_ids: Sequence[str], rewards: Sequence[float]) -> dict[str, float]:
    """GRPO: V_tau of each task over its group of rollouts; rollout i is (task_ids[i], rewards[i]).
    Keys in order of first appearance."""
    return {t: reward_variance(r) for t, r in _groups(task_ids, rewards).items()}


def group_means(task_ids: Sequence[str], rewards: Sequence[float]) -> dict[str, float]:
    """Mean reward (the success rate for 0/1 rewards) of each task's rollouts; keys in order of first appearance."""
    return {t: float(np.mean(r)) for t, r in _groups(task_ids, rewards).items()}


def cluster_variances(task_ids: Sequence[str], rewards: Sequence[float], embeddings: np.ndarray,
                      n_clusters: int, seed: int = 0) -> dict[str, float]:
    """PPO (about one rollout per task): tasks are grouped by k-means over their instruction embeddings
    and every task gets the V_tau of all rollouts in its cluster. `embeddings` is (N, d), one row per
    rollout (its task's instruction embedding); a task's first row stands for it. Keys in order of first
    appearance; `kmeans` says how clusters are found. Use fewer clusters than tasks per batch: a cluster
    of one single-rollout task has V_tau = 0 and can never seed."""
    groups = _groups(task_ids, rewards)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(task_ids):
        raise ValueError(f"embeddings: got shape {x.shape}, expected ({len(task_ids)}, dim): one row per rollout")
    first = {}
    for i, t in enumerate(task_ids):
        first.setdefault(t, i)
    labels = kmeans(x[[first[t] for t in groups]], n_clusters, seed) if groups else np.zeros(0, dtype=int)
    pooled: dict[int, list[float]] = {}
    for t, label in zip(groups, labels):
        pooled.setdefault(int(label), []).extend(groups[t])
    return {t: reward_variance(pooled[int(label)]) for t, label in zip(groups, labels)}


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """(N, d) points -> (N,) int cluster labels, numbered by first appearance. k is capped at the number
    of distinct rows. Init: a seeded random first centre, then farthest-point (each next centre is the
    point farthest from the chosen ones: deterministic, and exact on well-separated data), then Lloyd
    iterations until the labels stop changing (an emptied cluster keeps its centre)."""
    x = np.asarray(x, dtype=np.float64)
    if k < 1:
        raise ValueError(f"n_clusters: got {k}, expected a positive int")
    if len(x) == 0:
        return np.zeros(0, dtype=int)
    k = min(k, len(np.unique(x, axis=0)))
    rng = np.random.default_rng(seed)
    centres = [x[int(rng.integers(len(x)))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(x[int(np.argmax(d2))])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iters):
        dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None, :]
        new = dist.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                c[j] = x[labels == j].mean(0)
    _, first_seen = np.unique(labels, return_index=True)
    renumber = {int(labels[i]): n for n, i in enumerate(sorted(first_seen))}
    return np.array([renumber[int(v)] for v in labels], dtype=int)


def select_seeds(variances: Mapping[str, float], k: int, min_variance: float = 1e-6,
                 rng: np.random.Generator | None = None) -> list[str]:
    """The k task ids of largest V_tau, largest first. Zero-variance tasks (no learning signal) and those
    below min_variance are never chosen. Ties: by task id when rng is None, else in a random order drawn
    from rng (binary rewards give few distinct variances, so fixed tie-breaks would pick the same tasks)."""
    eligible = sorted(t for t, v in variances.items() if v > 0 and v >= min_variance)
    perm = rng.permutation(len(eligible)) if rng is not None else range(len(eligible))
    tie = {t: int(p) for t, p in zip(eligible, perm)}
    return sorted(eligible, key=lambda t: (-float(variances[t]), tie[t]))[:max(k, 0)]


class CurriculumLog:
    """One dict per iteration (see `TaskPool.log`), kept in memory and written as JSON lines."""

    def __init__(self, entries: Iterable[dict] | None = None):
        self.entries: list[dict] = list(entries or [])

    def append(self, entry: dict) -> None:
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.entries)

    def write_jsonl(self, path: str | Path) -> Path:
        """Every entry, one JSON object a line, written to a temp file and renamed (kill -9 safe)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)
        os.replace(tmp, path)
        return path

    @classmethod
    def read_jsonl(cls, path: str | Path) -> "CurriculumLog":
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls(json.loads(line) for line in lines if line.strip())


class TaskPool:
    """The training task set: original train tasks (fixed) + generated variations (oldest first, at most
    `max_synthetic`), the latest V_tau and mean reward per task, and this iteration's counters. In reading
    order: sample_batch, update_scores, select_seeds, add_variations, metrics, log, state_dict."""

    def __init__(self, tasks: Iterable[Task], max_synthetic: int = 256, seed: int = 0):
        if max_synthetic < 0:
            raise ValueError(f"max_synthetic: got {max_synthetic}, expected an int >= 0")
        self.max_synthetic = int(max_synthetic)
        self.rng = np.random.default_rng(seed)
        self._set_tasks([Task.from_dict(t.to_dict()) for t in tasks], [])
        self.scores: dict[str, float] = {}
        self.means: dict[str, float] = {}
        self.iteration = 0
        self.history = CurriculumLog()
        self._var_counter: dict[str, int] = {}
        self._reset_iteration()

    def __len__(self) -> int:
        return len(self.originals) + len(self.synthetic)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def get(self, task_id: str) -> Task:
        return self._by_id[task_id]

    def sample_batch(self, n: int, lambda_cap: float, rng: np.random.Generator | None = None) -> list[Task]:
        """n tasks: exactly min(floor(lambda_cap * n), #synthetic) generated variations (none repeated),
        the rest original tasks (each drawn once before any repeats), shuffled. rng defaults to the
        pool's own (saved by state_dict)."""
        if n < 0 or not 0.0 <= lambda_cap <= 1.0:
            raise ValueError(f"sample_batch: got n={n}, lambda_cap={lambda_cap}; expected n >= 0, lambda_cap in [0, 1]")
        rng = self.rng if rng is None else rng
        n_syn = min(math.floor(lambda_cap * n + 1e-9), len(self.synthetic))
        batch = _draw(self.synthetic, n_syn, rng) + _draw(self.originals, n - n_syn, rng)
        self._drawn += n
        self._drawn_synthetic += n_syn
        return [batch[i] for i in rng.permutation(n)]

    def update_scores(self, variances: Mapping[str, float], means: Mapping[str, float] | None = None) -> None:
        """Keep the latest V_tau (and mean reward) of each pool task; ids not in the pool are ignored.
        The variances given this iteration make `curriculum/mean_variance`."""
        for t, v in variances.items():
            if t in self._by_id:
                self.scores[t] = float(v)
                self._variances.append(float(v))
        for t, m in (means or {}).items():
            if t in self._by_id:
                self.means[t] = float(m)

    def select_seeds(self, k: int, min_variance: float = 1e-6, rng: np.random.Generator | None = None) -> list[str]:
        """`select_seeds` over the pool's latest scores (ties in random order from the pool's rng)."""
        seeds = select_seeds(self.scores, k, min_variance, self.rng if rng is None else rng)
        self._seeds = list(seeds)
        return seeds

    def add_variations(self, seed_task: Task, instructions: Iterable[str], requested: int | None = None) -> list[Task]:
        """Add generated instructions as variations of a pool task (module docstring: id, goal). Blank ones
        and case-insensitive duplicates of any pool instruction are dropped; `requested` (how many the
        generator was asked for) makes a shortfall count as rejected too. Beyond max_synthetic the oldest
        generated tasks are evicted. Returns the new tasks still in the pool."""
        seed = self._by_id.get(seed_task.id)
        if seed is None or seed_task.split != "train":
            raise CurriculumError(f"seed task {seed_task.id!r} is not in the curriculum pool (only pool tasks, "
                                  "never dev/test ones, can seed variations)")
        texts = [" ".join(str(s).split()) for s in instructions]
        added = []
        for text in texts:
            if not text or text.casefold() in self._keys:
                continue
            n = self._var_counter.get(seed.id, 0)
            self._var_counter[seed.id] = n + 1
            task = Task(id=f"{seed.id}~var{n}", instruction=text, env=seed.env, split="train",
                        goal={**copy.deepcopy(seed.goal), "seed_task": seed.id, "generated": True})
            self.synthetic.append(task)
            self._by_id[task.id] = task
            self._keys.add(text.casefold())
            added.append(task)
        self._rejected += max(requested or 0, len(texts)) - len(added)
        while len(self.synthetic) > self.max_synthetic:
            old = self.synthetic.pop(0)
            del self._by_id[old.id]
            self._keys.discard(old.instruction.casefold())
            self.scores.pop(old.id, None)
            self.means.pop(old.id, None)
            self._evicted += 1
        added = [t for t in added if t.id in self._by_id]
        self._new.extend(added)
        return added

    def metrics(self) -> dict[str, float]:
        """This iteration's `curriculum/*` scalars (call before `log`, which resets the counters)."""
        rates = [self.means[s] for s in self._seeds if s in self.means]
        return {
            "curriculum/pool_size": float(len(self)),
            "curriculum/synthetic_tasks": float(len(self.synthetic)),
            "curriculum/synthetic_share": self._drawn_synthetic / self._drawn if self._drawn else 0.0,
            "curriculum/mean_variance": float(np.mean(self._variances)) if self._variances else 0.0,
            "curriculum/max_variance": max(self.scores.values(), default=0.0),
            "curriculum/seed_tasks": float(len(self._seeds)),
            "curriculum/selected_success_rate": float(np.mean(rates)) if rates else 0.0,
            "curriculum/new_tasks": float(len(self._new)),
            "curriculum/rejected_variations": float(self._rejected),
        }

    def log(self) -> dict:
        """Close the iteration: its entry (iteration, pool/original/synthetic sizes, tasks drawn and the
        synthetic share, mean/max V_tau, seed ids, new/rejected/evicted counts, up to 3 example new
        instructions) goes to `history` and is returned; the counters restart for the next iteration."""
        m = self.metrics()
        entry = {"iteration": self.iteration, "pool_size": len(self), "original_tasks": len(self.originals),
                 "synthetic_tasks": len(self.synthetic), "drawn": self._drawn,
                 "synthetic_drawn": self._drawn_synthetic, "synthetic_share": m["curriculum/synthetic_share"],
                 "mean_variance": m["curriculum/mean_variance"], "max_variance": m["curriculum/max_variance"],
                 "seed_tasks": list(self._seeds), "new_variations": len(self._new),
                 "rejected_variations": self._rejected, "evicted": self._evicted,
                 "examples": [{"id": t.id, "seed_task": t.goal["seed_task"], "instruction": t.instruction}
                              for t in self._new[:_EXAMPLES]]}
        self.history.append(entry)
        self.iteration += 1
        self._reset_iteration()
        return entry

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume with the same future samples: tasks, scores, counters, the
        iteration's counters, the log and the RNG state. Plain Python values only."""
        return copy.deepcopy({
            "originals": [t.to_dict() for t in self.originals], "synthetic": [t.to_dict() for t in self.synthetic],
            "max_synthetic": self.max_synthetic, "scores": self.scores, "means": self.means,
            "var_counter": self._var_counter, "iteration": self.iteration, "log": self.history.entries,
            "rng": self.rng.bit_generator.state,
            "current": {"drawn": self._drawn, "drawn_synthetic": self._drawn_synthetic,
                        "variances": self._variances, "seeds": self._seeds, "new": [t.id for t in self._new],
                        "rejected": self._rejected, "evicted": self._evicted}})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = copy.deepcopy(dict(state))
        self._set_tasks([Task.from_dict(d) for d in state["originals"]],
                        [Task.from_dict(d) for d in state["synthetic"]])
        self.max_synthetic = int(state["max_synthetic"])
        self.scores, self.means = dict(state["scores"]), dict(state["means"])
        self._var_counter = dict(state["var_counter"])
        self.iteration = int(state["iteration"])
        self.history = CurriculumLog(state["log"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        cur = state["current"]
        self._drawn, self._drawn_synthetic = int(cur["drawn"]), int(cur["drawn_synthetic"])
        self._variances, self._seeds = list(cur["variances"]), list(cur["seeds"])
        self._new = [self._by_id[t] for t in cur["new"] if t in self._by_id]
        self._rejected, self._evicted = int(cur["rejected"]), int(cur["evicted"])

    # -- internals -----------------------------------------------------------------------------

    def _set_tasks(self, originals: list[Task], synthetic: list[Task]) -> None:
        if not originals:
            raise CurriculumError("the curriculum pool needs at least one original train task")
        self._by_id: dict[str, Task] = {}
        for t in originals + synthetic:
            if t.split != "train":
                raise CurriculumError(f"task {t.id!r} has split {t.split!r}: dev and test tasks never enter the "
                                      "curriculum pool (contracts: split hygiene); expected split 'train'")
            if t.id in self._by_id:
                raise CurriculumError(f"task id {t.id!r} appears twice in the curriculum pool")
            self._by_id[t.id] = t
        self.originals, self.synthetic = originals, synthetic
        self._keys = {t.instruction.casefold() for t in originals + synthetic}

    def _reset_iteration(self) -> None:
        self._drawn = self._drawn_synthetic = self._rejected = self._evicted = 0
        self._variances: list[float] = []
        self._seeds: list[str] = []
        self._new: list[Task] = []


def grow_pool(pool: TaskPool, generator: Any, cfg: Any,
              rng: np.random.Generator | None = None) -> dict[str, list[Task]]:
    """One curriculum step (cfg: a `CurriculumConfig`): unless disabled or off-schedule (runs when
    pool.iteration % every_n_iterations == 0), pick cfg.seeds_per_iteration seeds by V_tau, ask
    `generator.generate(seeds, n, success_rates)` (a `TaskGenerator`) for cfg.variations_per_seed
    variations each and add them. Returns {seed id: new tasks}."""
    if not cfg.enabled or pool.iteration % cfg.every_n_iterations:
        return {}
    seeds = pool.select_seeds(cfg.seeds_per_iteration, cfg.min_variance, rng)
    if not seeds:
        return {}
    tasks = [pool.get(s) for s in seeds]
    texts = generator.generate(tasks, cfg.variations_per_seed, {s: pool.means[s] for s in seeds if s in pool.means})
    return {t.id: pool.add_variations(t, texts.get(t.id, []), requested=cfg.variations_per_seed) for t in tasks}


# -- internals ---------------------------------------------------------------------------------

def _groups(task_ids: Sequence[str], rewards: Sequence[float]) -> dict[str, list[float]]:
    if len(task_ids) != len(rewards):
        raise ValueError(f"got {len(task_ids)} task ids and {len(rewards)} rewards, expected one reward per rollout")
    out: dict[str, list[float]] = {}
    for t, r in zip(task_ids, rewards):
        out.setdefault(t, []).append(float(r))
    return out


def _draw(items: list[Task], m: int, rng: np.random.Generator) -> list[Task]:
    """m items: whole random permutations of `items` one after another (no repeat before all are drawn)."""
    out: list[Task] = []
    while len(out) < m and items:
        out.extend(items[int(i)] for i in rng.permutation(len(items))[:m - len(out)])
    return out
