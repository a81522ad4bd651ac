"""The LightningDataModule that streams experience into PolicyRL: each item is one iteration's
`RolloutBatch`, made on demand (style §6: `num_workers=0`, no prefetch, so it always uses the live
weights) by sampling tasks from the curriculum pool, rolling the policy out in the training env
(synthetic: experience model + buffer retrieval, which writes its synthetic trajectories back into the
buffer; or a real env) and updating the curriculum from the group rewards.

It also owns the cost ledger (real/synthetic transitions, tokens) and the periodic real-env reality
check (`eval/success_rate`, `eval/sim_real_gap`). `state_dict` carries the pool, counters and RNGs for
`--resume`; the replay buffer itself is saved beside each checkpoint by the pipeline.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, IterableDataset

from dreamgym.config import TrainPolicyConfig
from dreamgym.curriculum.sampler import TaskPool, grow_pool, group_means, group_variances
from dreamgym.data.budget import real_step_count
from dreamgym.rl.batch import RolloutBatch
from dreamgym.rl.context import ChatContext, ContextSettings
from dreamgym.rl.rollout import RolloutResult, RolloutSettings, run_rollouts

__all__ = ["RolloutStream", "PolicyDataModule"]


class RolloutStream(IterableDataset):
    """Endless (or budget-bounded) stream: one item = one iteration's rollouts; None ends it."""

    def __init__(self, make_batch: Callable[[], RolloutBatch | None]):
        self.make_batch = make_batch

    def __iter__(self) -> Iterator[RolloutBatch]:
        return iter(self.make_batch, None)


class PolicyDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainPolicyConfig, policy, venv, pool: TaskPool, generator=None,
                 eval_venv=None, eval_tasks: list | None = None, trajectory_sink: Callable[[list], None] | None = None):
        super().__init__()
        self.cfg, self.policy, self.venv, self.pool = cfg, policy, venv, pool
        self.generator, self.eval_venv, self.eval_tasks = generator, eval_venv, eval_tasks or []
        self.trajectory_sink = trajectory_sink
        self.ctx = ChatContext(policy.tokenizer, ContextSettings(observation_chars=cfg.rollout.observation_chars))
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration = 0
        self.ledger = {"real_transitions": 0, "synthetic_transitions": 0, "tokens_generated": 0, "episodes": 0}
        self.last_eval: dict[str, float] = {}

    # -- Lightning ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(RolloutStream(self.make_batch), batch_size=None, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "ledger": dict(self.ledger), "pool": self.pool.state_dict(),
                "rng": self.rng.bit_generator.state, "last_eval": dict(self.last_eval),
                "generator": self.generator.state_dict() if self.generator is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.ledger.update(state["ledger"])
        self.pool.load_state_dict(state["pool"])
        self.rng.bit_generator.state = state["rng"]
        self.last_eval = dict(state.get("last_eval", {}))
        if self.generator is not None and state.get("generator"):
            self.generator.load_state_dict(state["generator"])

    # -- one iteration --------------------------------------------------------------------------
    def make_batch(self) -> RolloutBatch | None:
        cfg, a = self.cfg, self.cfg.algo
        if self.iteration >= cfg.max_iterations or self._budget_spent():
            return None
        synthetic = cfg.train_env == "synthetic"
        lam = cfg.curriculum.synthetic_share_cap if (synthetic and cfg.curriculum.enabled) else 0.0
        tasks = self.pool.sample_batch(a.tasks_per_iteration, lam, self.rng)
        repeat = a.group_size if a.name == "grpo" else 1
        rollout_tasks = [t for t in tasks for _ in range(repeat)]  # GRPO groups are consecutive rows
        result = run_rollouts(self.policy.model, self.policy.tokenizer, self.ctx, self.venv, rollout_tasks,
                              self._rollout_settings(do_sample=True))
        metrics = result.metrics()
        self._account(result, synthetic)
        metrics.update(self._curriculum(result))
        if synthetic and hasattr(self.venv, "metrics"):
            metrics.update({k: v for k, v in self.venv.metrics().items() if k.startswith("wm/")})
        if self.trajectory_sink is not None:
            self.trajectory_sink(self._trajectories(result, synthetic))
        if cfg.eval.every_n_iterations and self.eval_venv is not None and (self.iteration + 1) % cfg.eval.every_n_iterations == 0:
            self.last_eval = self.evaluate_real()
            metrics.update(self.last_eval)
            metrics["eval/sim_real_gap"] = metrics["rollout/success_rate"] - self.last_eval["eval/success_rate"]
        metrics.update({f"cost/{k}": float(v) for k, v in self.ledger.items() if k != "episodes"})
        groups = [i // repeat for i in range(len(rollout_tasks))]
        self.iteration += 1
        return RolloutBatch.from_episodes(result.episodes, groups, self._pad_id(), self.policy.policy_version, metrics)

    def evaluate_real(self) -> dict[str, float]:
        """Greedy episodes of the current policy on the real env's eval split (counted as real transitions)."""
        result = run_rollouts(self.policy.model, self.policy.tokenizer, self.ctx, self.eval_venv,
                              self.eval_tasks[: self.cfg.eval.episodes], self._rollout_settings(do_sample=False))
        self.ledger["real_transitions"] += sum(len(e.steps) for e in result.episodes)
        m = result.metrics()
        return {"eval/success_rate": m["rollout/success_rate"], "eval/mean_reward": m["rollout/mean_reward"],
                "eval/episode_length": m["rollout/episode_length"]}

    # -- internals --------------------------------------------------------------------------------
    def _rollout_settings(self, do_sample: bool) -> RolloutSettings:
        r = self.cfg.rollout
        return RolloutSettings(max_turns=r.max_turns, max_new_tokens=r.max_new_tokens, do_sample=do_sample,
                               temperature=r.temperature, top_p=r.top_p, batch_size=r.batch_size,
                               max_context_tokens=r.max_context_tokens, action_space=r.action_space, backend=r.backend,
                               seed=self.cfg.seed * 100_003 + self.iteration if do_sample else None)

    def _account(self, result: RolloutResult, synthetic: bool) -> None:
        steps = sum(real_step_count(e.steps) for e in result.episodes)  # budget-ended steps are no transitions
        self.ledger["synthetic_transitions" if synthetic else "real_transitions"] += steps
        self.ledger["tokens_generated"] += result.tokens_generated
        self.ledger["episodes"] += len(result.episodes)

    def _curriculum(self, result: RolloutResult) -> dict[str, float]:
        ids = [e.task.id for e in result.episodes]
        rewards = [e.outcome_reward for e in result.episodes]
        self.pool.update_scores(group_variances(ids, rewards), group_means(ids, rewards))
        if self.cfg.train_env == "synthetic" and self.generator is not None:
            grow_pool(self.pool, self.generator, self.cfg.curriculum, self.rng)
        metrics = self.pool.metrics()
        self.pool.log()
        return metrics

    def _trajectories(self, result: RolloutResult, synthetic: bool) -> list:
        source = "synthetic" if synthetic else "real"
        env = self.cfg.env.name
        return [e.trajectory(source, env, "policy", self.cfg.seed, self.ledger["episodes"] + i)
                for i, e in enumerate(result.episodes)]

    def _budget_spent(self) -> bool:
        budget = self.cfg.real_transition_budget
        return budget is not None and self.ledger["real_transitions"] >= budget

    def _pad_id(self) -> int:
        tok = self.policy.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
