"""The generic VectorEnv over real envs (docs/contracts): many independent episodes behind the same
interface the synthetic env implements natively, so the rollout loop drives both the same way.

`EnvPool(template)` keeps one env instance per episode, made with `template.spawn()` (cheap siblings
sharing loaded data) or a factory; `step` runs the still-running episodes' actions, in a thread pool
when `threads > 1` (HTTP envs spend their time waiting on the network).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from dreamgym.types import StepResult, Task

__all__ = ["EnvPool"]


class EnvPool:
    """reset(tasks) -> list[StepResult]; running; available_actions(); step(actions) for running episodes."""

    def __init__(self, template: Any, factory: Callable[[], Any] | None = None, threads: int = 1):
        self.template = template
        self.factory = factory or getattr(template, "spawn", None)
        if self.factory is None:
            raise TypeError(f"{type(template).__name__} has no spawn(); give EnvPool a factory")
        self.threads = threads
        self._envs: list[Any] = []
        self._done: list[bool] = []

    @property
    def name(self) -> str:
        return getattr(self.template, "name", type(self.template).__name__)

    def reset(self, tasks: list[Task]) -> list[StepResult]:
        while len(self._envs) < len(tasks):
            self._envs.append(self.factory())
        self._active = self._envs[: len(tasks)]
        self._done = [False] * len(tasks)
        return self._map(lambda env, task: env.reset(task), list(zip(self._active, tasks)))

    @property
    def running(self) -> list[int]:
        return [i for i, d in enumerate(self._done) if not d]

    def available_actions(self) -> list[list[str]]:
        return [self._active[i].available_actions() for i in self.running]

    def step(self, actions: list[str]) -> list[StepResult]:
        live = self.running
        if len(actions) != len(live):
            raise ValueError(f"step got {len(actions)} actions for {len(live)} running episodes")
        results = self._map(lambda env, a: env.step(a), [(self._active[i], a) for i, a in zip(live, actions)])
        for i, r in zip(live, results):
            self._done[i] = bool(r.done)
        return results

    def end(self, index: int) -> None:
        """Stop an episode from outside (e.g. the rollout's turn or context limit)."""
        self._done[index] = True

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []

    def _map(self, fn: Callable[[Any, Any], StepResult], pairs: list[tuple[Any, Any]]) -> list[StepResult]:
        if self.threads <= 1 or len(pairs) <= 1:
            return [fn(e, x) for e, x in pairs]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(pairs))) as pool:
            return list(pool.map(lambda p: fn(*p), pairs))
