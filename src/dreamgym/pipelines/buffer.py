"""`dreamgym buffer build` and `dreamgym buffer info`: the thin pipelines over `replay.ReplayBuffer`.

`buffer_build` streams trajectory files, refuses dev/test trajectories (split hygiene: they are
counted and reported, never indexed), embeds and inserts the rest in chunks, saves the buffer to
`--out` (default `<run dir>/buffer`), and writes summary.json with counts by source, what was
skipped, and encoder throughput. `buffer_info` reads a saved buffer's meta.json (no model load).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dreamgym.config import BufferBuildConfig
from dreamgym.errors import DreamGymError
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.store import read_meta
from dreamgym.runs import RunDir
from dreamgym.types import Trajectory, read_trajectories

__all__ = ["buffer_build", "buffer_info", "HELD_OUT_SPLITS"]

HELD_OUT_SPLITS = ("dev", "test")
"""task splits whose goals never enter the buffer (docs/contracts, split hygiene)"""


def buffer_build(cfg: BufferBuildConfig, data: list[str | Path], out: str | Path | None = None,
                 run_dir: str | Path | None = None, append: bool = False) -> dict:
    """Trajectory files -> saved replay buffer + summary.json. `append` grows the buffer already in
    `out` (its encoder and index settings win); otherwise `out` must be new or empty."""
    if not data:
        raise DreamGymError("buffer build: give at least one trajectory file with --from/--data PATH")
    for path in data:
        if not Path(path).is_file():
            raise DreamGymError(f"{path}: trajectory file not found")
    existing = out is not None and Path(out).is_dir() and any(Path(out).iterdir())
    if existing and not append:
        raise DreamGymError(f"{out}: --out folder exists and is not empty; pass --append to grow the "
                            "buffer in it, or choose another --out")
    run = RunDir.open("buffer-build", run_dir, cfg)
    out_dir = Path(out) if out is not None else run.path / "buffer"
    with run.phase("setup"):
        buf = (ReplayBuffer.load(out_dir, cfg=cfg.replay) if existing else
               ReplayBuffer.from_config(cfg.replay, seed=cfg.seed))
    for path in data:
        run.record_input(path)
    totals = {"added": 0, "duplicates": 0, "evicted": 0, "dropped": 0}
    seen = {"trajectories": 0, "transitions": 0}
    skipped = {s: 0 for s in HELD_OUT_SPLITS}
    skipped_transitions = 0
    with run.phase("build"), _progress(cfg) as bar:
        job = bar.add_task("embedding transitions", total=None)
        for path in data:
            chunk: list[Trajectory] = []
            for traj in read_trajectories(path):
                seen["trajectories"] += 1
                seen["transitions"] += len(traj.steps)
                if traj.task.split in HELD_OUT_SPLITS:
                    skipped[traj.task.split] += 1
                    skipped_transitions += len(traj.steps)
                    continue
                chunk.append(traj)
                if len(chunk) >= cfg.chunk_trajectories:
                    _add(buf, chunk, totals, bar, job)
                    chunk = []
            _add(buf, chunk, totals, bar, job)
    if skipped_transitions:
        Console(stderr=True).print(f"[yellow]skipped {sum(skipped.values())} dev/test trajectories "
                                   f"({skipped_transitions} transitions): held-out goals never enter the buffer")
    if len(buf) == 0:
        raise DreamGymError(f"{', '.join(map(str, data))}: no train transitions to index "
                            f"({seen['trajectories']} trajectories read, {sum(skipped.values())} dev/test skipped)")
    with run.phase("save"):
        buf.save(out_dir)
    counts = buf.counts()
    encode_s = buf.stats["encode_s"]
    return run.write_summary(
        buffer_dir=str(out_dir), data=[str(p) for p in data], appended=existing,
        encoder=buf.encoder.name, dim=buf.dim, M=buf.cfg.M, ef_construction=buf.cfg.ef_construction,
        ef_search=buf.ef_search, counts=counts, transitions=counts["total"],
        real_transitions=counts["real"], synthetic_transitions=counts["synthetic"],
        trajectories_read=seen["trajectories"], transitions_read=seen["transitions"], **totals,
        skipped_trajectories=skipped, skipped_transitions=skipped_transitions,
        encoded=buf.stats["encoded"], encode_s=round(encode_s, 3),
        encode_texts_per_s=buf.stats["encoded"] / encode_s if encode_s > 0 else None,
        insert_per_s=totals["added"] / buf.stats["insert_s"] if buf.stats["insert_s"] > 0 else None,
        tokens_generated=0, tokens_trained=0, gpu_hours=0.0,
    )


def buffer_info(directory: str | Path) -> dict:
    """What a saved buffer holds, from its meta.json: counts by source (and env), encoder, index settings."""
    meta = read_meta(directory)
    counts = meta["counts"]
    return {"dir": str(directory), "total": counts["total"], "real": counts["real"], "synthetic": counts["synthetic"],
            "by_env": counts.get("by_env", {}), "encoder": meta["encoder"], "dim": meta["dim"], "M": meta["M"],
            "ef_construction": meta["ef_construction"], "ef_search": meta["ef_search"],
            "max_size": meta["max_size"], "saved_at": meta.get("saved_at")}


# -- internals ---------------------------------------------------------------------------------

def _add(buf: ReplayBuffer, chunk: list[Trajectory], totals: dict, bar: Progress, job) -> None:
    if not chunk:
        return
    out = buf.add_trajectories(chunk)
    for k, v in out.items():
        totals[k] += v
    bar.update(job, advance=sum(len(t.steps) for t in chunk),
               description=f"embedding transitions ({len(buf)} stored)")


def _progress(cfg: BufferBuildConfig) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not cfg.progress, transient=False)
