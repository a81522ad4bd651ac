"""`dreamgym annotate`: turn offline real trajectories into the experience model's SFT set — one record
per transition with its episode history, top-k demonstrations from a replay buffer (own trajectory
excluded) and a teacher rationale. The output file is also the cache: re-running with the same `--out`
skips records already there, so an interrupted run resumes where it stopped (a torn last line is dropped).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dreamgym.config import AnnotateConfig
from dreamgym.errors import DreamGymError
from dreamgym.experience.annotate import iter_unannotated, record_key, rule_rationale, teacher_messages, transition_records
from dreamgym.runs import RunDir
from dreamgym.types import read_trajectories

__all__ = ["annotate", "read_records"]

log = logging.getLogger(__name__)
CHUNK = 64


def annotate(cfg: AnnotateConfig, data: list[Path], out: Path | None = None, buffer_dir: Path | None = None,
             run_dir: Path | None = None, progress: bool = True) -> dict:
    if not data:
        raise DreamGymError("annotate needs --data PATH (trajectory JSON lines), at least one")
    run = RunDir.open("annotate", run_dir, cfg)
    out_path = Path(out) if out is not None else run.path / "sft.jsonl"
    with run.phase("load"):
        records, skipped = [], {"eval_split": 0, "synthetic": 0}
        for path in data:
            run.record_input(path)
            for traj in read_trajectories(path):
                if traj.source != "real":
                    skipped["synthetic"] += 1
                elif traj.task.split != "train":
                    skipped["eval_split"] += 1  # split hygiene: dev/test goals never reach SFT data
                else:
                    records.extend(transition_records(traj))
        done_keys = _cached_keys(out_path)
        pending = list(iter_unannotated(records, done_keys))
        if skipped["eval_split"]:
            log.warning("skipped %d dev/test trajectories (they never enter SFT data)", skipped["eval_split"])
    teacher = _make_teacher(cfg)
    buffer = _load_buffer(buffer_dir) if buffer_dir is not None and cfg.demos_k > 0 else None
    t0 = time.perf_counter()
    with run.phase("annotate"), _bar(progress) as bar, out_path.open("a", encoding="utf-8") as f:
        job = bar.add_task(f"annotate ({cfg.teacher})", total=len(pending))
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start:start + CHUNK]
            if buffer is not None:
                hits = buffer.search([r["state"] for r in chunk], [r["action"] for r in chunk], cfg.demos_k,
                                     exclude_trajectories=[r["trajectory_id"] for r in chunk])
                for rec, hs in zip(chunk, hits):
                    rec["demos"] = [h.transition.to_dict() for h in hs]
            for rec, reasoning in zip(chunk, teacher(chunk)):
                rec["reasoning"] = reasoning
                rec["teacher"] = cfg.teacher if cfg.teacher != "model" else f"model:{cfg.model.name}"
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(job, advance=len(chunk))
    elapsed = time.perf_counter() - t0
    return run.write_summary(
        out=str(out_path), teacher=cfg.teacher, records=len(records), annotated=len(pending),
        cached=len(records) - len(pending), skipped_eval_split_trajectories=skipped["eval_split"],
        skipped_synthetic_trajectories=skipped["synthetic"], with_demos=buffer is not None,
        transitions_per_s=len(pending) / elapsed if elapsed > 0 else 0.0,
        real_transitions=len(records), synthetic_transitions=0,
        tokens_generated=getattr(teacher, "tokens_generated", 0), tokens_trained=0, gpu_hours=0.0)


def read_records(path: str | Path) -> list[dict]:
    """Records of an annotated SFT file; a torn last line (interrupted run) is skipped with a warning,
    any other bad line is an error naming file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                log.warning("%s:%d: torn last line (interrupted run?), ignored", path, i)
                continue
            raise DreamGymError(f"{path}:{i}: not a JSON record") from None
    return out


# -- internals ---------------------------------------------------------------------------------

def _cached_keys(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    records = read_records(path)
    # rewrite without a torn tail so appended records start on a fresh line
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if text != path.read_text(encoding="utf-8"):
        path.write_text(text, encoding="utf-8")
    return {record_key(r) for r in records}


def _make_teacher(cfg: AnnotateConfig):
    if cfg.teacher == "none":
        return lambda recs: [None] * len(recs)
    if cfg.teacher == "rule":
        return lambda recs: [rule_rationale(r) for r in recs]
    return _ModelTeacher(cfg)


class _ModelTeacher:
    """An HF model explaining each transition (greedy), batched."""

    def __init__(self, cfg: AnnotateConfig):
        from dreamgym.models.generation import GenerationSettings
        from dreamgym.models.loading import load_model

        self.model, self.tokenizer = load_model(cfg.model, for_training=False)
        self.settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        self.seed = cfg.seed
        self.tokens_generated = 0

    def __call__(self, recs: list[dict]) -> list[str]:
        from dreamgym.models.generation import generate_ids
        from dreamgym.models.loading import chat_prompt_ids

        prompts = [chat_prompt_ids(self.tokenizer, teacher_messages(r)) for r in recs]
        outs = generate_ids(self.model, self.tokenizer, prompts, self.settings, generator_seed=self.seed)
        self.tokens_generated += sum(len(o) for o in outs)
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]


def _load_buffer(buffer_dir: Path):
    from dreamgym.replay.buffer import ReplayBuffer

    return ReplayBuffer.load(buffer_dir)


def _bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)
