"""The `dreamgym` command line: a thin typer app. Each command parses its flags, loads its typed
config (`-c FILE` presets merged in order, then `key=value` overrides), calls one pipeline function
in `dreamgym.pipelines`, and prints the run directory. Flags that name inputs (`--data`, `--out`)
stay flags; flags such as `--env`/`--policy`/`--seed` are sugar for the matching config keys.
User errors (bad config key, missing file, dead server) print one clear line and exit with code 2.
"""

from __future__ import annotations

import signal
import sys
import threading
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


def _load(schema: type, config: list[Path] | None, overrides: list[str] | None, resume_dir: Path | None = None,
          **flags: object):
    """Typed config from presets + overrides; with `resume_dir`, the run's saved config.yaml is the base."""
    base = [Path(resume_dir) / "config.yaml"] if resume_dir is not None and (Path(resume_dir) / "config.yaml").is_file() else []
    return C.load_config(schema, base + list(config or []), (overrides or []) + _sugar(**flags))


@app.command()
def collect(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    env: EnvOpt = None,
    policy: Annotated[Optional[str], typer.Option(help="oracle, random or noisy-oracle (config keys policy, epsilon)")] = None,
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


buffer_app = typer.Typer(no_args_is_help=True, help="Build and inspect replay buffers (hnswlib + transitions).")
app.add_typer(buffer_app, name="buffer")


@buffer_app.command("build")
def buffer_build(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: Annotated[Optional[list[Path]], typer.Option("--from", "--data", help="trajectory JSON lines (repeatable)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="buffer folder (default: <run dir>/buffer)")] = None,
    append: Annotated[bool, typer.Option("--append", help="grow the buffer already in --out")] = False,
):
    """Embed the transitions of trajectory files into a replay buffer (dev/test trajectories are refused)."""
    from dreamgym.pipelines.buffer import buffer_build as run

    cfg = _load(C.BufferBuildConfig, config, overrides, seed=seed)
    summary = run(cfg, data or [], out=out, run_dir=run_dir, append=append)
    skipped = sum(summary["skipped_trajectories"].values())
    console.print(f"{summary['transitions']} transitions ({summary['real_transitions']} real, "
                  f"{summary['synthetic_transitions']} synthetic), {summary['duplicates']} duplicates, "
                  f"{skipped} dev/test trajectories refused -> {summary['buffer_dir']}")
    print(summary["run_dir"])


@buffer_app.command("info")
def buffer_info(
    directory: Annotated[Path, typer.Argument(help="buffer folder (holds meta.json, index.bin, records.jsonl)")],
    as_json: Annotated[bool, typer.Option("--json", help="print counts and settings as one JSON object")] = False,
):
    """Counts by source and env, encoder and index settings of a saved replay buffer."""
    import json

    from dreamgym.pipelines.buffer import buffer_info as run

    info = run(directory)
    if as_json:
        print(json.dumps(info))
        return
    print(f"{info['dir']}: {info['total']} transitions ({info['real']} real, {info['synthetic']} synthetic)")
    for env, c in sorted(info["by_env"].items()):
        print(f"  {env}: {c.get('real', 0)} real, {c.get('synthetic', 0)} synthetic")
    print(f"  encoder {info['encoder']} (dim {info['dim']}), M {info['M']}, ef_construction "
          f"{info['ef_construction']}, ef_search {info['ef_search']}, max_size {info['max_size'] or 'none'}")


@app.command()
def annotate(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="trajectory JSON lines (repeatable)")] = None,
    buffer: Annotated[Optional[Path], typer.Option("--buffer", help="replay buffer dir for top-k demonstrations")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="SFT records JSON lines (also the resume cache)")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="rule, model or none (config key teacher)")] = None,
):
    """Write teacher rationales for offline real transitions: the experience model's SFT set."""
    from dreamgym.pipelines.annotate import annotate as run

    cfg = _load(C.AnnotateConfig, config, overrides, seed=seed, teacher=teacher)
    summary = run(cfg, data or [], out=out, buffer_dir=buffer, run_dir=run_dir)
    console.print(f"{summary['annotated']} transitions annotated ({summary['cached']} cached) -> {summary['out']}")
    print(summary["run_dir"])


