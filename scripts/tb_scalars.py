"""Print TensorBoard scalars of a run dir (all event files below it) as text: one line per tag with its
(step, value) points, for reading a run's curves in a terminal or a log.

    python scripts/tb_scalars.py logs/cpu_study/steps/s2r grpo/ rollout/reward
"""

from __future__ import annotations

import sys
from pathlib import Path


def scalars(run_dir: str | Path, prefixes: list[str]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over every event file under `run_dir`, tags starting with any of `prefixes`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if not prefixes or any(tag.startswith(p) for p in prefixes):
                out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/tb_scalars.py RUN_DIR [TAG_PREFIX ...]")
    for tag, points in sorted(scalars(sys.argv[1], sys.argv[2:]).items()):
        print(f"{tag}: " + " ".join(f"{s}:{v:.4g}" for s, v in points))
