"""PolicyRL: the LightningModule that trains the policy with PPO or GRPO on rollout batches (style §6).

Manual optimization: one training step = one iteration's rollouts (made by the DataModule with the
live weights, checked by `policy_version`), then `update_epochs` passes of minibatch updates with
gradient clipping, an optional early stop on `target_kl` and optional linear lr annealing. Each minibatch's
gradient is accumulated over micro-batches of at most `algo.micro_batch_tokens` padded tokens (the same
gradient, bounded activation memory). The policy is
LoRA on a frozen base; the reference policy for the KL term is the same model with the adapter disabled
(no second copy). PPO adds
a scalar value head on the policy's last hidden state (shared trunk) and GAE over sampled tokens; GRPO
normalises outcome rewards within each task group and drops zero-variance groups (their share logged).
Every log-prob (new, old, reference) and the entropy score the distribution the rollout sampled from:
logits / `rollout.temperature`, in choice mode renormalised over the allowed ids the rollout stored per
sampled token (`RolloutBatch.allowed_ids`).
"""

from __future__ import annotations

import contextlib

import lightning as L
import torch

from dreamgym.config import TrainPolicyConfig
from dreamgym.models.distributed import clip_grad_norm_
from dreamgym.rl.advantages import (broadcast_sequence_advantages, filter_zero_variance_groups, gae, group_advantages,
                                    group_reward_std, masked_mean_std, whiten)
from dreamgym.rl.batch import RolloutBatch, micro_batch_weights, micro_batches, policy_forward
from dreamgym.rl.losses import clipped_pg_loss, explained_variance, kl_penalty, masked_mean, value_loss

__all__ = ["PolicyRL"]


