"""`OfflinePolicy`: the LightningModule of the offline baselines, SFT (behaviour cloning) and DPO, on the
LoRA policy (automatic optimization, one optimizer step per batch).

Both score action tokens with `rl.batch.policy_forward`, the function PolicyRL scores rollouts with (LM
head only at response positions, full-vocabulary softmax at temperature 1):
- SFT: token-mean NLL over action tokens (mask 1); prompt, observations, template glue and padding never
  enter the loss. Logs `sft/loss`, `sft/val_loss`, `sft/tokens_trained`.
- DPO: `rl.dpo.dpo_loss` over (chosen, rejected) rows interleaved in the batch, against reference sums
  computed once before training by `fill_reference_logps` (the policy as loaded: base with a fresh, zero
  LoRA, i.e. adapter disabled, or the warm-start adapter). Logs `dpo/loss`, `dpo/val_loss`,
  `dpo/reward_accuracy`, `dpo/reward_margin`, `dpo/chosen_reward`, `dpo/rejected_reward`,
  `dpo/val_reward_accuracy`, `dpo/tokens_trained`.
Checkpoints hold the trainable (adapter) weights only plus the module's counters; the frozen base is rebuilt
from `model.*` on resume.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dreamgym.config import DPOPolicyConfig, SFTPolicyConfig
from dreamgym.rl.batch import policy_forward
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

    # -- Lightning --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, stats = self.loss(batch)
        self.tokens_trained += int(stats.pop("tokens"))
        rows = batch["input_ids"].shape[0]
        logs = {f"{self.mode}/loss": loss.detach(), f"{self.mode}/tokens_trained": float(self.tokens_trained)}
        logs.update({f"dpo/{k}": v for k, v in stats.items()})
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=rows, prog_bar=False)
        self.train_losses.append(float(loss.detach()))
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
