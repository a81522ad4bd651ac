"""Print TensorBoard scalars of a run dir (all event files below it) as text: one line per tag with its
(step, value) points, for reading a run's curves in a terminal or a log.

    python scripts/tb_scalars.py logs/cpu_study/steps/s2r grpo/ rollout/reward
"""

from __future__ import annotations

import sys

from dreamgym.metrics import read_scalars

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/tb_scalars.py RUN_DIR [TAG_PREFIX ...]")
    for tag, points in sorted(read_scalars(sys.argv[1], sys.argv[2:]).items()):
        print(f"{tag}: " + " ".join(f"{s}:{v:.4g}" for s, v in points))