class PolicyRL(L.LightningModule):
    def __init__(self, cfg: TrainPolicyConfig, model, tokenizer):
        super().__init__()
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.automatic_optimization = False
        hidden = model.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1) if cfg.algo.name == "ppo" else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
        self.policy_version = 0
        self.iteration = 0
        self.tokens_trained = 0
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.history: list[dict[str, float]] = []

    # -- Lightning --------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.algo.lr, weight_decay=self.cfg.algo.weight_decay)

    def training_step(self, dataloader_iter):
        batch, _, _ = next(dataloader_iter)
        assert batch.policy_version == self.policy_version, "rollout sampled with stale weights"
        stats = self.update(batch)
        self.iteration += 1
        stats["perf/iteration"] = float(self.iteration)
        self.history.append({**batch.metrics, **stats})
        self.log_dict({**batch.metrics, **stats}, on_step=True, prog_bar=False, batch_size=len(batch))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["policy_rl"] = {"policy_version": self.policy_version, "iteration": self.iteration,
                                   "rng": self.rng.get_state(), "history": self.history,
                                   "tokens_trained": self.tokens_trained}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("policy_rl", {})
        self.policy_version = state.get("policy_version", 0)
        self.iteration = state.get("iteration", 0)
        if "rng" in state:
            self.rng.set_state(state["rng"])
        self.history = state.get("history", [])
        self.tokens_trained = state.get("tokens_trained", 0)

    # -- one iteration ----------------------------------------------------------------------------
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        a = self.cfg.algo
        batch = self._to_device(batch)
        prefix = "ppo/" if a.name == "ppo" else "grpo/"
        old_logp, old_values = self._score(batch, reference=False)
        ref_logp = self._reference_logp(batch) if a.kl_coef > 0 else None
        adv, returns, keep, extra = self._advantages(batch, old_values)
        stats: dict[str, float] = {f"{prefix}{k}": v for k, v in extra.items()}
        rows = keep.nonzero(as_tuple=True)[0]
        if len(rows) == 0:
            stats[f"{prefix}updates"] = 0.0
            return stats
        opt = self.optimizers()
        stats[f"{prefix}lr"] = self._set_lr(opt)
        updates, sums = 0, {}
        stop = False
        for _ in range(a.update_epochs):
            for mb in _split(rows, a.minibatch_size, self.rng):
                opt.zero_grad()
                mstats = self.accumulate_gradients(batch, mb, old_logp, old_values, ref_logp, adv, returns,
                                                   self.manual_backward)
                norm = clip_grad_norm_(self.parameters(), a.max_grad_norm or None, self._trainer)
                if norm is not None:  # the norm before clipping, averaged over the updates like the losses
                    mstats = {**mstats, "grad_norm": float(norm)}
                opt.step()
                self.policy_version += 1
                self.tokens_trained += int(batch.response_mask[mb].sum().item())
                updates += 1
                for k, v in mstats.items():
                    sums[k] = sums.get(k, 0.0) + v
                if a.target_kl is not None and mstats["approx_kl"] > 1.5 * a.target_kl:
                    stop = True
                    break
            if stop:
                break
        stats.update({f"{prefix}{k}": v / updates for k, v in sums.items()})
        stats[f"{prefix}updates"] = float(updates)
        if a.name == "ppo":
            stats["ppo/early_stopped"] = float(stop)
            stats["ppo/explained_variance"] = explained_variance(old_values, returns, batch.response_mask)
        return stats

    def _advantages(self, batch: RolloutBatch, old_values):
        a = self.cfg.algo
        mask = batch.response_mask
        if a.name == "ppo":
            adv, returns = gae(batch.token_rewards, old_values, mask, a.gamma, a.lam)
            adv_mean, adv_std = masked_mean_std(adv, mask)
            extra = {"advantage_mean": adv_mean, "advantage_std": adv_std,
                     "return_mean": masked_mean(returns, mask).item(), "value_mean": masked_mean(old_values, mask).item()}
            return whiten(adv, mask), returns, torch.ones(len(batch), dtype=torch.bool), extra
        # GRPO: rows are grouped by task in order (group_size consecutive rollouts per task)
        seq_adv, zero_var = group_advantages(batch.scores, a.group_size)
        keep, share = filter_zero_variance_groups(zero_var, a.group_size)
        if not a.filter_zero_var:
            keep = torch.ones_like(keep)
        return (broadcast_sequence_advantages(seq_adv, mask), None, keep.to(mask.device),
                {"zero_var_groups": share, "score_mean": batch.scores.mean().item(),
                 "group_reward_std": group_reward_std(batch.scores, a.group_size)})

    def accumulate_gradients(self, batch, mb, old_logp, old_values, ref_logp, adv, returns, backward) -> dict:
        """Backward of minibatch `mb`'s loss, one micro-batch (`algo.micro_batch_tokens`) at a time: the same
        gradient as one pass over the whole minibatch, with the activation memory of one micro-batch. Its
        stats (token means over the minibatch, policy_loss as aggregated)."""
        a = self.cfg.algo
        parts = micro_batches(mb, batch.attention_mask[mb].sum(-1), a.micro_batch_tokens)
        stats: dict[str, float] = {}
        for part, (w_loss, w_tok) in zip(parts, micro_batch_weights(batch.response_mask, parts, a.aggregation)):
            loss, pstats = self._loss(batch, part, old_logp, old_values, ref_logp, adv, returns, w_loss, w_tok)
            backward(loss)
            for k, v in pstats.items():
                stats[k] = stats.get(k, 0.0) + v * (w_loss if k in ("policy_loss", "value_loss") else w_tok)
        return stats

    def _loss(self, batch, rows, old_logp, old_values, ref_logp, adv, returns, w_loss=1.0, w_tok=1.0):
        """Loss of micro-batch `rows` (trimmed to its longest row), weighted as its share of the minibatch's
        loss: aggregated terms by w_loss, token-mean ones (entropy) by w_tok."""
        a = self.cfg.algo
        cols = int(batch.attention_mask[rows].sum(-1).max())  # right-padded: nothing real lies beyond

        def sl(t):
            return t[rows, :cols]

        mask = sl(batch.response_mask)
        logp, entropy, values = policy_forward(self.model, sl(batch.input_ids), sl(batch.attention_mask), mask,
                                               self.value_head, with_entropy=True, **self._scoring(batch, rows, cols))
        loss, stats = clipped_pg_loss(logp, sl(old_logp), sl(adv), mask, a.clip_eps, a.clip_eps_high,
                                      aggregation=a.aggregation)
        stats = {"policy_loss": loss.item(), **stats}
        if values is not None:
            vloss, vstats = value_loss(values, sl(old_values), sl(returns), mask, a.value_clip, aggregation=a.aggregation)
            loss = loss + a.vf_coef * vloss
            stats.update(value_loss=vloss.item(), **vstats)
        if ref_logp is not None:
            kl, kstats = kl_penalty(logp, sl(ref_logp), mask, a.kl_estimator, aggregation=a.aggregation)
            loss = loss + a.kl_coef * kl
            stats.update(kstats)
        ent = masked_mean(entropy, mask)
        stats["entropy"] = ent.item()
        loss = loss * w_loss
        if a.entropy_coef:
            loss = loss - a.entropy_coef * ent * w_tok
        return loss, stats

    def _reference_logp(self, batch: RolloutBatch) -> torch.Tensor:
        return self._score(batch, reference=True)[0]

    def _score(self, batch: RolloutBatch, reference: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """No-grad log-probs (and values) of the whole batch under the current policy, or the reference (the
        adapter disabled), one micro-batch at a time (`algo.micro_batch_tokens`): peak memory is one
        micro-batch's, not the iteration's."""
        ctx = (self.model.disable_adapter() if reference and hasattr(self.model, "disable_adapter")
               else contextlib.nullcontext())
        size = max(1, self.cfg.algo.minibatch_size)
        logp = torch.zeros(batch.input_ids.shape, device=batch.input_ids.device)
        values = torch.zeros_like(logp) if self.value_head is not None and not reference else None
        lengths = batch.attention_mask.sum(-1)
        with torch.no_grad(), ctx:
            for start in range(0, len(batch), size):
                rows = torch.arange(start, min(len(batch), start + size), device=batch.input_ids.device)
                for part in micro_batches(rows, lengths[rows], self.cfg.algo.micro_batch_tokens):
                    cols = int(lengths[part].max())
                    lp, _, v = policy_forward(self.model, batch.input_ids[part, :cols],
                                              batch.attention_mask[part, :cols], batch.response_mask[part, :cols],
                                              None if reference else self.value_head,
                                              **self._scoring(batch, part, cols))
                    logp[part, :cols] = lp
                    if values is not None:
                        values[part, :cols] = v
        return logp, values

    def _set_lr(self, opt) -> float:
        """algo.lr, or with anneal_lr its linear decay: lr * (1 - iteration / max_iterations)."""
        a = self.cfg.algo
        lr = a.lr * (1.0 - self.iteration / self.cfg.max_iterations) if a.anneal_lr else a.lr
        for group in opt.param_groups:
            group["lr"] = lr
        return lr

    def _scoring(self, batch: RolloutBatch, rows: torch.Tensor, cols: int) -> dict:
        """How the rollout sampled, so every log-prob scores that distribution: its temperature, and the
        allowed ids of choice mode (of `rows`, the first `cols` positions)."""
        allowed = batch.allowed_ids[rows, :cols]
        return {"allowed_ids": allowed, "temperature": self.cfg.rollout.temperature}

    def _to_device(self, batch: RolloutBatch) -> RolloutBatch:
        d = self.device
        for name in ("input_ids", "attention_mask", "response_mask", "rollout_logprobs", "token_rewards", "scores",
                     "allowed_ids"):
            setattr(batch, name, getattr(batch, name).to(d))
        return batch


def _split(rows: torch.Tensor, size: int, rng: torch.Generator):
    perm = rows[torch.randperm(len(rows), generator=rng)]
    for start in range(0, len(perm), size):
        yield perm[start:start + size]
