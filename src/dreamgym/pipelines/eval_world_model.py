"""`dreamgym eval-world-model`: the fidelity audit of the experience model on held-out real transitions
(`experience/fidelity.py` defines every number). One pass per mode — full (retrieval + reasoning),
no_retrieval, no_reasoning — over the same seeded sample of transitions; `summary.json` holds the
full mode's keys flat plus `by_mode`, TensorBoard gets `wm/...` scalars under `tb/<mode>/` (one
TensorBoard run per mode, same names, so they overlay) and `samples/wm` text. Modes whose model and
switches coincide (no `--buffer`: full == no_retrieval) run once; `notes` and `predictions_from` say so.
Flat `tokens_generated`/`prompt_tokens`/`synthetic_transitions` are the run's totals (cost ledger);
`by_mode[m]` has each mode's own, with `transitions_per_s` and `wall_s`; `wall_clock_s` has
`predict_<mode>` phases.

Split hygiene: the audit only reads. Nothing is written to the replay buffer, and retrieval for a
transition never returns its own trajectory. Held-out data is the user's to choose (dev split, or train
trajectories outside the SFT set); `held_out_in_buffer` counts audited trajectories the buffer holds.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dreamgym.config import EvalWorldModelConfig
from dreamgym.errors import DreamGymError
from dreamgym.experience.fidelity import audit_records, run_audit, samples_markdown, stratified_sample
from dreamgym.experience.predictor import ExperiencePredictor
from dreamgym.experience.prompts import PARSE_FAIL_REASONS, ParseStats, target_state
from dreamgym.metrics import check_metric_names
from dreamgym.runs import RunDir
from dreamgym.types import read_trajectories

__all__ = ["eval_world_model", "load_held_out", "build_audit_model", "mode_predictor", "TB_KEYS"]

log = logging.getLogger(__name__)

TB_KEYS: tuple[str, ...] = (
    "reward_accuracy", "reward_mae", "majority_baseline_accuracy", "terminal_balanced_accuracy", "done_accuracy",
    "success_precision", "success_recall", "next_state_exact_match", "next_state_similarity",
    "next_state_exact_match_deterministic", "next_state_exact_match_other", "next_state_similarity_deterministic",
    "next_state_similarity_other", "parse_fail_rate", "transitions_per_s", "tokens_per_s", "output_tokens")
"""summary keys logged as `wm/<key>` scalars (plus `wm/parse_fail/<reason>`)"""
_SAME = object()     # mode_predictor's default buffer: the base predictor's


def eval_world_model(cfg: EvalWorldModelConfig, data: list[Path], world_model: str | Path | None = None,
                     no_reasoning_model: str | Path | None = None, buffer_dir: str | Path | None = None,
                     run_dir: str | Path | None = None) -> dict:
    """Audit the experience model (base + `world_model` adapter; None = the base alone) on the real
    transitions of `data`; returns the summary (also written to summary.json)."""
    if not data:
        raise DreamGymError("eval-world-model needs --data PATH (held-out real trajectory JSON lines), at least one")
    run = RunDir.open("eval-world-model", run_dir, cfg)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    with run.phase("load"):
        records, skipped, trajectory_ids, total = load_held_out(cfg, data, run)
        buffer = _load_buffer(buffer_dir) if buffer_dir is not None else None
        in_buffer = _held_out_in_buffer(buffer, trajectory_ids)
        from dreamgym.replay.embed import build_encoder

        encoder = build_encoder(cfg.similarity_encoder)
        true_vecs = np.asarray(encoder.encode([r["next_state"] for r in records]))

    retrieval_on = buffer is not None and cfg.synthetic.prompt.demos_k > 0
    notes = [] if retrieval_on else [
        "retrieval off in every mode (" + ("no --buffer given" if buffer is None else "synthetic.prompt.demos_k=0")
        + "): full == no_retrieval"]
    no_reasoning_source = (f"adapter:{no_reasoning_model}" if no_reasoning_model is not None
                           else "same model, no-reasoning prompt")
    models: dict[str, ExperiencePredictor] = {}
    by_mode: dict[str, dict] = {}
    done: dict[tuple, str] = {}
    mode_settings: dict[str, dict] = {}
    samples: dict[str, str] = {}
    from torch.utils.tensorboard import SummaryWriter

    with _bar(cfg.progress) as bar:
        for mode in cfg.modes:
            model_key = "no_reasoning" if mode == "no_reasoning" and no_reasoning_model is not None else "world"
            settings = (model_key, retrieval_on and mode != "no_retrieval", mode != "no_reasoning")
            mode_settings[mode] = {"model": "no_reasoning_model" if model_key == "no_reasoning" else "world_model",
                                   "retrieval": settings[1], "reasoning": settings[2]}
            if settings in done:      # same model and switches as an earlier mode: same (greedy) predictions
                by_mode[mode] = {**by_mode[done[settings]], "predictions_from": done[settings]}
                samples[mode] = samples[done[settings]]
                notes.append(f"{mode} reuses {done[settings]}'s predictions (identical settings)")
            else:
                if model_key not in models:
                    with run.phase("load"):
                        models[model_key] = _build(cfg, world_model if model_key == "world" else no_reasoning_model,
                                                   buffer)
                predictor = mode_predictor(models[model_key], cfg, retrieval=settings[1], reasoning=settings[2])
                with run.phase(f"predict_{mode}"):
                    metrics, preds = run_audit(
                        predictor, records, encoder, reward_tolerance=cfg.reward_tolerance,
                        reward_threshold=cfg.reward_threshold, chunk_size=cfg.synthetic.batch_size,
                        true_vecs=true_vecs, progress=bar, description=f"eval-world-model {mode}")
                by_mode[mode] = {**metrics, "predictions_from": mode}
                samples[mode] = samples_markdown(records, preds, cfg.num_samples)
                done[settings] = mode
            _log_tensorboard(SummaryWriter(str(run.tb_dir / mode)), by_mode[mode], samples[mode])

    flat_mode = "full" if "full" in by_mode else cfg.modes[0]
    computed = [by_mode[m] for m in done.values()]
    predict_s = sum(v for k, v in run.wall_clock_s.items() if k.startswith("predict_"))
    on_gpu = any(_device(p.model) == "cuda" for p in models.values())
    flat = {k: v for k, v in by_mode[flat_mode].items() if k not in ("tokens_generated", "prompt_tokens")}
    summary = run.write_summary(
        **flat, flat_mode=flat_mode, by_mode=by_mode, modes=list(cfg.modes), mode_settings=mode_settings,
        world_model=str(world_model) if world_model is not None else None,
        no_reasoning_model=str(no_reasoning_model) if no_reasoning_model is not None else None,
        no_reasoning_source=no_reasoning_source, buffer=str(buffer_dir) if buffer_dir is not None else None,
        retrieval=retrieval_on, notes=notes, data=[str(p) for p in data], n_trajectories=len(trajectory_ids),
        n_transitions_available=total, skipped_synthetic_trajectories=skipped, held_out_in_buffer=in_buffer,
        similarity_encoder=cfg.similarity_encoder, reward_tolerance=cfg.reward_tolerance,
        reward_threshold=cfg.reward_threshold,
        tokens_generated=sum(m["tokens_generated"] for m in computed),
        prompt_tokens=sum(m["prompt_tokens"] for m in computed), real_transitions=0,
        synthetic_transitions=len(records) * len(computed), tokens_trained=0,
        gpu_hours=round(predict_s / 3600, 6) if on_gpu else 0.0)
    return summary


def load_held_out(cfg: EvalWorldModelConfig, data: list[Path], run: RunDir) -> tuple[list[dict], int, set[str], int]:
    """The audited transitions: a seeded sample (`cfg.max_transitions`, `cfg.terminal_share`) of the real
    transitions of `data`. Returns (records, skipped synthetic trajectories, audited trajectory ids,
    transitions available before sampling). `dreamgym sweep` scores every point on the same sample."""
    records, skipped, trajectory_ids = _read(data, run)
    total = len(records)
    keep = stratified_sample([bool(r["done"]) for r in records], cfg.max_transitions, cfg.terminal_share, cfg.seed)
    records = [records[i] for i in keep]
    if cfg.synthetic.prompt.next_state_chars:  # audit against the state the model was trained to write
        records = [{**r, "next_state": target_state(r["next_state"], cfg.synthetic.prompt)} for r in records]
    if not records:
        raise DreamGymError(f"{', '.join(map(str, data))}: no real transitions to audit")
    return records, skipped, trajectory_ids, total


def build_audit_model(cfg: EvalWorldModelConfig, adapter: str | Path | None, buffer) -> ExperiencePredictor:
    """The experience model (base + `adapter`, None = the base alone) as the synthetic env loads it."""
    return _build(cfg, adapter, buffer)


def mode_predictor(base: ExperiencePredictor, cfg: EvalWorldModelConfig, retrieval: bool, reasoning: bool,
                   buffer=_SAME) -> ExperiencePredictor:
    """A fresh predictor (own counters) on `base`'s loaded model with these switches, `cfg.synthetic`'s
    prompt and generation settings, and `buffer` (default: `base`'s)."""
    prompt = dataclasses.replace(cfg.synthetic.prompt, reasoning=reasoning)
    s = cfg.synthetic
    settings = dataclasses.replace(base.settings, max_new_tokens=s.max_new_tokens, do_sample=s.do_sample,
                                   temperature=s.temperature, batch_size=s.batch_size)
    return ExperiencePredictor(base.model, base.tokenizer, prompt, settings,
                               buffer=base.buffer if buffer is _SAME else buffer, retrieval=retrieval,
                               reasoning=reasoning, seed=s.seed if s.do_sample else None, stats=ParseStats(),
                               bounded=s.bounded_decoding)


# -- internals ---------------------------------------------------------------------------------

def _read(data: list[Path], run: RunDir) -> tuple[list[dict], int, set[str]]:
    """Records of the real trajectories in `data` (synthetic ones are skipped and counted)."""
    trajs, skipped = [], 0
    for path in data:
        run.record_input(path)
        for traj in read_trajectories(path):
            if traj.source != "real":
                skipped += 1
            else:
                trajs.append(traj)
    if skipped:
        log.warning("skipped %d synthetic trajectories: the audit compares against real transitions only", skipped)
    return audit_records(trajs), skipped, {t.id for t in trajs}


def _load_buffer(buffer_dir: str | Path):
    from dreamgym.replay.buffer import ReplayBuffer

    return ReplayBuffer.load(buffer_dir)


def _held_out_in_buffer(buffer, trajectory_ids: set[str]) -> int:
    """Audited trajectories that the buffer also holds (then not held out from retrieval's point of view)."""
    if buffer is None:
        return 0
    n = len(trajectory_ids & {t.trajectory_id for t in buffer.transitions()})
    if n:
        log.warning("%d audited trajectories are in the buffer (retrieval still excludes each one's own)", n)
    return n


def _build(cfg: EvalWorldModelConfig, adapter: str | Path | None, buffer) -> ExperiencePredictor:
    from dreamgym.experience.synthetic_env import build_predictor

    return build_predictor(cfg.synthetic, str(adapter) if adapter is not None else None, buffer)


def _log_tensorboard(writer, metrics: dict, samples: str) -> None:
    scalars = {f"wm/{k}": float(metrics[k]) for k in TB_KEYS}
    scalars.update({f"wm/parse_fail/{r}": float(metrics["parse_fail"].get(r, 0.0)) for r in PARSE_FAIL_REASONS})
    unknown = check_metric_names(scalars)
    if unknown:
        raise AssertionError(f"metric names missing from dreamgym.metrics.METRICS: {unknown}")
    for name, value in scalars.items():
        writer.add_scalar(name, value, 0)
    writer.add_text("samples/wm", samples, 0)
    writer.close()


def _device(model) -> str:
    try:
        return next(model.parameters()).device.type
    except (StopIteration, AttributeError):
        return "cpu"


def _bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)
