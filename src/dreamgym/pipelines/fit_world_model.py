"""`dreamgym fit-world-model`: SFT of the experience model M_exp on real transitions (paper Eq. 5).

run dir + config.yaml -> seed -> `build_fit_world_model` (records, `ExperienceModel`, `SFTDataModule`,
Lightning Trainer with TensorBoard under `tb/`, `ModelCheckpoint` last.ckpt, rich bar) -> optional
validation before training -> `fit` -> a final validation and `samples/wm` unless the last step just had them
-> the adapter in `<run>/checkpoints/adapter` -> summary.json.

Resume (`--resume --run-dir RUN`): the CLI merges the run's saved config.yaml first, so the saved config
is the base and overrides apply on top; overrides that change the model, the prompt, the split (seed,
sft.val_fraction) or sft.max_seq_len are refused, and so are data files whose hashes differ from those
in the run's provenance.json. Training continues from `checkpoints/last.ckpt` (e.g. with a larger
sft.max_steps), and the config.yaml is rewritten with what the continuation runs under.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from dreamgym.config import FitWorldModelConfig, load_config, to_yaml
from dreamgym.errors import DreamGymError
from dreamgym.models.distributed import build_strategy
from dreamgym.runs import RunDir, RunDirError, atomic_write_text, file_sha256

__all__ = ["fit_world_model", "build_fit_world_model", "resolve_precision", "FROZEN_ON_RESUME"]

log = logging.getLogger(__name__)
FROZEN_ON_RESUME = ("model", "prompt", "seed", "sft.val_fraction", "sft.max_seq_len")
"""config keys a resumed run may not change (they define the model or the data it trains on)"""


def fit_world_model(cfg: FitWorldModelConfig, data: Sequence[str | Path], run_dir: str | Path | None = None,
                    resume: bool = False) -> dict:
    """Train M_exp on the SFT records of `data` (annotated sets or trajectory files); returns the summary."""
    import lightning as L

    data = [Path(p) for p in data or []]
    if not data:
        raise DreamGymError("--data PATH is required (the SFT set of `dreamgym annotate` or trajectory files)")
    for p in data:
        if not p.is_file():
            raise DreamGymError(f"--data {p}: file not found")
    if resume:
        _check_resume(cfg, data, run_dir)
    run = RunDir.open("fit-world-model", run_dir, cfg, resume=resume)
    if resume:
        atomic_write_text(run.config_path, to_yaml(cfg))
    for p in data:
        run.record_input(p)
    ckpt = run.checkpoints_dir / "last.ckpt"
    if resume and not ckpt.is_file():
        raise RunDirError(f"{run.path}: cannot resume, no checkpoints/last.ckpt there")
    L.seed_everything(cfg.seed, workers=True)
    with run.phase("setup"):
        module, datamodule, trainer = build_fit_world_model(cfg, run, data)
    with run.phase("fit"):
        if cfg.sft.validate_before_fit and not resume and datamodule.val:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if resume else None)
        # ModelCheckpoint skips a stop at max_steps/max_time mid-epoch; resume needs that state. Saved before
        # the final validation: `trainer.validate` drops the fit loop's train-loader state from checkpoints
        trainer.save_checkpoint(ckpt)
        if datamodule.val and module.last_val_step != trainer.global_step:  # the 'after' val loss, always
            trainer.validate(module, datamodule=datamodule, verbose=False)
        if cfg.sft.sample_every_n_val and module.last_samples_step != trainer.global_step:
            module.log_samples()                                             # and samples of the final model
        trainer.logger.finalize("success")
    with run.phase("save"):  # under FSDP a collective: every process gathers, rank 0 writes
        adapter_dir = module.save_weights(run.checkpoints_dir / "adapter")
    fit_s = run.wall_clock_s.get("fit", 0.0)
    gpu = module.device.type == "cuda"
    stats = {**datamodule.summary(), **module.summary()}
    return run.write_summary(
        adapter_dir=str(adapter_dir), global_step=trainer.global_step, epochs=trainer.current_epoch,
        model=cfg.model.name, lora=cfg.model.lora.enabled, quantization=cfg.model.quantization,
        precision=str(trainer.precision), data=[str(p) for p in data], strategy=cfg.sft.strategy,
        devices=trainer.world_size, **stats,
        synthetic_transitions=0, gpu_hours=fit_s / 3600.0 if gpu else 0.0,
    )


def build_fit_world_model(cfg: FitWorldModelConfig, run: RunDir, data: Sequence[str | Path]) -> tuple[Any, Any, Any]:
    """(ExperienceModel, SFTDataModule set up, Trainer) for a run dir; tests reuse it."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from dreamgym.experience.module import ExperienceModel
    from dreamgym.experience.sft_data import SFTDataModule, load_records

    records = load_records(data)
    module = ExperienceModel(cfg)
    datamodule = SFTDataModule(records, module.tokenizer, cfg.prompt, cfg.sft, seed=cfg.seed)
    datamodule.setup("fit")
    if cfg.prompt.reasoning and not datamodule.summary()["examples_with_reasoning"]:
        log.warning("no SFT record carries a reasoning trace (raw trajectories or annotate --teacher none), but "
                    "prompt.reasoning is true: the model learns to skip <think>, and a synthetic env that requires "
                    "reasoning will count missing_reasoning fallbacks; consider prompt.reasoning=false")
    sft = cfg.sft
    device = next(module.model.parameters()).device  # where models/loading put it (the module still says cpu)
    logger = TensorBoardLogger(save_dir=str(run.path), name="tb", version="", default_hp_metric=False)
    logger.experiment.add_text("config", f"```yaml\n{to_yaml(cfg)}\n```", global_step=0)
    callbacks: list[Any] = [ModelCheckpoint(dirpath=str(run.checkpoints_dir), save_last=True)]
    if sft.progress:
        callbacks.append(RichProgressBar())
    per_batches = isinstance(sft.val_check_interval, int)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=sft.devices,
        strategy=build_strategy(sft.strategy, module.model, sft.devices),
        precision=resolve_precision(sft.precision, device),
        max_steps=sft.max_steps, max_epochs=sft.max_epochs,
        max_time=timedelta(seconds=sft.max_time_s) if sft.max_time_s > 0 else None,
        val_check_interval=sft.val_check_interval, check_val_every_n_epoch=None if per_batches else 1,
        limit_val_batches=sft.limit_val_batches if datamodule.val else 0,
        accumulate_grad_batches=sft.accumulate_grad_batches,
        gradient_clip_val=sft.gradient_clip_val or None, gradient_clip_algorithm="norm",
        logger=logger, callbacks=callbacks, enable_progress_bar=sft.progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=sft.log_every_n_steps, use_distributed_sampler=False,
        default_root_dir=str(run.path),
    )
    return module, datamodule, trainer


