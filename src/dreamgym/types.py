"""The records every part of dreamgym exchanges: Task, StepResult, Step, Trajectory, Transition.

Environments produce `StepResult`s, `collect` and the rollout loop assemble them into `Trajectory`s
(written as JSON lines, schema version 1, see docs/contracts), and the replay buffer stores their
`Transition`s (s_t, a_t, s_{t+1}, r_{t+1}). Reading a trajectory file validates every line and names
the file and line of the first bad record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from dreamgym.errors import DreamGymError

__all__ = [
    "SCHEMA_VERSION",
    "Task",
    "StepResult",
    "Step",
    "Trajectory",
    "Transition",
    "TrajectoryFileError",
    "read_trajectories",
    "write_trajectories",
]

SCHEMA_VERSION = 1


@dataclass
class Task:
    """One goal an agent is asked to complete. `goal` holds env-specific data (for WebShop: asin,
    attributes, goal_options, price_upper, ...); only the env and scripted oracles read it."""

    id: str
    instruction: str
    env: str
    split: str
    goal: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(id=str(d["id"]), instruction=str(d["instruction"]), env=str(d["env"]),
                   split=str(d["split"]), goal=dict(d.get("goal") or {}))


@dataclass
class StepResult:
    """What an env answers to `reset` or `step`."""

    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)


@dataclass
class Step:
    """One agent turn as stored on disk: `observation` is what the agent saw *before* acting,
    `reward`/`done`/`info` are the env's answer to `action`."""

    t: int
    observation: str
    available_actions: list[str]
    action: str
    reward: float
    done: bool
    info: dict = field(default_factory=dict)
    reasoning: str | None = None
    """experience model's reasoning trace (synthetic trajectories only)"""
    parse_fallback: str | None = None
    """reason the experience model's output was replaced by the no-op fallback (synthetic only)"""

    def to_dict(self, synthetic: bool = False) -> dict:
        d = {"t": self.t, "observation": self.observation, "available_actions": list(self.available_actions),
             "action": self.action, "reward": float(self.reward), "done": bool(self.done), "info": self.info}
        if synthetic:
            d["reasoning"] = self.reasoning
            d["parse_fallback"] = self.parse_fallback
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Step":
        return cls(t=int(d["t"]), observation=str(d["observation"]),
                   available_actions=list(d.get("available_actions") or []), action=str(d["action"]),
                   reward=float(d["reward"]), done=bool(d["done"]), info=dict(d.get("info") or {}),
                   reasoning=d.get("reasoning"), parse_fallback=d.get("parse_fallback"))


@dataclass
class Transition:
    """(s_t, a_t) -> (s_{t+1}, r_{t+1}, done): the unit the replay buffer indexes and the
    experience model learns. `next_state` of the last step is the env's final observation. `done`
    means the env's dynamics ended the episode (a purchase, a win or loss): a step limit's cut
    (`info["truncated"]`) is not a transition outcome, so it is `done = False` here (the rollout loop
    imposes its own step limit; a model taught to end episodes at random turns could not learn it)."""

    trajectory_id: str
    step: int
    env: str
    source: str
    task_id: str
    instruction: str
    state: str
    action: str
    next_state: str
    reward: float
    done: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Transition":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass
class Trajectory:
    """One episode. `final_observation` is what the env showed after the last action (not part
    of any step's `observation`, so it is stored separately to keep every transition complete)."""

    id: str
    source: str
    env: str
    task: Task
    steps: list[Step]
    final_reward: float
    success: bool
    policy: str
    seed: int
    final_observation: str = ""
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        synthetic = self.source == "synthetic"
        return {"schema": self.schema, "id": self.id, "source": self.source, "env": self.env,
                "task": self.task.to_dict(), "steps": [s.to_dict(synthetic) for s in self.steps],
                "final_observation": self.final_observation, "final_reward": float(self.final_reward),
                "success": bool(self.success), "policy": self.policy, "seed": int(self.seed)}

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        if d.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"schema is {d.get('schema')!r}, expected {SCHEMA_VERSION}")
        if d.get("source") not in ("real", "synthetic"):
            raise ValueError(f"source is {d.get('source')!r}, expected 'real' or 'synthetic'")
        return cls(id=str(d["id"]), source=d["source"], env=str(d["env"]), task=Task.from_dict(d["task"]),
                   steps=[Step.from_dict(s) for s in d["steps"]], final_reward=float(d["final_reward"]),
                   success=bool(d["success"]), policy=str(d.get("policy", "")), seed=int(d.get("seed", 0)),
                   final_observation=str(d.get("final_observation", "")))

    def transitions(self) -> list[Transition]:
        """The (s_t, a_t, s_{t+1}, r_{t+1}, done) records of this episode, in order; a truncated last
        step (step limit, budget cut) is not done (see `Transition`)."""
        out = []
        for i, s in enumerate(self.steps):
            nxt = self.steps[i + 1].observation if i + 1 < len(self.steps) else self.final_observation
            out.append(Transition(trajectory_id=self.id, step=s.t, env=self.env, source=self.source,
                                  task_id=self.task.id, instruction=self.task.instruction, state=s.observation,
                                  action=s.action, next_state=nxt, reward=s.reward,
                                  done=s.done and not s.info.get("truncated", False)))
        return out


class TrajectoryFileError(DreamGymError):
    """A trajectory file is missing or holds a bad record; the message names file and line."""


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory], append: bool = False) -> int:
    """Write trajectories as JSON lines; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for traj in trajectories:
            f.write(json.dumps(traj.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_trajectories(path: str | Path) -> Iterator[Trajectory]:
    """Yield trajectories from a JSON-lines file; a bad line raises TrajectoryFileError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TrajectoryFileError(f"{path}: trajectory file not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Trajectory.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                kind = "missing key " + str(e) if isinstance(e, KeyError) else str(e)
                raise TrajectoryFileError(f"{path}:{lineno}: bad trajectory record: {kind}") from None