@app.command("fit-world-model")
def fit_world_model(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="SFT records of `annotate`, or trajectory JSON lines (repeatable, required)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue --run-dir from its last checkpoint "
                                                          "with its saved config (model/data changes refused)")] = False,
):
    """Fine-tune the experience model on real transitions (paper Eq. 5); writes a LoRA adapter."""
    from dreamgym.pipelines.fit_world_model import fit_world_model as run

    files = list(config or [])
    if resume and run_dir is not None and (run_dir / "config.yaml").is_file():
        files.insert(0, run_dir / "config.yaml")  # the saved config is the base; overrides go on top
    cfg = _load(C.FitWorldModelConfig, files, overrides, seed=seed)
    summary = run(cfg, data or [], run_dir=run_dir, resume=resume)
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    console.print(f"train_loss {fmt(summary['train_loss'])}, val_loss {fmt(summary['val_loss'])} "
                  f"(before {fmt(summary['val_loss_first'])}), {summary['tokens_per_s']:.0f} tokens/s, "
                  f"{summary['train_examples']} train / {summary['val_examples']} val examples -> "
                  f"{summary['adapter_dir']}")
    print(summary["run_dir"])


@app.command("eval-world-model")
def eval_world_model(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="held-out real trajectory JSON lines (repeatable)")] = None,
    world_model: Annotated[Optional[str], typer.Option("--world-model", help="adapter dir or fit-world-model run dir (default: the base model)")] = None,
    no_reasoning_model: Annotated[Optional[str], typer.Option("--no-reasoning-model", help="adapter trained without reasoning, for the no_reasoning mode (default: --world-model with the no-reasoning prompt)")] = None,
    buffer: Annotated[Optional[Path], typer.Option("--buffer", help="replay buffer dir for retrieval (without it full == no_retrieval)")] = None,
):
    """Audit the experience model on held-out real transitions: reward accuracy, success precision/recall,
    next-state agreement and parse failures, with retrieval and reasoning on and off."""
    from dreamgym.pipelines.eval_world_model import eval_world_model as run

    cfg = _load(C.EvalWorldModelConfig, config, overrides, seed=seed)
    s = run(cfg, data or [], world_model=world_model, no_reasoning_model=no_reasoning_model, buffer_dir=buffer,
            run_dir=run_dir)
    console.print(f"{s['flat_mode']}: reward_accuracy {s['reward_accuracy']:.3f} (majority "
                  f"{s['majority_baseline_accuracy']:.3f}), terminal_balanced_accuracy "
                  f"{s['terminal_balanced_accuracy']:.3f}, next_state_exact_match {s['next_state_exact_match']:.3f}, "
                  f"parse_fail_rate {s['parse_fail_rate']:.3f} over {s['n_transitions']} transitions")
    print(s["run_dir"])


@app.command("train-policy")
def train_policy(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    algo: Annotated[Optional[str], typer.Option("--algo", help="ppo or grpo (config key algo.name)")] = None,
    env: Annotated[Optional[str], typer.Option("--env", help="'synthetic' or a real env name (train_env / env.name)")] = None,
    world_model: Annotated[Optional[str], typer.Option("--world-model", help="fit-world-model run dir or adapter")] = None,
    buffer: Annotated[Optional[str], typer.Option("--buffer", help="replay buffer dir")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="warm start: base, sft, a run dir or adapter")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue --run-dir from its last checkpoint")] = False,
):
    """Train the policy with PPO or GRPO in the synthetic env or a real env."""
    from dreamgym.pipelines.train_policy import train_policy as run

    flags: dict[str, object] = {"algo.name": algo, "seed": seed}
    if env is not None:
        flags.update({"train_env": "synthetic"} if env == "synthetic" else {"train_env": "real", "env.name": env})
    cfg = _load(C.TrainPolicyConfig, config, overrides, resume_dir=run_dir if resume else None, **flags)
    summary = run(cfg, run_dir=run_dir, world_model=world_model, buffer=buffer, policy=policy, resume=resume)
    console.print(f"{summary['algo']} in {summary['train_env']} env: success {summary['success_rate_first']:.2f} -> "
                  f"{summary['success_rate_last']:.2f} over {summary['iterations']} iterations")
    print(summary["run_dir"])