def resolve_precision(precision: str, device: Any) -> str:
    """Lightning precision for sft.precision: 'auto' follows `pick_dtype` (bf16-mixed where the device runs
    bf16 natively, 16-mixed on other GPUs, 32-true on other CPUs); anything else as given."""
    if precision != "auto":
        return precision
    import torch

    from dreamgym.models.loading import pick_dtype

    dtype = pick_dtype(device)
    if dtype == torch.bfloat16:
        return "bf16-mixed"
    return "16-mixed" if dtype == torch.float16 else "32-true"


# -- internals ---------------------------------------------------------------------------------

def _check_resume(cfg: FitWorldModelConfig, data: list[Path], run_dir: str | Path | None) -> None:
    """Refuse a resume whose config changes a FROZEN_ON_RESUME key or whose data differ (by hash)."""
    if run_dir is None:
        raise RunDirError("--resume needs --run-dir DIR (the run to continue)")
    path = Path(run_dir)
    saved_path, prov_path = path / "config.yaml", path / "provenance.json"
    if not saved_path.is_file():
        raise RunDirError(f"{path}: cannot resume, no config.yaml there")
    saved = OmegaConf.to_container(OmegaConf.structured(load_config(FitWorldModelConfig, [saved_path])))
    now = OmegaConf.to_container(OmegaConf.structured(cfg))
    changed = [f"{key}: {old!r} -> {new!r}" for frozen in FROZEN_ON_RESUME
               for key, old, new in _diff(_get(saved, frozen), _get(now, frozen), frozen)]
    if changed:
        raise DreamGymError(f"{saved_path}: --resume cannot change the model or the data it trains on; refused "
                            f"override(s): {'; '.join(changed)}. Start a new run (another --run-dir) instead")
    try:
        old_hashes = json.loads(prov_path.read_text()).get("input_files", {})
    except (OSError, json.JSONDecodeError):
        old_hashes = {}
    if not old_hashes:
        raise RunDirError(f"{prov_path}: no recorded data files to check --data against; cannot resume")
    new_hashes = {file_sha256(p) for p in data}
    if new_hashes != set(old_hashes.values()):
        raise DreamGymError(f"--data: the files given differ from the run's data ({', '.join(sorted(old_hashes))}, "
                            f"compared by sha256 in {prov_path}); --resume must train on the same data")


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _diff(old: Any, new: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(old.keys() | new.keys()) for d in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [(prefix, old, new)]
