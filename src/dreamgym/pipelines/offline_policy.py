"""`dreamgym sft-policy` and `dreamgym dpo-policy`: the offline baselines on trajectory JSON lines
(`collect --policy oracle`, optionally plus failed/random trajectories for DPO's rejected actions).

run dir + config.yaml -> seed -> trajectories (train split, real only; see `rl/sft_data`) -> examples
(SFT: whole demonstration episodes; DPO: preference pairs + reference log-probs) split into train/val
by task id -> `OfflinePolicy` fit (TensorBoard under `tb/`, `checkpoints/last.ckpt` every epoch) -> the
adapter in `checkpoints/adapter` (`adapter_dir` in summary.json), optionally copied to `export`.

`--policy sft` anywhere resolves through `resolve_policy`: the adapter exported to `checkpoints/sft`
(`sft-policy --export checkpoints/sft`), else the newest finished `logs/sft-policy/*` run. `base` means no
adapter. Both functions return the summary dict (the quickstart calls them directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L

from dreamgym.config import DPOPolicyConfig, SFTPolicyConfig, load_config, to_yaml
from dreamgym.errors import DreamGymError
from dreamgym.runs import RunDir
from dreamgym.types import read_trajectories

__all__ = ["sft_policy", "dpo_policy", "build_offline_policy", "resolve_policy", "SFT_EXPORT_DIR"]

SFT_EXPORT_DIR = Path("checkpoints") / "sft"
"""where `--policy sft` looks first (relative to the working directory)"""


def sft_policy(cfg: SFTPolicyConfig, data: Sequence[str | Path], run_dir: str | Path | None = None,
               policy: str | None = None, resume: bool = False, export: str | Path | None = None) -> dict:
    """Behaviour cloning of the policy on the demonstrations in `data`; returns the summary."""
    return _run("sft-policy", cfg, data, run_dir, policy, resume, export)


def dpo_policy(cfg: DPOPolicyConfig, data: Sequence[str | Path], run_dir: str | Path | None = None,
               policy: str | None = None, resume: bool = False, export: str | Path | None = None) -> dict:
    """DPO of the policy (from `policy`, e.g. the SFT warm start, or the base) on pairs from `data`."""
    return _run("dpo-policy", cfg, data, run_dir, policy, resume, export)


def resolve_policy(policy: str | Path | None) -> str | None:
    """A `--policy` value -> adapter folder or run dir to load, or None for the base model. 'sft' is the SFT
    warm start: `checkpoints/sft` when it holds an adapter, else the newest `logs/sft-policy/*` run with a
    summary. 'oracle'/'random' are scripted and cannot be trained or warm-started from."""
    if policy is None or str(policy) == "base":
        return None
    if str(policy) == "sft" and not Path("sft").exists():
        if (SFT_EXPORT_DIR / "adapter_config.json").is_file():
            return str(SFT_EXPORT_DIR)
        runs = sorted(p.parent for p in Path("logs/sft-policy").glob("*/summary.json"))
        if runs:
            return str(runs[-1])
        raise DreamGymError(f"--policy sft: no SFT warm start found; train one with `dreamgym sft-policy --data "
                            f"TRAJ --export {SFT_EXPORT_DIR}` (or pass its run dir / adapter folder)")
    if str(policy) in ("oracle", "random"):
        raise DreamGymError(f"--policy {policy}: a scripted policy has no weights; expected base, sft, a run dir "
                            "or an adapter folder")
    return str(policy)


def build_offline_policy(cfg: SFTPolicyConfig, run: RunDir, data: Sequence[str | Path], policy: str | None = None):
    """(OfflinePolicy, datamodule (its `stats` describe the data), Trainer) for a run dir; tests reuse it."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from dreamgym.models.loading import load_adapter, load_model
    from dreamgym.rl.offline import OfflinePolicy

    init = resolve_policy(policy)
    model, tok = load_adapter(cfg.model, init, for_training=True) if init else load_model(cfg.model, for_training=True)
    module = OfflinePolicy(cfg, model, tok)
    datamodule = _OfflineData(cfg, module, _read(data))
    t = cfg.train
    logger = TensorBoardLogger(save_dir=str(run.path), name="tb", version="", default_hp_metric=False)
    # Lightning writes last.ckpt only beside a top-k save: save_top_k=0 would never write it (keep 1, unmonitored)
    callbacks: list = [ModelCheckpoint(dirpath=str(run.checkpoints_dir), save_last=True, save_top_k=1),
                       StepCheckpoint(run.checkpoints_dir / "last.ckpt", t.checkpoint_every_n_steps)]
    if t.progress:
        callbacks.append(RichProgressBar())
    device = next(model.parameters()).device
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=t.max_epochs,
                        max_steps=t.max_steps, logger=logger,  # the module clips (train.max_grad_norm)
                        callbacks=callbacks, enable_progress_bar=t.progress, enable_model_summary=False,
                        num_sanity_val_steps=0, log_every_n_steps=1, limit_val_batches=1.0 if datamodule.val else 0,
                        default_root_dir=str(run.path))
    return module, datamodule, trainer


