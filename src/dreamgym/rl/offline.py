"""`OfflinePolicy`: the LightningModule of the offline baselines, SFT (behaviour cloning) and DPO, on the
LoRA policy: one optimizer step per batch, its gradient accumulated over micro-batches of at most
`train.micro_batch_tokens` padded tokens (manual optimization: the same gradient as one pass, the activation
memory of one micro-batch), clipped to `train.max_grad_norm` by one foreach norm that is also logged.

Both score action tokens with `rl.batch.policy_forward`, the function PolicyRL scores rollouts with (LM
head only at response positions, full-vocabulary softmax at temperature 1):
- SFT: token-mean NLL over action tokens (mask 1); prompt, observations, template glue and padding never
  enter the loss. Logs `sft/loss`, `sft/val_loss`, `sft/tokens_trained`.
- DPO: `rl.dpo.dpo_loss` over (chosen, rejected) rows interleaved in the batch, against reference sums
  computed once before training by `fill_reference_logps` (the policy as loaded: base with a fresh, zero
  LoRA, i.e. adapter disabled, or the warm-start adapter). Logs `dpo/loss`, `dpo/val_loss`,
  `dpo/reward_accuracy`, `dpo/reward_margin`, `dpo/chosen_reward`, `dpo/rejected_reward`,
  `dpo/val_reward_accuracy`, `dpo/tokens_trained`; both `<mode>/grad_norm` (before clipping).
Checkpoints hold the trainable (adapter) weights only plus the module's counters; the frozen base is rebuilt
from `model.*` on resume.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dreamgym.config import DPOPolicyConfig, SFTPolicyConfig
from dreamgym.models.distributed import clip_grad_norm_
from dreamgym.rl.batch import micro_batch_weights, micro_batches, policy_forward
from dreamgym.rl.dpo import dpo_loss, sequence_logps
from dreamgym.rl.sft_data import TokenizedPair, collate_pairs

__all__ = ["OfflinePolicy", "fill_reference_logps"]


class OfflinePolicy(L.LightningModule):
    def __init__(self, cfg: SFTPolicyConfig, model: Any, tokenizer: Any):
        super().__init__()
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.mode = "dpo" if isinstance(cfg, DPOPolicyConfig) else "sft"
        self.strict_loading = False  # checkpoints hold the adapter weights only
        self.tokens_trained = 0
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.val_accuracies: list[float] = []
        self._val: dict[str, float] = {}
        self.automatic_optimization = False  # micro-batched gradient accumulation (accumulate_gradients)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["response_mask"]
        logp, _, _ = policy_forward(self.model, batch["input_ids"], batch["attention_mask"], mask)
        seq = sequence_logps(logp, mask)
        if self.mode == "sft":
            n = mask.sum().clamp_min(1.0)
            return -seq.sum() / n, {"tokens": float(mask.sum())}
        d = self.cfg.dpo
        loss, stats = dpo_loss(seq[0::2], seq[1::2], batch["ref_chosen"].to(seq), batch["ref_rejected"].to(seq),
                               d.beta, d.label_smoothing)
        return loss, {**stats, "tokens": float(mask.sum())}

    def accumulate_gradients(self, batch: dict[str, torch.Tensor], backward) -> tuple[torch.Tensor, dict[str, float]]:
        """`backward` of the batch's loss one micro-batch (`train.micro_batch_tokens`) at a time, each trimmed to
        its longest row and weighted by its share (SFT: of the action tokens, the loss being a token mean;
        DPO: of the pairs, whose rows stay together). Returns the batch's loss (detached) and stats, equal to
        one pass over the whole batch."""
        attn = batch["attention_mask"]
        lengths = attn.sum(-1)
        if self.mode == "dpo":  # units are pairs, rows 2i (chosen) and 2i + 1 (rejected): two rows of the longer
            lengths = 2 * torch.maximum(lengths[0::2], lengths[1::2])
        parts = micro_batches(torch.arange(len(lengths)), lengths, self.cfg.train.micro_batch_tokens)
        if self.mode == "dpo":  # the loss is a mean over pairs
            weights = [len(part) / len(lengths) for part in parts]
        else:  # a token mean over action tokens
            weights = [w for w, _ in micro_batch_weights(batch["response_mask"], parts, "token-mean")]
        loss_sum, stats_sum = torch.zeros((), device=attn.device), {}
        for part, weight in zip(parts, weights):
            rows = torch.stack([2 * part, 2 * part + 1], dim=1).reshape(-1) if self.mode == "dpo" else part
            rows = rows.to(attn.device)
            cols = int(attn[rows].sum(-1).max())  # right-padded: nothing real lies beyond
            sub = {k: v[rows, :cols] for k, v in batch.items() if k in ("input_ids", "attention_mask", "response_mask")}
            if self.mode == "dpo":
                sub.update(ref_chosen=batch["ref_chosen"][part.to(batch["ref_chosen"].device)],
                           ref_rejected=batch["ref_rejected"][part.to(batch["ref_rejected"].device)])
            loss, stats = self.loss(sub)
            backward(loss * weight)
            loss_sum += loss.detach() * weight
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + (v if k == "tokens" else v * weight)
        return loss_sum, stats_sum

    # -- Lightning --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        loss, stats = self.accumulate_gradients(batch, self.manual_backward)
        norm = clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm or None, self._trainer)
        opt.step()
        self.tokens_trained += int(stats.pop("tokens"))
        rows = batch["input_ids"].shape[0]
        logs = {f"{self.mode}/loss": loss, f"{self.mode}/tokens_trained": float(self.tokens_trained)}
        if norm is not None:
            logs[f"{self.mode}/grad_norm"] = norm
        logs.update({f"dpo/{k}": v for k, v in stats.items()})
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=rows, prog_bar=False)
        self.train_losses.append(float(loss))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {"loss": 0.0, "acc": 0.0, "n": 0.0}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, stats = self.loss(batch)
        weight = stats["tokens"] if self.mode == "sft" else batch["input_ids"].shape[0] / 2
        self._val["loss"] += float(loss) * weight
        self._val["acc"] += stats.get("reward_accuracy", 0.0) * weight
        self._val["n"] += weight

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("n"):
            return
        val_loss = self._val["loss"] / self._val["n"]
        self.log(f"{self.mode}/val_loss", val_loss, prog_bar=True)
        self.val_losses.append(val_loss)
        if self.mode == "dpo":
            acc = self._val["acc"] / self._val["n"]
            self.log("dpo/val_reward_accuracy", acc)
            self.val_accuracies.append(acc)

    def configure_optimizers(self):
        t = self.cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["offline_policy"] = {"tokens_trained": self.tokens_trained, "train_losses": self.train_losses,
                                        "val_losses": self.val_losses, "val_accuracies": self.val_accuracies}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("offline_policy", {})
        self.tokens_trained = state.get("tokens_trained", 0)
        self.train_losses = list(state.get("train_losses", []))
        self.val_losses = list(state.get("val_losses", []))
        self.val_accuracies = list(state.get("val_accuracies", []))

    def summary(self) -> dict:
        last = self.train_losses[-10:]
        out = {"train_loss_first": self.train_losses[0] if self.train_losses else None,
               "train_loss": sum(last) / len(last) if last else None,
               "val_loss_first": self.val_losses[0] if self.val_losses else None,
               "val_loss": self.val_losses[-1] if self.val_losses else None, "tokens_trained": self.tokens_trained}
        if self.mode == "dpo":
            out["val_reward_accuracy"] = self.val_accuracies[-1] if self.val_accuracies else None
        return out


@torch.no_grad()
def fill_reference_logps(model: Any, pairs: list[TokenizedPair], pad_id: int, batch_size: int) -> None:
    """Set each pair's ref_chosen / ref_rejected: the sequence log-probs under `model` as it is now (the
    DPO reference), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            b = {k: v.to(device) for k, v in collate_pairs(chunk, pad_id).items()}
            logp, _, _ = policy_forward(model, b["input_ids"], b["attention_mask"], b["response_mask"])
            seq = sequence_logps(logp, b["response_mask"]).float().cpu()
            for i, p in enumerate(chunk):
                p.ref_chosen, p.ref_rejected = float(seq[2 * i]), float(seq[2 * i + 1])
    finally:
        model.train(was_training)