def _offline(command: str, schema: type, config, overrides, run_dir, seed, data, policy, resume, export) -> dict:
    """sft-policy / dpo-policy: load the config (the saved one first on --resume), run, print the result."""
    from dreamgym.pipelines import offline_policy

    cfg = _load(schema, config, overrides, resume_dir=run_dir if resume else None, seed=seed)
    run = offline_policy.sft_policy if command == "sft-policy" else offline_policy.dpo_policy
    s = run(cfg, data or [], run_dir=run_dir, policy=policy, resume=resume, export=export)
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    console.print(f"{s['mode']}: train_loss {fmt(s['train_loss_first'])} -> {fmt(s['train_loss'])}, val_loss "
                  f"{fmt(s['val_loss_first'])} -> {fmt(s['val_loss'])} over {s['train_examples']} train / "
                  f"{s['val_examples']} val examples -> {s['adapter_dir']}")
    print(s["run_dir"])
    return s


DataOpt = Annotated[Optional[list[Path]], typer.Option("--data", help="trajectory JSON lines (repeatable, required)")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue --run-dir from its last checkpoint")]
ExportOpt = Annotated[Optional[Path], typer.Option("--export", help="also write the adapter here (e.g. checkpoints/sft, "
                                                                    "which `--policy sft` finds)")]


@app.command("sft-policy")
def sft_policy(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: DataOpt = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="start from: base (default), a run dir or adapter")] = None,
    resume: ResumeOpt = False,
    export: ExportOpt = None,
):
    """Behaviour cloning of the LoRA policy on offline (oracle) trajectories: the SFT warm start."""
    _offline("sft-policy", C.SFTPolicyConfig, config, overrides, run_dir, seed, data, policy, resume, export)


@app.command("dpo-policy")
def dpo_policy(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: DataOpt = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="start (and reference) policy: base, sft, a run dir or adapter")] = None,
    resume: ResumeOpt = False,
    export: ExportOpt = None,
):
    """DPO baseline on offline trajectories: chosen = demonstrated action, rejected = a failed or random one."""
    _offline("dpo-policy", C.DPOPolicyConfig, config, overrides, run_dir, seed, data, policy, resume, export)


@app.command()
def s2r(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    real_env: Annotated[Optional[str], typer.Option("--real-env", help="real env: registered name or pkg.module:Class (config key env.name)")] = None,
    world_model: Annotated[Optional[str], typer.Option("--world-model", help="fit-world-model run dir or adapter (phase 1)")] = None,
    buffer: Annotated[Optional[str], typer.Option("--buffer", help="replay buffer dir (grown by both phases' copies)")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="start policy: base, sft, a run dir or adapter")] = None,
    resume: ResumeOpt = False,
):
    """Sim-to-real: RL in the synthetic env, then RL in the real env under a real-transition budget."""
    from dreamgym.pipelines.s2r import s2r as run

    cfg = _load(C.S2RConfig, config, overrides, resume_dir=run_dir if resume else None, seed=seed,
                **{"env.name": real_env})
    s = run(cfg, world_model=world_model, buffer=buffer, policy=policy, run_dir=run_dir, resume=resume)
    rate = lambda k: "n/a" if k not in s else f"{s[k]:.3f} [{s[k + '_ci95'][0]:.3f}, {s[k + '_ci95'][1]:.3f}]"  # noqa: E731
    console.print(f"real success {rate('success_rate_before')} -> synthetic {rate('success_rate_after_synthetic')} -> "
                  f"s2r {rate('success_rate')}; real transitions {s['real_transitions']} / budget {s['real_budget']}, "
                  f"synthetic {s['synthetic_transitions']}")
    print(s["run_dir"])


