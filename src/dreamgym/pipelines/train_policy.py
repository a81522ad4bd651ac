"""`dreamgym train-policy`: PPO/GRPO of a LoRA policy in the synthetic env (experience model + replay
buffer + curriculum) or directly in a real env, through the same rollout loop and PolicyRL module.

`build_train_policy` wires the objects (tests reuse it); `train_policy` opens the run dir, fits, exports
the adapter and writes the summary. Checkpoints (`checkpoints/last.ckpt`: module, optimizer, PolicyRL and
DataModule state) and the buffer copy (`checkpoints/buffer/`) are written every `checkpoint_every`
iterations; `--resume` continues from them with the saved config. With `real_transition_budget` (train_env=real) the
real env is wrapped in `BudgetedVectorEnv`: the run uses at most that many real transitions, then stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from dreamgym.config import TrainPolicyConfig, to_yaml
from dreamgym.curriculum.sampler import TaskPool
from dreamgym.data.budget import BudgetedVectorEnv, strip_budget_steps
from dreamgym.data.datamodule import PolicyDataModule
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.errors import DreamGymError
from dreamgym.models.loading import load_adapter, load_model, save_adapter
from dreamgym.rl.module import PolicyRL
from dreamgym.runs import RunDir
from dreamgym.types import write_trajectories

__all__ = ["train_policy", "build_train_policy"]


def train_policy(cfg: TrainPolicyConfig, run_dir: Path | None = None, world_model: str | None = None,
                 buffer: str | None = None, policy: str | None = None, resume: bool = False,
                 progress: bool = True) -> dict:
    run = RunDir.open("train-policy", run_dir, cfg, resume=resume)
    if resume:
        _check_resume(run, cfg)
    L.seed_everything(cfg.seed, workers=True)
    saved_buffer = run.checkpoints_dir / "buffer"
    if resume and buffer is not None and (saved_buffer / "meta.json").is_file():
        buffer = str(saved_buffer)  # the copy saved with the checkpoint, holding what the run added (contracts)
    with run.phase("setup"):
        module, data, trainer, parts = build_train_policy(cfg, run, world_model, buffer, policy, progress)
    last = run.checkpoints_dir / "last.ckpt"
    with run.phase("train"):
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None)
    with run.phase("export"):
        adapter = save_adapter(module.model, run.checkpoints_dir / "adapter")
        if parts["buffer"] is not None:
            parts["buffer"].save(run.checkpoints_dir / "buffer")
    hist = module.history
    first, final = (hist[0], hist[-1]) if hist else ({}, {})
    ledger = data.ledger
    summary = dict(
        algo=cfg.algo.name, env=cfg.env.name, train_env=cfg.train_env, iterations=module.iteration,
        success_rate_first=first.get("rollout/success_rate", 0.0), success_rate_last=final.get("rollout/success_rate", 0.0),
        mean_reward_last=final.get("rollout/mean_reward", 0.0), checkpoint=str(last), adapter_dir=str(adapter),
        real_transitions=ledger["real_transitions"], synthetic_transitions=ledger["synthetic_transitions"],
        real_transition_budget=cfg.real_transition_budget,
        tokens_generated=ledger["tokens_generated"], tokens_trained=module.tokens_trained,
        gpu_hours=_gpu_hours(run), episodes=ledger["episodes"], world_model=world_model, buffer=buffer,
        policy_init=policy, rollouts=str(run.path / "rollouts.jsonl"))
    # what the iterations could learn from: optimizer updates made, GRPO groups without reward variance
    # (no signal), and in the synthetic env the share of experience-model answers that failed to parse
    summary["policy_updates"] = int(sum(h.get(f"{cfg.algo.name}/updates", 0.0) for h in hist))
    if cfg.algo.name == "grpo" and hist:
        summary["zero_var_group_share"] = sum(h.get("grpo/zero_var_groups", 0.0) for h in hist) / len(hist)
    if cfg.train_env == "synthetic" and "wm/parse_fail_rate" in final:
        summary["wm_parse_fail_rate"] = final["wm/parse_fail_rate"]
    if data.last_eval:
        summary["eval_success_rate_last"] = data.last_eval["eval/success_rate"]
        summary["sim_real_gap"] = summary["success_rate_last"] - data.last_eval["eval/success_rate"]
    return run.write_summary(**summary)


def build_train_policy(cfg: TrainPolicyConfig, run: RunDir, world_model: str | None = None,
                       buffer_dir: str | None = None, policy_init: str | None = None, progress: bool = True):
    """(PolicyRL, PolicyDataModule, Trainer, parts) for a config; parts holds env, buffer, venv."""
    from dreamgym.pipelines.offline_policy import resolve_policy

    real_env = make_env(cfg.env)
    policy_init = resolve_policy(policy_init)  # base -> None, sft -> the SFT warm start
    if policy_init is not None:
        model, tok = load_adapter(cfg.model, policy_init, for_training=True)
    else:
        model, tok = load_model(cfg.model, for_training=True)
    module = PolicyRL(cfg, model, tok)
    buffer = _load_buffer(buffer_dir)
    generator = None
    if cfg.train_env == "synthetic":
        if world_model is None:
            raise DreamGymError("train-policy --env synthetic needs --world-model RUN_OR_ADAPTER (fit-world-model's run)")
        from dreamgym.curriculum.generator import TaskGenerator
        from dreamgym.experience.synthetic_env import SyntheticVectorEnv, build_predictor

        predictor = build_predictor(cfg.synthetic, world_model, buffer)
        venv = SyntheticVectorEnv(predictor, cfg.synthetic, cfg.env.name, real_env=real_env, buffer=buffer)
        if cfg.curriculum.enabled:
            generator = TaskGenerator.from_config(predictor.model, predictor.tokenizer, cfg.curriculum)
        eval_venv = EnvPool(real_env.spawn() if hasattr(real_env, "spawn") else real_env) if cfg.eval.every_n_iterations else None
    else:
        venv = EnvPool(real_env)
        if cfg.real_transition_budget is not None:  # a hard cap, even inside an iteration (data/budget.py)
            venv = BudgetedVectorEnv(venv, lambda: cfg.real_transition_budget - data.ledger["real_transitions"])
        eval_venv = EnvPool(real_env.spawn()) if cfg.eval.every_n_iterations and hasattr(real_env, "spawn") else None
    pool = TaskPool(real_env.tasks("train"), cfg.curriculum.max_synthetic, cfg.curriculum.seed)
    rollouts_path = run.path / "rollouts.jsonl"

    def sink(trajectories: list) -> None:
        trajectories = [strip_budget_steps(t) for t in trajectories]
        write_trajectories(rollouts_path, trajectories, append=True)
        if cfg.train_env == "real" and buffer is not None:  # real transitions also grow the buffer (S2R)
            buffer.add_trajectories([t for t in trajectories if t.task.split == "train"])

    data = PolicyDataModule(cfg, module, venv, pool, generator=generator, eval_venv=eval_venv,
                            eval_tasks=real_env.tasks(cfg.eval.split) if eval_venv is not None else [],
                            trajectory_sink=sink)
    callbacks = [_IterationCheckpoint(run, cfg.checkpoint_every, buffer, data._budget_spent)]
    if progress:
        callbacks.append(RichProgressBar())
    # one Lightning "epoch" = one RL iteration: resume restores the epoch count, and a resumed run may
    # raise max_iterations to train on in chunks
    trainer = L.Trainer(max_epochs=cfg.max_iterations, limit_train_batches=1, logger=TensorBoardLogger(str(run.path), name="tb", version=""),
                        callbacks=callbacks, enable_checkpointing=False, log_every_n_steps=1,
                        num_sanity_val_steps=0, enable_progress_bar=progress, devices=1,
                        accelerator="gpu" if str(module.model.device).startswith("cuda") else "cpu")
    return module, data, trainer, {"env": real_env, "buffer": buffer, "venv": venv, "pool": pool}


class _IterationCheckpoint(Callback):
    """`checkpoints/last.ckpt` (+ the buffer copy) every N iterations and at the end of training, which
    comes early once the real-transition budget is spent (no empty epochs up to max_iterations)."""

    def __init__(self, run: RunDir, every: int, buffer, budget_spent: Callable[[], bool]):
        self.run, self.every, self.buffer, self.budget_spent = run, every, buffer, budget_spent

    def on_train_start(self, trainer, pl_module) -> None:
        if self.budget_spent():  # a resumed run whose budget is already used up
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.iteration % self.every == 0:
            self._save(trainer)
        if self.budget_spent():
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.run.checkpoints_dir / "last.ckpt")
        if self.buffer is not None:
            self.buffer.save(self.run.checkpoints_dir / "buffer")


def _load_buffer(buffer_dir: str | None):
    if buffer_dir is None:
        return None
    from dreamgym.replay.buffer import ReplayBuffer

    return ReplayBuffer.load(buffer_dir)


def _check_resume(run: RunDir, cfg: TrainPolicyConfig) -> None:
    """--resume continues with the saved config plus the new overrides (the CLI layers them on the saved
    config.yaml); overrides that change the model, env, algorithm or training env are refused."""
    from dreamgym.config import load_config

    saved = load_config(TrainPolicyConfig, [run.config_path], [])
    changed = [k for k in ("model", "env", "algo", "synthetic") if to_yaml(getattr(saved, k)) != to_yaml(getattr(cfg, k))]
    if saved.train_env != cfg.train_env:
        changed.append("train_env")
    if changed:
        raise DreamGymError(f"--resume: {', '.join(changed)} differ from the saved config of {run.path}; a resumed "
                            "run keeps its model, env and algorithm (drop those overrides)")


def _gpu_hours(run: RunDir) -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    return round(sum(run.wall_clock_s.values()) / 3600.0 * torch.cuda.device_count(), 4)

