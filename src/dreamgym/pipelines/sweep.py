"""`dreamgym sweep`: how sensitive DreamGym is to its knobs, as one table. The config's `axes` name keys
and values (`config/sweep.py`); `expand_points` turns them into points (a base point plus one axis at a
time, or the full grid) and `point_config` into validated configs, all before any model is loaded.

Target eval-world-model (k, history length, reasoning, retrieval encoder, ...): the held-out sample is
drawn once (`eval_world_model.load_held_out`) and every point is one fidelity-audit pass over it
(`experience.fidelity.run_audit` through `eval_world_model.mode_predictor`), models loaded once per
adapter. A point whose `encoder` differs from the buffer's gets a temporary in-memory buffer holding
the same records re-embedded (`reembed_buffer`); the buffer on disk is only read. Points with identical
resolved settings (e.g. any encoder once k = 0) are computed once: the later rows say `same_as`.
Target train-policy (lambda, ...): every point is a `train-policy` run in `points/<label>/`.

The run dir gets `sweep.csv`, `sweep.md` (the table), `summary.json` (`points: [...]`, one per row, with
every metric) and TensorBoard scalars (`wm/...` resp. `rollout/...`) under `tb/<axis>/`, one run per
axis with the point's index along it as the step (the value of each step is in `samples/sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dreamgym.config import ConfigError, SweepConfig, to_yaml
from dreamgym.errors import DreamGymError
from dreamgym.metrics import check_metric_names
from dreamgym.runs import RunDir, atomic_write_text

__all__ = ["sweep", "Point", "expand_points", "point_config", "reembed_buffer", "format_table", "COLUMNS"]

log = logging.getLogger(__name__)

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "eval-world-model": (("reward_accuracy", "reward acc"), ("success_precision", "success P"),
                         ("success_recall", "success R"), ("next_state_similarity", "next-state sim"),
                         ("parse_fail_rate", "parse fail"), ("prompt_tokens_mean", "prompt tokens"),
                         ("n_transitions", "n")),
    "train-policy": (("success_rate_first", "success first"), ("success_rate_last", "success last"),
                     ("mean_reward_last", "mean reward last"), ("iterations", "iterations"),
                     ("synthetic_transitions", "synthetic transitions"), ("real_transitions", "real transitions")),
}
"""target -> (point key, table header) of the table's metric columns, after `axis` and `value`"""


@dataclass
class Point:
    """One row: `axis` is the varied key ('base' for the base point, 'grid' in a grid), `value` its
    display text, `overrides` the key -> value changes to the base config."""

    axis: str
    value: str
    overrides: dict[str, Any] = field(default_factory=dict)


