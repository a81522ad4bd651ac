"""The environment protocol and registry every real and synthetic env implements.

`Env` is one episode at a time: `tasks(split)`, `reset(task)`, `step(action)`, `available_actions()`,
`close()`. Envs are found by registered name (`make_env("webshop", ...)`) or by an import path
`pkg.module:Class`, so a user's own env plugs in without editing dreamgym: any class with those
methods works; subclassing `Env` is optional. A class may define `from_config(env_cfg)` to read its
settings from the typed `EnvConfig`; otherwise it is built as `Class(**env_cfg.kwargs)`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

if TYPE_CHECKING:
    from dreamgym.config import EnvConfig

__all__ = ["Env", "EnvProtocol", "Policy", "UnknownEnvError", "register_env", "registered_envs",
           "resolve_env_class", "make_env", "REQUIRED_METHODS"]

REQUIRED_METHODS = ("tasks", "reset", "step", "available_actions", "close")


@runtime_checkable
class EnvProtocol(Protocol):
    def tasks(self, split: str) -> list[Task]: ...
    def reset(self, task: Task) -> StepResult: ...
    def step(self, action: str) -> StepResult: ...
    def available_actions(self) -> list[str]: ...
    def close(self) -> None: ...


class Env(ABC):
    """Base class for one-episode-at-a-time environments (optional for user envs: duck typing works).

    Contract (docs/contracts): `step` on an invalid action answers like the original env does (for
    WebShop: page unchanged, reward 0, not done, `info["invalid_action"] = True`), never raises.
    """

    name: str = "env"

    @abstractmethod
    def tasks(self, split: str) -> list[Task]:
        """The fixed, ordered list of tasks of a split ('train', 'dev', 'test')."""

    @abstractmethod
    def reset(self, task: Task) -> StepResult:
        """Start an episode on `task`; the observation is the first thing the agent sees."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply one text action."""

    @abstractmethod
    def available_actions(self) -> list[str]:
        """Actions valid on the current page/state, as full action strings."""

    def close(self) -> None:
        """Release resources (servers, processes). Default: nothing to release."""

    def oracle(self) -> "Policy | None":
        """A scripted policy that completes tasks from their goal record, if the env has one."""
        return None


class Policy(Protocol):
    """A scripted or learned policy for `collect`/`evaluate`: one action per call."""

    name: str

    def reset(self, task: Task) -> None: ...
    def act(self, observation: str, available_actions: list[str]) -> str: ...


class UnknownEnvError(DreamGymError):
    """An env name that is neither registered nor an importable `pkg.module:Class`."""


# name -> "module:Class" for built-ins (imported lazily so optional env deps stay optional)
_BUILTIN: dict[str, str] = {
    "webshop": "dreamgym.envs.webshop.env:WebShopEnv",
    "http": "dreamgym.envs.http_client:HttpEnv",
    "choice-corridor": "dreamgym.envs.toy:ChoiceCorridorEnv",
    "textworld": "dreamgym.envs.textworld_env:TextWorldEnv",
    "alfworld": "dreamgym.envs.alfworld_native:AlfWorldEnv",
    "alfworld-http": "dreamgym.envs.alfworld:AlfWorldHttpEnv",
    "miniwob": "dreamgym.envs.miniwob_env:MiniWoBEnv",
    "webarena": "dreamgym.envs.webarena_env:WebArenaEnv",
}
_REGISTRY: dict[str, Callable[..., Any] | str] = dict(_BUILTIN)


def register_env(name: str) -> Callable[[type], type]:
    """Class decorator: make an env available as `env.name=<name>`."""

    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_envs() -> list[str]:
    return sorted(_REGISTRY)


def resolve_env_class(name: str) -> type:
    """Registered name or `pkg.module:Class` -> the class; an unknown name lists what exists."""
    target = _REGISTRY.get(name)
    if target is None and ":" not in name:
        raise UnknownEnvError(f"key 'env.name': unknown env {name!r}; registered envs: "
                              f"{', '.join(registered_envs())}; or give an import path 'pkg.module:Class'")
    spec = target if target is not None else name
    if not isinstance(spec, str):
        return spec  # type: ignore[return-value]
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = (" (is the folder holding it on the import path? e.g. run from that folder with PYTHONPATH=.)"
                if isinstance(e, ModuleNotFoundError) and e.name and module_name.startswith(e.name) else "")
        raise UnknownEnvError(f"key 'env.name': cannot import module {module_name!r} for env {name!r}: {e}{hint}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise UnknownEnvError(f"key 'env.name': module {module_name!r} has no attribute {attr!r}") from None
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise UnknownEnvError(f"key 'env.name': {spec} is not an env, it lacks {', '.join(missing)}")
    return cls


def make_env(env_cfg: "EnvConfig") -> Any:
    """Build the env named by `env_cfg.name` from its config."""
    cls = resolve_env_class(env_cfg.name)
    if hasattr(cls, "from_config"):
        return cls.from_config(env_cfg)
    return cls(**env_cfg.kwargs)
