"""Real environments behind one protocol (`envs.base`): native WebShop, the AgentGym HTTP client,
and user envs found by `pkg.module:Class`."""

from dreamgym.envs.base import Env, make_env, register_env, registered_envs, resolve_env_class

__all__ = ["Env", "make_env", "register_env", "registered_envs", "resolve_env_class"]
