"""Config loading: defaults <- each `-c FILE` (its `includes:` first) <- `key=value` overrides, merged with
OmegaConf into the typed dataclasses of this package. Struct mode rejects unknown keys, and every error
names its source (file or "command line"), the dotted key and the expected value."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dreamgym.errors import DreamGymError

__all__ = ["ConfigError", "SPLITS", "load_config", "to_yaml"]

SPLITS = ("train", "dev", "test")
T = TypeVar("T")


class ConfigError(DreamGymError):
    """A config file or override is wrong; the message names the source, the key and what is expected."""


def load_config(schema: type[T], files: list[str | Path] | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- each YAML file (its `includes:` first) <- key=value overrides -> typed object."""
    cfg = OmegaConf.structured(schema)
    layers: list[tuple[str, Any]] = []
    for f in files or []:
        layers.extend(_read_preset(Path(f), seen=()))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
    if overrides:
        try:
            layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: {str(e).splitlines()[0]}") from None
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ConfigError(f"{source}: key '{key}': {str(e).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(cfg)  # runs __post_init__ validation
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: key '{getattr(e, 'full_key', '?')}': {str(e).splitlines()[0]}") from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what every run writes to config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# -- internals ---------------------------------------------------------------------------------

def _read_preset(path: Path, seen: tuple[Path, ...]) -> list[tuple[str, Any]]:
    """A YAML preset and, first, the presets its `includes:` list names (relative to it)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: includes itself (cycle through {' -> '.join(map(str, seen))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    includes = data.pop("includes", []) or []
    if isinstance(includes, str):
        includes = [includes]
    layers: list[tuple[str, Any]] = []
    for inc in includes:
        layers.extend(_read_preset((path.parent / inc), seen + (path.resolve(),)))
    layers.append((str(path), OmegaConf.create(data)))
    return layers
