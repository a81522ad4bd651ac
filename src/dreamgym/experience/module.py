"""`ExperienceModel`: the Lightning module that fine-tunes the experience model M_exp on real transitions
(paper Eq. 5) with automatic optimization. `fit-world-model` builds it; the synthetic env later loads
what it saves (a peft adapter, or a full model folder for full fine-tuning) through `models/loading`.

Loss: token-level NLL on the labelled target tokens only (prompt never, see `sft_data`), weighted per
part (reasoning `sft.reasoning_weight`, next state 1, reward/done `sft.outcome_weight`) and averaged
over the weights: -log P(R*|...) - log P(s_{t+1}|..., R*) (+ reward/done) as a token mean. Logits are
computed only at the positions that predict a labelled token (`logits_to_keep` as a boolean mask), so
the (B, T, vocab) logits tensor of the prompt is never built.

Training modes come from `model.*`: LoRA (default), QLoRA (quantization=nf4), full fine-tuning
(lora.enabled=false); gradient checkpointing by `model.gradient_checkpointing`. AdamW (decay on
trainable matrices only), linear warmup then cosine/linear decay. Checkpoints of LoRA runs hold only the
trainable weights (the frozen base is rebuilt from `model.*` on resume) plus the module's counters.
Logs `wm/loss` (+ per-part losses), `wm/val_loss`, `wm/lr`, `wm/grad_norm`, `wm/tokens_trained`,
`perf/tokens_per_s` (non-padding tokens per second of train-step compute), `perf/padding_share`, and
every `sft.sample_every_n_val` validations `samples/wm`: greedy predictions vs true targets (markdown).
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from dreamgym.config import FitWorldModelConfig
from dreamgym.experience.prompts import ParseStats, parse_transition
from dreamgym.experience.sft_data import PART_OUTCOME, PART_REASONING, PART_STATE, SFTExample
from dreamgym.models.distributed import clean_param_name, clip_grad_norm_, full_state_dict, is_sharded, uses_fsdp
from dreamgym.models.loading import load_model, save_adapter

__all__ = ["ExperienceModel", "lr_factor", "peak_memory_gb"]

log = logging.getLogger(__name__)
_PART_NAMES = {PART_REASONING: "reasoning", PART_STATE: "state", PART_OUTCOME: "outcome"}


class ExperienceModel(L.LightningModule):
    """M_exp under SFT. `model`/`tokenizer` may be passed in (tests); otherwise loaded for training."""

    def __init__(self, cfg: FitWorldModelConfig, model: Any = None, tokenizer: Any = None):
        super().__init__()
        if model is None:
            model, tokenizer = load_model(cfg.model, for_training=True)
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.strict_loading = not cfg.model.lora.enabled  # LoRA checkpoints hold the trainable weights only
        weights = torch.zeros(4)
        weights[PART_REASONING], weights[PART_STATE] = cfg.sft.reasoning_weight, 1.0
        weights[PART_OUTCOME] = cfg.sft.outcome_weight
        self.register_buffer("part_weights", weights, persistent=False)
        self.counters = {"tokens_trained": 0, "tokens_seen": 0, "pad_tokens": 0, "train_time_s": 0.0,
                         "val_runs": 0, "tokens_generated": 0}
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.last_val_step = -1
        """global step of the latest validation (-1: none yet)"""
        self.last_samples_step = -1
        """global step of the latest `samples/wm` (-1: none yet)"""
        self._val_sums: dict[str, float] = {}
        self._t_batch = 0.0
        self._counters_at_start: dict[str, float] = {}

    # -- loss ------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted token-mean NLL over labelled target tokens, and per-part (nll sum, count) stats."""
        labels, parts = batch["labels"], batch["parts"]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100  # position t predicts token t + 1
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         logits_to_keep=keep, use_cache=False)
        logits = out.logits.reshape(-1, out.logits.shape[-1])  # (N, vocab), N = labelled tokens
        targets, target_parts = labels[:, 1:][keep[:, :-1]], parts[:, 1:][keep[:, :-1]]
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        w = self.part_weights[target_parts]
        loss = (nll * w).sum() / w.sum().clamp_min(1e-8)
        stats = {"weighted_nll": (nll * w).sum().detach(), "weight": w.sum().detach()}
        for part, name in _PART_NAMES.items():
            sel = target_parts == part
            stats[f"{name}_nll"], stats[f"{name}_n"] = nll.detach()[sel].sum(), sel.sum()
        return loss, stats

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, stats = self.loss(batch)
        n_tokens = int(batch["attention_mask"].sum())
        c = self.counters
        c["tokens_seen"] += n_tokens
        c["pad_tokens"] += batch["attention_mask"].numel() - n_tokens
        c["tokens_trained"] += int((batch["labels"] != -100).sum())
        bs = batch["input_ids"].shape[0]
        logs = {"perf/padding_share": 1.0 - n_tokens / batch["attention_mask"].numel(),
                "wm/tokens_trained": float(c["tokens_trained"])}
        for name in _PART_NAMES.values():
            if stats[f"{name}_n"] > 0:
                logs[f"wm/{name}_loss"] = stats[f"{name}_nll"] / stats[f"{name}_n"]
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        self.log("wm/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.train_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, stats = self.loss(batch)
        for k, v in stats.items():
            self._val_sums[k] = self._val_sums.get(k, 0.0) + float(v)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        s = self._val_sums
        if s.get("weight", 0.0) <= 0:
            return
        val_loss = s["weighted_nll"] / s["weight"]
        self.log("wm/val_loss", val_loss, prog_bar=True)
        if s.get("state_n", 0) > 0:
            self.log("wm/val_state_loss", s["state_nll"] / s["state_n"])
        self.val_losses.append(val_loss)
        self.last_val_step = self.global_step
        self.counters["val_runs"] += 1
        every = self.cfg.sft.sample_every_n_val
        if every and (self.counters["val_runs"] - 1) % every == 0 and not self.trainer.sanity_checking:
            self.log_samples()

    def on_train_start(self) -> None:
        self._counters_at_start = dict(self.counters)  # after a resume restored them

    def on_train_end(self) -> None:
        """Token counters of this fit summed over the processes of a multi-device run (each counted its own
        batches; what a resumed checkpoint restored is already a total)."""
        if self.trainer.world_size > 1:
            for key in ("tokens_trained", "tokens_seen", "pad_tokens"):
                start = self._counters_at_start.get(key, 0)
                mine = torch.tensor(float(self.counters[key] - start), device=self.device)
                self.counters[key] = start + int(self.trainer.strategy.reduce(mine, reduce_op="sum").item())

    # -- speed and memory --------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - self._t_batch
        self.counters["train_time_s"] += dt
        self.log("perf/tokens_per_s", float(batch["attention_mask"].sum()) / max(dt, 1e-9), on_step=True,
                 on_epoch=False, batch_size=batch["input_ids"].shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.log("wm/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Log the global gradient norm before clipping (`wm/grad_norm`) and clip by it (sft.gradient_clip_val):
        one norm per optimizer step, from multi-tensor kernels, serving both. Under FSDP the norm is summed
        over the shards (`models.distributed.clip_grad_norm_`): Lightning's FSDPPrecision refuses norm
        clipping, which stopped every FSDP fit at its first step. Lightning calls this hook after the
        backward pass (and AMP's unscale) of every optimizer step, whether or not a clip value is set."""
        by_norm = gradient_clip_algorithm in (None, "norm")
        norm = clip_grad_norm_(self.model.parameters(), gradient_clip_val if by_norm else None, self._trainer)
        if norm is not None:
            self.log("wm/grad_norm", norm, on_step=True, on_epoch=False)
        if not by_norm and gradient_clip_val:  # value clipping: Lightning's own
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)

    # -- optimizer -------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        sft = self.cfg.sft
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [g for g in ({"params": decay, "weight_decay": sft.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        opt = torch.optim.AdamW(groups, lr=sft.lr, betas=(0.9, 0.999), eps=1e-8)
        total = self._total_steps()
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, sft.warmup_steps, total, sft.lr_schedule, sft.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run for the lr schedule: min(max_steps, epochs x steps per epoch).
        Counted from the datamodule, not `trainer.estimated_stepping_batches`: that one builds the train
        loader before checkpoint restore, and the loader's resume state would then never be loaded."""
        sft = self.cfg.sft
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is None or datamodule.train is None:
            return max(sft.max_steps, 1)
        batches = math.ceil(len(datamodule.train) / sft.batch_size) // max(1, self._trainer.world_size)
        by_epochs = math.ceil(batches / sft.accumulate_grad_batches) * sft.max_epochs
        return max(1, min(sft.max_steps, by_epochs) if sft.max_steps > 0 else by_epochs)

    # -- checkpoints and export ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.cfg.model.lora.enabled:
            trainable = self.trainable_names()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if clean_param_name(k) in trainable}
        checkpoint["dreamgym"] = {"counters": dict(self.counters), "train_losses": self.train_losses[-50:],
                                  "val_losses": list(self.val_losses)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = self.trainable_names()
        missing = sorted(trainable - {clean_param_name(k) for k in checkpoint["state_dict"]})
        if missing:
            raise RuntimeError(f"checkpoint lacks {len(missing)} trainable weights (e.g. {missing[0]}); it was "
                               "written for another model or adapter layout")
        saved = checkpoint.get("dreamgym", {})
        self.counters.update(saved.get("counters", {}))
        self.train_losses = list(saved.get("train_losses", []))
        self.val_losses = list(saved.get("val_losses", []))

    def trainable_names(self) -> set[str]:
        """Names (wrapper-free, as checkpoints key them) of the parameters that train."""
        return {clean_param_name(n) for n, p in self.named_parameters() if p.requires_grad}

    def save_weights(self, directory: str | Path) -> Path | None:
        """The trained model for later use: the peft adapter (LoRA/QLoRA, peft standard format) or, for
        full fine-tuning, the whole model + tokenizer via save_pretrained. Under FSDP every process must
        call it (the weights are gathered to rank 0, which writes; the others return None)."""
        directory = Path(directory)
        if uses_fsdp(self._trainer):
            keep = self.trainable_names() if self.cfg.model.lora.enabled else {clean_param_name(n) for n, _ in
                                                                                self.named_parameters()}
            state = full_state_dict(self._trainer, self, keep)
            if state is None:
                return None
            state = {k.removeprefix("model."): v for k, v in state.items()}
        elif self._trainer is not None and self._trainer.global_rank != 0:
            return None  # DDP: every process holds the same weights; rank 0 writes them
        else:
            state = None
        if self.cfg.model.lora.enabled:
            return save_adapter(self.model, directory, state_dict=state)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, state_dict=state)
        self.tokenizer.save_pretrained(directory)
        return directory

    # -- samples and summary ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, examples: list[SFTExample], max_new_tokens: int) -> list[str]:
        """Greedy continuations of the examples' prompts (one at a time: no padding questions)."""
        was_training = self.model.training
        self.model.eval()
        texts = []
        try:
            for ex in examples:
                ids = torch.tensor([ex.input_ids[:ex.prompt_len]], device=self.device)
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
                new = out[0, ids.shape[1]:]
                self.counters["tokens_generated"] += int(new.numel())
                texts.append(self.tokenizer.decode(new, skip_special_tokens=True))
        finally:
            self.model.train(was_training)
        return texts

    def summary(self) -> dict:
        """Numbers for summary.json (losses are token means; tokens_per_s over train-step compute)."""
        c = self.counters
        last = self.train_losses[-10:]
        total = c["tokens_seen"] + c["pad_tokens"]
        return {"train_loss": sum(last) / len(last) if last else None,
                "train_loss_first": self.train_losses[0] if self.train_losses else None,
                "val_loss": self.val_losses[-1] if self.val_losses else None,
                "val_loss_first": self.val_losses[0] if self.val_losses else None,
                "tokens_trained": c["tokens_trained"], "tokens_seen": c["tokens_seen"],
                "tokens_per_s": c["tokens_seen"] / c["train_time_s"] if c["train_time_s"] > 0 else 0.0,
                "padding_share": c["pad_tokens"] / total if total else 0.0,
                "tokens_generated": c["tokens_generated"], "peak_mem_gb": peak_memory_gb(self.device)}

    def log_samples(self) -> None:
        """`samples/wm`: greedy predictions for the datamodule's sample examples vs their true targets, as
        markdown text in every logger that takes text (TensorBoard), at the current global step."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None:
            return
        self.last_samples_step = trainer.global_step
        if is_sharded(trainer):  # each process holds a shard of the weights: no plain generate
            log.info("samples/wm skipped: the weights are sharded over %d FSDP processes", trainer.world_size)
            return
        examples = datamodule.sample_examples(self.cfg.sft.num_samples)
        if not examples:
            return
        predictions = self.generate(examples, self.cfg.sft.sample_max_new_tokens)
        parts = []
        for i, (ex, pred) in enumerate(zip(examples, predictions), 1):
            stats = ParseStats()
            parsed = parse_transition(pred, "", stats, require_reasoning="<think>" in ex.target)
            verdict = f"parse fallback: {parsed.parse_fallback}" if parsed.parse_fallback else "parses"
            parts.append(f"**example {i}** (trajectory `{ex.trajectory_id}`, {verdict})\n\npredicted:\n\n"
                         f"```text\n{pred}\n```\n\nreal:\n\n```text\n{ex.target}\n```")
        text = "\n\n---\n\n".join(parts)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                experiment.add_text("samples/wm", text, global_step=trainer.global_step)


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warmup over `warmup` steps (from
    1/(warmup+1)), then 'cosine' or 'linear' decay to min_ratio at step `total`, or 'constant'."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def peak_memory_gb(device: torch.device | str) -> float:
    """Peak memory in GB (1e9 bytes): CUDA max allocated on a GPU, else the process's peak RSS."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024) / 1e9