class StepCheckpoint(L.Callback):
    """Writes `path` (last.ckpt) every `every` optimizer steps (0 = never), so a run stopped mid-epoch (a
    resumable chunk's `timeout`, a kill) resumes from at most `every` steps back; ModelCheckpoint adds the
    epoch-end saves. With max_steps below one epoch there would otherwise be no checkpoint before the end."""

    def __init__(self, path: Path, every: int):
        self.path, self.every, self.saved_at = Path(path), int(every), -1

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0 and step != self.saved_at:
            trainer.save_checkpoint(self.path)
            self.saved_at = step


# -- internals ---------------------------------------------------------------------------------

def _run(command: str, cfg: SFTPolicyConfig, data: Sequence[str | Path], run_dir, policy, resume, export) -> dict:
    paths = [Path(p) for p in data or []]
    if not paths:
        raise DreamGymError(f"{command}: --data PATH is required (trajectory JSON lines, e.g. from "
                            "`dreamgym collect --policy oracle`)")
    run = RunDir.open(command, run_dir, cfg, resume=resume)
    if resume:
        _check_resume(run, cfg)
    for p in paths:
        run.record_input(p)
    L.seed_everything(cfg.seed, workers=True)
    with run.phase("setup"):
        module, datamodule, trainer = build_offline_policy(cfg, run, paths, policy)
    last = run.checkpoints_dir / "last.ckpt"
    with run.phase("fit"):
        if datamodule.val and not (resume and last.is_file()):
            trainer.validate(module, datamodule=datamodule, verbose=False)  # the loss before training
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.is_file() else None)
        trainer.save_checkpoint(last)
    with run.phase("export"):
        from dreamgym.models.loading import save_adapter

        adapter = save_adapter(module.model, run.checkpoints_dir / "adapter")
        if export is not None:
            save_adapter(module.model, Path(export))
    fit_s = run.wall_clock_s.get("fit", 0.0)
    gpu = module.device.type == "cuda"
    return run.write_summary(
        mode=module.mode, env=cfg.env.name, adapter_dir=str(adapter), exported_to=str(export) if export else None,
        policy_init=policy, data=[str(p) for p in paths], global_step=trainer.global_step,
        epochs=trainer.current_epoch, **datamodule.stats, **module.summary(), real_transitions=0,
        synthetic_transitions=0, tokens_generated=0, gpu_hours=round(fit_s / 3600.0, 4) if gpu else 0.0)


def _read(paths: Sequence[Path]) -> list:
    trajs = []
    for p in paths:
        trajs.extend(read_trajectories(p))
    return trajs


def _check_resume(run: RunDir, cfg: SFTPolicyConfig) -> None:
    saved = load_config(type(cfg), [run.config_path], [])
    changed = [k for k in ("model", "rollout", "env") if to_yaml(getattr(saved, k)) != to_yaml(getattr(cfg, k))]
    if saved.seed != cfg.seed or saved.train.val_fraction != cfg.train.val_fraction:
        changed.append("seed/train.val_fraction")
    if changed:
        raise DreamGymError(f"--resume: {', '.join(changed)} differ from the saved config of {run.path}; a resumed "
                            "run keeps its model, context layout and data split (drop those overrides)")