def expand_points(axes: dict[str, list], grid: bool) -> list[Point]:
    """Grid: every combination, first axis slowest. Otherwise the base point, then each axis's values
    in order with every other key at the base."""
    if grid:
        keys = list(axes)
        return [Point("grid", ", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, combo)), dict(zip(keys, combo)))
                for combo in itertools.product(*axes.values())]
    return [Point("base", "-")] + [Point(k, _fmt(v), {k: v}) for k, values in axes.items() for v in values]


def point_config(cfg: SweepConfig, overrides: dict[str, Any]) -> SweepConfig:
    """The base config with `overrides` (dotted keys of SweepConfig), validated like any config."""
    conf = OmegaConf.structured(cfg)
    for key, value in overrides.items():
        if OmegaConf.select(conf, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"key 'axes.{key}': not a config key (expected a dotted key of the sweep config, "
                              "e.g. eval.synthetic.prompt.demos_k or train.curriculum.synthetic_share_cap)")
        try:
            OmegaConf.update(conf, key, value, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"key 'axes.{key}': value {value!r}: {str(e).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(conf)
    except OmegaConfBaseException as e:
        raise ConfigError(f"key 'axes' ({overrides}): {str(e).splitlines()[0]}") from None
    except ConfigError as e:
        raise ConfigError(f"axes point {overrides}: {e}") from None


def reembed_buffer(buffer, encoder_name: str):
    """A new in-memory ReplayBuffer with `buffer`'s records (oldest first) and index settings, keyed by
    the `encoder_name` encoder (a fitted one, bm25, is fitted on these records)."""
    from dreamgym.replay.buffer import ReplayBuffer
    from dreamgym.replay.embed import build_encoder

    cfg = dataclasses.replace(buffer.cfg, encoder=encoder_name)
    out = ReplayBuffer(build_encoder(encoder_name, cfg.device, cfg.batch_size, cfg.hashing_dim, cfg.max_seq_length),
                       cfg, seed=buffer.seed)
    out.add(buffer.transitions())
    return out


def format_table(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> str:
    """Markdown table: `axis`, `value`, then one column per (key, header); floats with 3 decimals, a
    reused point's value gets ' (= label)'. Missing keys show as 'n/a'."""
    head = ["axis", "value", *(h for _, h in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|"]
    for r in rows:
        value = r["value"] + (f" (= {r['same_as']})" if r.get("same_as") else "")
        cells = [r["axis"], value, *(_cell(r.get(k)) for k, _ in columns)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def sweep(cfg: SweepConfig, data: list[Path] | None = None, world_model: str | Path | None = None,
          no_reasoning_model: str | Path | None = None, buffer_dir: str | Path | None = None,
          policy: str | None = None, run_dir: str | Path | None = None) -> dict:
    """Run every point of the sweep; returns the summary (also in summary.json) with `table_md`."""
    data = [Path(p) for p in data or []]
    if cfg.target == "eval-world-model" and not data:
        raise DreamGymError("sweep (target eval-world-model) needs --data PATH (held-out real trajectory JSON lines)")
    points = expand_points(cfg.selected_axes(), cfg.grid)
    configs = [point_config(cfg, p.overrides) for p in points]         # every point validated before work starts
    run = RunDir.open("sweep", run_dir, cfg)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    labels = _labels(points)
    if cfg.target == "eval-world-model":
        rows, extra = _eval_points(cfg, points, configs, labels, run, data, world_model, no_reasoning_model, buffer_dir)
    else:
        rows, extra = _train_points(points, configs, labels, run, world_model, buffer_dir, policy, cfg.progress)
    table = format_table(rows, COLUMNS[cfg.target])
    atomic_write_text(run.path / "sweep.md", table)
    atomic_write_text(run.path / "sweep.csv", _csv(rows, COLUMNS[cfg.target]))
    _log_tensorboard(run, cfg.target, rows, table)
    computed = [r for r in rows if not r.get("same_as")]
    return run.write_summary(
        target=cfg.target, axes=cfg.selected_axes(), grid=cfg.grid, n_points=len(rows), points=rows,
        table=str(run.path / "sweep.md"), csv=str(run.path / "sweep.csv"), table_md=table,
        world_model=str(world_model) if world_model is not None else None,
        buffer=str(buffer_dir) if buffer_dir is not None else None, data=[str(p) for p in data],
        tokens_generated=sum(r.get("tokens_generated", 0) for r in computed),
        tokens_trained=sum(r.get("tokens_trained", 0) for r in computed),
        real_transitions=sum(r.get("real_transitions", 0) for r in computed),
        synthetic_transitions=sum(r.get("synthetic_transitions", 0) for r in computed), **extra)


# -- internals ---------------------------------------------------------------------------------

_MISSING = object()


def _eval_points(cfg, points, configs, labels, run, data, world_model, no_reasoning_model, buffer_dir):
    """One audit pass per distinct point on the shared held-out sample -> (rows, extra summary keys)."""
    import numpy as np

    from dreamgym.experience.fidelity import run_audit
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dreamgym.pipelines.eval_world_model import build_audit_model, load_held_out, mode_predictor
    from dreamgym.replay.embed import build_encoder

    base = cfg.eval
    with run.phase("load"):
        records, skipped, trajectory_ids, total = load_held_out(base, data, run)
        loaded = None
        if buffer_dir is not None:
            from dreamgym.replay.buffer import ReplayBuffer

            loaded = ReplayBuffer.load(buffer_dir)
        sim_encoder = build_encoder(base.similarity_encoder)
        true_vecs = np.asarray(sim_encoder.encode([r["next_state"] for r in records]))
    buffers = {} if loaded is None else {"buffer": loaded, loaded.encoder.name: loaded}
    models: dict[tuple, Any] = {}
    done: dict[tuple, dict] = {}
    rows: list[dict] = []
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not cfg.progress)
    with bar:
        for point, pcfg, label in zip(points, configs, labels):
            ev = pcfg.eval
            reasoning = bool(ev.synthetic.prompt.reasoning)
            retrieval = loaded is not None and ev.synthetic.retrieval and ev.synthetic.prompt.demos_k > 0
            adapter = no_reasoning_model if not reasoning and no_reasoning_model is not None else world_model
            encoder = (loaded.encoder.name if pcfg.encoder == "buffer" else pcfg.encoder) if retrieval else None
            row = {"label": label, "axis": point.axis, "value": point.value, "overrides": point.overrides,
                   "retrieval": retrieval, "reasoning": reasoning, "encoder": encoder,
                   "model": str(adapter) if adapter is not None else None}
            key = (to_yaml(ev.synthetic), ev.reward_tolerance, ev.reward_threshold, encoder, row["model"])
            if key in done:
                rows.append({**done[key], **row, "same_as": done[key]["label"]})
                continue
            if retrieval and encoder not in buffers:
                with run.phase(f"embed_{encoder}"):
                    buffers[encoder] = reembed_buffer(loaded, encoder)
            model_key = (row["model"], to_yaml(ev.synthetic.model))
            if model_key not in models:
                with run.phase("load"):
                    models[model_key] = build_audit_model(ev, adapter, None)
            predictor = mode_predictor(models[model_key], ev, retrieval=retrieval, reasoning=reasoning,
                                       buffer=buffers.get(encoder))
            with run.phase(f"point_{label}"):
                metrics, _ = run_audit(predictor, records, sim_encoder, reward_tolerance=ev.reward_tolerance,
                                       reward_threshold=ev.reward_threshold, chunk_size=ev.synthetic.batch_size,
                                       true_vecs=true_vecs, progress=bar, description=f"sweep {label}")
            row.update(metrics, prompt_tokens_mean=metrics["prompt_tokens"] / len(records),
                       synthetic_transitions=len(records), real_transitions=0, tokens_trained=0, same_as=None)
            done[key] = row
            rows.append(row)
    on_gpu = any(next(m.model.parameters()).device.type == "cuda" for m in models.values())
    point_s = sum(v for k, v in run.wall_clock_s.items() if k.startswith("point_"))
    in_buffer = len(trajectory_ids & {t.trajectory_id for t in loaded.transitions()}) if loaded is not None else 0
    return rows, dict(n_transitions=len(records), n_transitions_available=total, n_trajectories=len(trajectory_ids),
                      skipped_synthetic_trajectories=skipped, held_out_in_buffer=in_buffer,
                      similarity_encoder=base.similarity_encoder,
                      no_reasoning_model=str(no_reasoning_model) if no_reasoning_model is not None else None,
                      gpu_hours=round(point_s / 3600, 6) if on_gpu else 0.0)


def _train_points(points, configs, labels, run, world_model, buffer_dir, policy, progress):
    """One train-policy run per distinct point, in points/<label>/ -> (rows, extra summary keys)."""
    from dreamgym.pipelines.train_policy import train_policy

    keep = ("success_rate_first", "success_rate_last", "mean_reward_last", "iterations", "synthetic_transitions",
            "real_transitions", "tokens_generated", "tokens_trained", "gpu_hours", "episodes", "adapter_dir",
            "eval_success_rate_last", "sim_real_gap")
    done: dict[str, dict] = {}
    rows: list[dict] = []
    for point, pcfg, label in zip(points, configs, labels):
        row = {"label": label, "axis": point.axis, "value": point.value, "overrides": point.overrides}
        key = to_yaml(pcfg.train)
        if key in done:
            rows.append({**done[key], **row, "same_as": done[key]["label"]})
            continue
        with run.phase(f"point_{label}"):
            s = train_policy(pcfg.train, run_dir=run.path / "points" / label, world_model=world_model,
                             buffer=str(buffer_dir) if buffer_dir is not None else None, policy=policy,
                             progress=progress)
        row.update({k: v for k, v in s.items() if k in keep or k.endswith("_ci95")}, run_dir=s["run_dir"],
                   same_as=None)
        done[key] = row
        rows.append(row)
    return rows, dict(policy=policy, gpu_hours=sum(r.get("gpu_hours", 0.0) for r in rows if not r["same_as"]))


def _labels(points: list[Point]) -> list[str]:
    """Folder-safe unique labels: 00-base, 01-demos_k-0, ... (the key's last part and the value)."""
    out = []
    for i, p in enumerate(points):
        tail = "base" if p.axis == "base" else "-".join(
            f"{k.rsplit('.', 1)[-1]}-{_fmt(v)}" for k, v in p.overrides.items())
        out.append(f"{i:02d}-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", tail)[:60])
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _csv(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> str:
    fields = ["label", "axis", "value", *(k for k, _ in columns), "retrieval", "reasoning", "encoder", "same_as"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k) for k in fields})
    return buf.getvalue()


def _log_tensorboard(run: RunDir, target: str, rows: list[dict], table: str) -> None:
    """Per axis one TensorBoard run tb/<axis>/ (the base point in tb/base/), step = index along the axis."""
    from torch.utils.tensorboard import SummaryWriter

    if target == "eval-world-model":
        from dreamgym.pipelines.eval_world_model import TB_KEYS

        names = {f"wm/{k}": k for k in TB_KEYS}
    else:
        names = {"rollout/success_rate": "success_rate_last", "rollout/mean_reward": "mean_reward_last",
                 "eval/success_rate": "eval_success_rate_last", "eval/sim_real_gap": "sim_real_gap"}
    unknown = check_metric_names(names)
    if unknown:
        raise AssertionError(f"metric names missing from dreamgym.metrics.METRICS: {unknown}")
    by_axis: dict[str, list[dict]] = {}
    for r in rows:
        by_axis.setdefault(r["axis"], []).append(r)
    for axis, axis_rows in by_axis.items():
        writer = SummaryWriter(str(run.tb_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", axis)))
        for step, r in enumerate(axis_rows):
            for name, key in names.items():
                if isinstance(r.get(key), (int, float)):
                    writer.add_scalar(name, float(r[key]), step)
        writer.close()
    writer = SummaryWriter(str(run.tb_dir / "table"))
    writer.add_text("samples/sweep", table + "\n\npoints: " + json.dumps([r["label"] for r in rows]), 0)
    writer.close()