@app.command()
def evaluate(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    env: EnvOpt = None,
    policy: Annotated[str, typer.Option("--policy", help="base, sft, oracle, random, an adapter dir or a run dir")] = "base",
    split: Annotated[Optional[str], typer.Option(help="train, dev or test (config key split)")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="episodes (config key episodes)")] = None,
):
    """Evaluate a policy in a real env split (with oracle and random reference rows)."""
    from dreamgym.pipelines.evaluate import evaluate as run

    cfg = _load(C.EvaluateConfig, config, overrides, seed=seed, **{"env.name": env}, split=split, episodes=episodes)
    if policy == "sft":  # the SFT warm start (checkpoints/sft or the newest sft-policy run)
        from dreamgym.pipelines.offline_policy import resolve_policy

        policy = resolve_policy(policy) or "base"
    summary = run(cfg, policy=policy, run_dir=run_dir)
    for name, r in summary["rows"].items():
        lo, hi = r["success_rate_ci95"]
        console.print(f"{name:>8}: success {r['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]  reward {r['mean_reward']:.3f}  "
                      f"steps {r['avg_steps']:.1f}")
    print(summary["run_dir"])


@app.command()
def quickstart(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    env: EnvOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --run-dir (finished steps are kept)")] = False,
):
    """The whole loop at smoke scale: collect, buffer, experience model, SFT warm start, S2R, real-only RL at the
    same real budget, evaluations and report.md (~20 minutes on a 2-core CPU with the embedded model)."""
    from dreamgym.config.quickstart import QuickstartConfig
    from dreamgym.pipelines.quickstart import quickstart as run

    if resume and run_dir is None:
        raise typer.BadParameter("--resume needs --run-dir")
    cfg = _load(QuickstartConfig, config, overrides, resume_dir=run_dir if resume else None, seed=seed,
                **{"env.name": env})
    summary = run(cfg, run_dir=run_dir, resume=resume)
    for name, r in summary["rows"].items():
        lo, hi = r["success_rate_ci95"]
        console.print(f"{name:>15}: success {r['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]  reward {r['mean_reward']:.3f}")
    console.print(f"report: {summary['report']}")
    print(summary["run_dir"])


@app.command()
def sweep(
    overrides: Overrides = None,
    config: Configs = None,
    run_dir: RunDirOpt = None,
    seed: SeedOpt = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="held-out real trajectory JSON lines (repeatable; target eval-world-model)")] = None,
    world_model: Annotated[Optional[str], typer.Option("--world-model", help="adapter dir or fit-world-model run dir (default: the base model)")] = None,
    no_reasoning_model: Annotated[Optional[str], typer.Option("--no-reasoning-model", help="adapter for points with reasoning off (default: --world-model, no-reasoning prompt)")] = None,
    buffer: Annotated[Optional[Path], typer.Option("--buffer", help="replay buffer dir for retrieval (re-embedded in memory for other encoders)")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="target train-policy: warm start (base, sft, a run dir or adapter)")] = None,
):
    """Sensitivity sweep: one table of fidelity-audit metrics (or policy results, target=train-policy) over
    k, history length, reasoning, retrieval encoder, lambda, ... (config `axes`)."""
    from dreamgym.pipelines.sweep import sweep as run

    cfg = _load(C.SweepConfig, config, overrides, seed=seed)
    s = run(cfg, data or [], world_model=world_model, no_reasoning_model=no_reasoning_model, buffer_dir=buffer,
            policy=policy, run_dir=run_dir)
    console.print(s["table_md"].rstrip(), soft_wrap=True, markup=False, highlight=False)
    print(s["run_dir"])


def exit_on_sigterm() -> None:
    """SIGTERM (`timeout`, a job scheduler, `kill`) stops a command at once with exit code 143, as an unhandled
    SIGTERM does, but as SystemExit, so `finally` blocks and atomic writes complete. Lightning installs its own
    handler during every fit and calls this one after it: without this one, the stop waits for the end of the
    current batch (one whole RL iteration: 22 minutes in the CPU study) and then exits with code 0, as if the run
    had finished. A run stopped this way resumes from its last checkpoint (`--resume`), as after SIGKILL."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2; SIGTERM exits 143 now."""
    from rich.markup import escape

    from dreamgym.errors import USER_ERRORS

    exit_on_sigterm()
    try:
        app()
    except USER_ERRORS as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")  # messages carry brackets: 'dreamgym[webarena]'
        sys.exit(2)


if __name__ == "__main__":
    main()