class _OfflineData(L.LightningDataModule):
    """Examples (SFT episodes or DPO pairs) split by task id into train/val, as Lightning loaders."""

    def __init__(self, cfg: SFTPolicyConfig, module, trajectories: list):
        super().__init__()
        from dreamgym.experience.sft_data import split_by_trajectory
        from dreamgym.rl.context import ChatContext, ContextSettings
        from dreamgym.rl.sft_data import (episode_example, preference_pairs, select_trajectories,
                                          tokenize_pairs)

        self.cfg, t, r = cfg, cfg.train, cfg.rollout
        tok = module.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ctx = ChatContext(tok, ContextSettings(observation_chars=r.observation_chars))
        demos, failed, skipped = select_trajectories(trajectories, t.only_success)
        if not demos:
            raise DreamGymError(f"--data: no usable demonstrations (train split, real, {'successful' if t.only_success else 'any'}) "
                                f"among {len(trajectories)} trajectories; skipped {skipped}")
        train_tasks, _ = split_by_trajectory([d.task.id for d in demos], t.val_fraction, cfg.seed)
        self.stats: dict = {"trajectories": len(trajectories), "demonstrations": len(demos),
                            "skipped_trajectories": skipped, "offline_transitions": sum(len(d.steps) for d in demos)}
        if module.mode == "sft":
            examples = [e for d in demos if (e := episode_example(ctx, d, r.action_space, r.max_context_tokens))]
            self.stats["dropped_too_long"] = len(demos) - len(examples)
            items = examples
            self._collate = lambda rows: _collate_sft(rows, self.pad_id)
            lengths = [len(e.ids) for e in examples]
        else:
            from dreamgym.rl.offline import fill_reference_logps

            pairs, sources = preference_pairs(demos, failed, r.action_space, cfg.dpo.rejected_from, cfg.seed)
            items, dropped = tokenize_pairs(ctx, demos, pairs, r.action_space, r.max_context_tokens)
            if not items:
                raise DreamGymError(f"--data: no preference pairs could be built from {len(demos)} demonstrations "
                                    f"(rejected sources {sources}, {dropped} too long)")
            fill_reference_logps(module.model, items, self.pad_id, t.batch_size)
            self.stats.update(pairs=len(items), rejected_sources=sources, dropped_too_long=dropped)
            from dreamgym.rl.sft_data import collate_pairs

            self._collate = lambda rows: collate_pairs(rows, self.pad_id)
            lengths = [len(p.prefix) + max(len(p.chosen), len(p.rejected)) for p in items]
        task_of = (lambda e: e.task_id) if module.mode == "sft" else (lambda p: p.pair.task_id)
        idx_train = [i for i, e in enumerate(items) if task_of(e) in train_tasks]
        idx_val = [i for i, e in enumerate(items) if task_of(e) not in train_tasks]
        self.train = [items[i] for i in idx_train]
        self.val = [items[i] for i in idx_val]
        self._lengths = [lengths[i] for i in idx_train]
        self.stats.update(train_examples=len(self.train), val_examples=len(self.val))
        if not self.train:
            raise DreamGymError("key 'train.val_fraction': every example landed in validation; lower it")

    def train_dataloader(self):
        from dreamgym.experience.sft_data import BucketBatchSampler, ResumableLoader, batches_done

        t = self.cfg.train
        sampler = BucketBatchSampler(self._lengths, t.batch_size, t.bucket_megabatch, self.cfg.seed,
                                     epoch_fn=lambda: self.trainer.current_epoch if self.trainer is not None else 0)
        # stateful: a resume from a mid-epoch step checkpoint continues that epoch's batch order
        return ResumableLoader(self.train, batch_sampler=sampler, collate_fn=self._collate, num_workers=0,
                               batches_done=lambda: batches_done(self.trainer))

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        if not self.val:
            return []
        return DataLoader(self.val, batch_size=self.cfg.train.batch_size, shuffle=False, collate_fn=self._collate,
                          num_workers=0)


def _collate_sft(examples: list, pad_id: int):
    from dreamgym.rl.sft_data import collate_examples

    return collate_examples([(e.ids, e.mask) for e in examples], pad_id)
