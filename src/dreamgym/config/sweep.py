"""`dreamgym sweep` config: a base point (an `eval-world-model` or a `train-policy` config) and the axes
varied around it. An axis is a dotted key of this config and the values to try; a point is the base
config with those `key=value` overrides (validated like any config: a bad key or value names itself).

Which target measures which knob:
  eval-world-model  k (`eval.synthetic.prompt.demos_k`), history length (`...prompt.history_turns`),
                    reasoning on/off (`...prompt.reasoning`), the retrieval encoder (`encoder`), any
                    other `eval.synthetic.*` setting: all change the experience model's predictions on
                    the same held-out transitions, which the fidelity audit scores.
  train-policy      lambda (`train.curriculum.synthetic_share_cap`) and other RL knobs. Lambda only
                    decides which tasks a policy trains on; the experience model never sees it, so the
                    fidelity audit cannot measure it (refused there) and its points are policy runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

from dreamgym.config.experience import EvalWorldModelConfig
from dreamgym.config.loading import ConfigError
from dreamgym.config.rl import TrainPolicyConfig

__all__ = ["SweepConfig", "SWEEP_TARGETS", "FIXED_EVAL_KEYS"]

SWEEP_TARGETS: dict[str, tuple[str, ...]] = {"eval-world-model": ("eval.", "encoder"), "train-policy": ("train.",)}
"""target -> the keys (prefixes) its axes may name"""
FIXED_EVAL_KEYS: tuple[str, ...] = ("eval.max_transitions", "eval.terminal_share", "eval.seed", "eval.modes",
                                    "eval.similarity_encoder", "eval.num_samples", "eval.progress")
"""eval keys no axis may vary: every point is scored on the same held-out sample with the same
similarity encoder (else rows would not be comparable); `modes` is replaced by the point's switches"""


@dataclass
class SweepConfig:
    """`dreamgym sweep`: one table of a target's metrics over the values of one or more config keys."""

    target: str = "eval-world-model"
    """what each point runs: 'eval-world-model' (one fidelity-audit pass on the shared held-out sample;
    axes name `eval.*` keys or `encoder`) or 'train-policy' (a policy run; axes name `train.*` keys)"""
    axes: dict[str, list[Any]] = field(default_factory=dict)
    """dotted key of this config -> values, e.g. {eval.synthetic.prompt.demos_k: [0, 1, 4], encoder: [buffer, bm25]}"""
    grid: bool = False
    """False: one axis at a time around the base point (a base row + one row per axis value; other keys
    stay at the base); True: every combination of the selected axes (no separate base row)"""
    select: list[str] = field(default_factory=list)
    """run only these axes (empty = all of `axes`): presets list many, a command line picks a few"""
    max_points: int = 64
    """refuse a sweep of more points than this (grids grow fast)"""
    encoder: str = "buffer"
    """retrieval encoder (eval-world-model target): 'buffer' (the one --buffer was built with), or
    'minilm', 'hashing', 'bm25', a local sentence-transformers folder: the buffer's records re-embedded
    into a temporary in-memory buffer (same index settings; the buffer on disk is never touched)"""
    eval: EvalWorldModelConfig = field(default_factory=EvalWorldModelConfig)
    """base point of target eval-world-model. `modes` is not read: a point runs one pass with reasoning
    = `synthetic.prompt.reasoning` and retrieval on when --buffer is given, `synthetic.retrieval` is
    true and `synthetic.prompt.demos_k` > 0"""
    train: TrainPolicyConfig = field(default_factory=TrainPolicyConfig)
    """base point of target train-policy (each point is a full `train-policy` run in points/<label>/)"""
    progress: bool = True
    """show progress bars (the audit's; train-policy points' Lightning bar)"""
    seed: int = 0
    """seed of every point: copied into eval.seed and train.seed before the axes apply"""

    def __post_init__(self) -> None:
        if self.target not in SWEEP_TARGETS:
            raise ConfigError(f"key 'target': got {self.target!r}, expected one of {', '.join(SWEEP_TARGETS)}")
        self.eval.seed = self.train.seed = self.seed
        allowed = SWEEP_TARGETS[self.target]
        for key, values in self.axes.items():
            if not (key in allowed or key.startswith(tuple(a for a in allowed if a.endswith(".")))):
                hint = (" (lambda changes only the tasks a policy trains on, which the fidelity audit never "
                        "sees: sweep it with target=train-policy)" if key.startswith("train.") else "")
                raise ConfigError(f"key 'axes.{key}': target {self.target} sweeps keys starting with "
                                  f"{' or '.join(repr(a) for a in allowed)}{hint}")
            if self.target == "eval-world-model" and key.startswith(FIXED_EVAL_KEYS):
                raise ConfigError(f"key 'axes.{key}': fixed across a sweep (every point is scored on the same "
                                  f"held-out sample and similarity encoder); set it as a plain override instead")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"key 'axes.{key}': got {values!r}, expected a non-empty list of values")
            if len({repr(v) for v in values}) != len(values):
                raise ConfigError(f"key 'axes.{key}': got {values}, expected distinct values")
        unknown = [k for k in self.select if k not in self.axes]
        if unknown:
            raise ConfigError(f"key 'select': {unknown} not in axes (expected some of {list(self.axes)})")
        if not self.selected_axes():
            raise ConfigError("key 'axes': empty, expected at least one key with values, e.g. "
                              "axes={'eval.synthetic.prompt.demos_k':[0,1,4]}")
        if self.max_points < 1:
            raise ConfigError(f"key 'max_points': got {self.max_points}, expected a positive int")
        n = self.n_points()
        if n > self.max_points:
            raise ConfigError(f"key 'max_points': the sweep has {n} points (grid={self.grid}), expected at most "
                              f"{self.max_points}; drop axes (select=[...]) or raise max_points")
        if self.target != "eval-world-model" and self.encoder != "buffer":
            raise ConfigError(f"key 'encoder': got {self.encoder!r}; only target eval-world-model re-embeds the "
                              "buffer, expected 'buffer'")

    def selected_axes(self) -> dict[str, list[Any]]:
        """The axes to run, in their order in `axes`."""
        return {k: v for k, v in self.axes.items() if not self.select or k in self.select}

    def n_points(self) -> int:
        """Points the sweep runs: the product of axis lengths (grid) or 1 + their sum (base + one at a time)."""
        lengths = [len(v) for v in self.selected_axes().values()]
        return prod(lengths) if self.grid else 1 + sum(lengths)
