"""Small statistics every report needs: Wilson score intervals for success rates.

Every success rate `X` in a summary comes with `X_ci95: [lo, hi]` (docs/contracts).
"""

from __future__ import annotations

import math

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Wilson score interval for a binomial proportion (95% by default); [0, 1] when n == 0."""
    if n <= 0:
        return [0.0, 1.0]
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]
