"""The `dreamgym` command line: a thin typer app. Each command parses its flags, loads its typed
config (`-c FILE` presets merged in order, then `key=value` overrides), calls one pipeline function
in `dreamgym.pipelines`, and prints the run directory. Flags that name inputs (`--data`, `--out`)
stay flags; flags such as `--env`/`--policy`/`--seed` are sugar for the matching config keys.
User errors (bad config key, missing file, dead server) print one clear line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dreamgym import config as C

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="DreamGym: train LLM agents with RL in synthesized experience.")
console = Console(stderr=True)

Overrides = Annotated[Optional[list[str]], typer.Argument(help="config overrides key=value, e.g. env.webshop.max_steps=20")]
Configs = Annotated[Optional[list[Path]], typer.Option("--config", "-c", help="YAML preset(s), merged in order")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="run directory (default logs/<command>/<timestamp>/)")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="random seed (config key `seed`)")]
EnvOpt = Annotated[Optional[str], typer.Option("--env", help="env name or pkg.module:Class (config key env.name)")]


def _sugar(**flags: object) -> list[str]:
    """Flags that are shorthands for config keys -> key=value overrides (applied last)."""
    return [f"{k}={v}" for k, v in flags.items() if v is not None]


def _load(schema: type, config: list[Path] | None, overrides: list[str] | None, **flags: object):
    return C.load_config(schema, config or [], (overrides or []) + _sugar(**flags))


@app.command()
def collect(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    env: EnvOpt = None,
    policy: Annotated[Optional[str], typer.Option(help="oracle or random (config key policy)")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="number of episodes (config key episodes)")] = None,
    split: Annotated[Optional[str], typer.Option(help="train, dev or test (config key split)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="trajectory JSON-lines file (default: in the run dir)")] = None,
):
    """Run a scripted policy in a real env and write trajectories as JSON lines."""
    from dreamgym.pipelines.collect import collect as run

    cfg = _load(C.CollectConfig, config, overrides, seed=seed, **{"env.name": env}, policy=policy,
                episodes=episodes, split=split)
    summary = run(cfg, run_dir=run_dir, out=out)
    console.print(f"success_rate {summary['success_rate']:.3f} over {summary['episodes']} episodes, "
                  f"{summary['steps_per_s']:.1f} steps/s -> {summary['trajectories']}")
    print(summary["run_dir"])


@app.command("serve-env")
def serve_env(
    name: Annotated[str, typer.Argument(help="env to serve (registered name or pkg.module:Class)")] = "webshop",
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    host: Annotated[Optional[str], typer.Option(help="interface to bind (config key host)")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port (config key port)")] = None,
):
    """Serve a native env over AgentGym's HTTP protocol until interrupted."""
    from dreamgym.pipelines.serve_env import serve_env as run

    cfg = _load(C.ServeEnvConfig, config, overrides, seed=seed, **{"env.name": name}, host=host, port=port)
    run(cfg, run_dir=run_dir)


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    from dreamgym.errors import USER_ERRORS

    try:
        app()
    except USER_ERRORS as e:
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
