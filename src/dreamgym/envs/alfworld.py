"""`alfworld-http`: ALFWorld's text games through an AgentGym ALFWorld server (the `id` flavour of
`HttpEnv`), so `--env alfworld-http` works wherever such a server runs. Settings are `env.http.*`: the
server's `url`, and `num_tasks` (an ALFWorld server does not say how many games it has) with
`test_goals`/`dev_goals` cutting game indices into splits; `flavour` and `env_name` are fixed to
`alfworld`. Tasks are game indices; there is no oracle (the protocol does not expose the expert plan).

The first request to an unreachable server fails with `EnvServerError`, naming the URL and how to
point the env at a server. `--env alfworld` plays the same games in-process with ALFWorld's own engine
(`envs/alfworld_native.py`, `pip install 'dreamgym[alfworld]'`); see docs/environments.md.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dreamgym.envs.http_client import EnvServerError, HttpEnv
from dreamgym.types import StepResult, Task

__all__ = ["AlfWorldHttpEnv"]


class AlfWorldHttpEnv(HttpEnv):
    """An `HttpEnv` in the ALFWorld flavour (registered as `alfworld-http`), recorded as env `alfworld`."""

    name = "alfworld"

    def __init__(self, url: str = "http://127.0.0.1:36001", **kwargs: Any):
        kwargs.update(flavour="alfworld", env_name="alfworld")
        super().__init__(url, **kwargs)

    @classmethod
    def from_config(cls, env_cfg: Any) -> "AlfWorldHttpEnv":
        c = env_cfg.http
        return cls(**{f.name: getattr(c, f.name) for f in fields(c) if f.name not in ("flavour", "env_name")})

    def tasks(self, split: str) -> list[Task]:
        return self._hinted(super().tasks, split)

    def reset(self, task: Task) -> StepResult:
        return self._hinted(super().reset, task)

    def _hinted(self, call: Any, arg: Any) -> Any:
        try:
            return call(arg)
        except EnvServerError as e:
            raise EnvServerError(f"{e}; env 'alfworld-http' needs a running AgentGym ALFWorld server: start one and "
                                 f"set env.http.url=http://HOST:PORT (now {self.url})") from None
