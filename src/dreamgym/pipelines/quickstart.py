"""`dreamgym quickstart`: the whole DreamGym loop at smoke scale in one command, and the comparison report.

Steps (each a normal run dir under `RUN/steps/`, so every artifact can be inspected or reused by hand):
 1. `collect_oracle`, `collect_random`: scripted episodes on the real env's train split
 2. `buffer`: the replay buffer seeded with both (MiniLM embeddings)
 2b. `annotate`: their transitions as the experience model's SFT set: history, the top-k demonstrations
    retrieved from the buffer (own trajectory excluded, as the synthetic env will see them) and a rationale
 3. `world_model`: the experience model fitted on that set (LoRA SFT of the embedded model)
 4. `sft`: the SFT warm start, behaviour cloning on the oracle demonstrations
 5. `s2r`: from the SFT policy, RL in the synthetic env (phase 1), then in the real env under the S2R budget
    (phase 2); it evaluates the SFT policy (before), the synthetic-only policy and the S2R policy
 6. `real_only`: from the SFT policy, RL in the real env with the same real-transition budget as S2R
 7. `eval_base`, `eval_real_only`: the base model (with oracle and random reference rows) and the real-only
    policy, on the same first `eval_episodes` tasks of `eval_split` as the s2r evaluations
 8. `report.md` + `report.png` (success rates with Wilson 95% intervals) and `summary.json`

Resume: `--run-dir RUN --resume` skips finished steps and resumes an unfinished one from its checkpoint
(collect and buffer steps, seconds long, are redone). `quickstart` returns the summary dict.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from dreamgym.config import (AnnotateConfig, BufferBuildConfig, CollectConfig, EvaluateConfig, FitWorldModelConfig,
                             S2RConfig, SFTPolicyConfig, load_config)
from dreamgym.config.quickstart import QuickstartConfig
from dreamgym.errors import DreamGymError
from dreamgym.memory import peak_rss_mb, release_memory
from dreamgym.runs import RunDir

__all__ = ["quickstart", "resolve_preset", "STEPS"]

STEPS = ("collect_oracle", "collect_random", "collect_noisy", "buffer", "annotate", "world_model", "sft", "s2r", "real_only", "eval_base",
         "eval_real_only")


def resolve_preset(path: str) -> str:
    """A preset path as given when it exists, else relative to the source checkout (configs/...)."""
    if Path(path).exists():
        return path
    root = Path(__file__).resolve().parents[3]
    if (root / path).exists():
        return str(root / path)
    raise DreamGymError(f"preset {path!r} not found (looked in {Path.cwd()} and {root})")


def quickstart(cfg: QuickstartConfig, run_dir: str | Path | None = None, resume: bool = False,
               progress: bool = True) -> dict:
    """Run (or resume) every step, then write report.md, report.png and summary.json."""
    from dreamgym.pipelines.report import write_report

    run = RunDir.open("quickstart", run_dir, cfg, resume=resume)
    steps = run.path / "steps"
    steps.mkdir(exist_ok=True)
    done: dict[str, dict] = {}

    def step(name: str, fn: Callable[[Path, bool], dict], resumable: bool) -> dict:
        path = steps / name
        if (path / "summary.json").is_file():
            done[name] = json.loads((path / "summary.json").read_text())
            return done[name]
        again = resumable and (path / "config.yaml").is_file()
        if path.exists() and not again:
            shutil.rmtree(path)  # a half-written short step: redo it
        with run.phase(name):
            done[name] = fn(path, again)
        release_memory()  # a step's models are garbage cycles until a full collection: free them before the next
        return done[name]

    _run_steps(cfg, step, progress)
    rows = _rows(done)
    write_report(run.path, cfg, rows, done)
    s2r = done["s2r"]
    ledger = {k: sum(float(d.get(k) or 0) for name, d in done.items() if name not in ("buffer", "annotate"))
              for k in  # buffer and annotate re-count the collected transitions
              ("real_transitions", "synthetic_transitions", "tokens_generated", "tokens_trained", "gpu_hours")}
    return run.write_summary(
        env=cfg.env.name, eval_split=cfg.eval_split, eval_episodes=cfg.eval_episodes, real_budget=s2r["real_budget"],
        rows=rows, results=_results(rows, done), **{f"success_rate_{k}": r["success_rate"] for k, r in rows.items()},
        **{f"success_rate_{k}_ci95": r["success_rate_ci95"] for k, r in rows.items()},
        steps={k: str(steps / k) for k in done}, report=str(run.path / "report.md"),
        peak_rss_mb=round(peak_rss_mb()),
        **{k: (int(v) if k != "gpu_hours" else round(v, 4)) for k, v in ledger.items()})


# -- internals ---------------------------------------------------------------------------------

def _run_steps(cfg: QuickstartConfig, step, progress: bool) -> None:
    from dreamgym.pipelines.annotate import annotate
    from dreamgym.pipelines.buffer import buffer_build
    from dreamgym.pipelines.collect import collect
    from dreamgym.pipelines.evaluate import evaluate
    from dreamgym.pipelines.fit_world_model import fit_world_model
    from dreamgym.pipelines.offline_policy import sft_policy
    from dreamgym.pipelines.s2r import s2r
    from dreamgym.pipelines.train_policy import train_policy

    seed = [f"seed={cfg.seed}"]
    oracle = step("collect_oracle", lambda p, _: collect(
        CollectConfig(env=cfg.env, policy="oracle", episodes=cfg.demos, split="train", seed=cfg.seed,
                      shuffle_tasks=True, progress=progress), run_dir=p), False)
    data = [oracle["trajectories"]]
    if cfg.failures:
        failures = step("collect_random", lambda p, _: collect(
            CollectConfig(env=cfg.env, policy="random", episodes=cfg.failures, split="train", seed=cfg.seed + 1,
                          shuffle_tasks=True, progress=progress), run_dir=p), False)
        data.append(failures["trajectories"])
    if cfg.near_misses:
        near = step("collect_noisy", lambda p, _: collect(
            CollectConfig(env=cfg.env, policy="noisy-oracle", epsilon=cfg.near_miss_epsilon, episodes=cfg.near_misses,
                          split="train", seed=cfg.seed + 2, shuffle_tasks=True, progress=progress), run_dir=p), False)
        data.append(near["trajectories"])
    buffer = step("buffer", lambda p, _: buffer_build(
        load_config(BufferBuildConfig, [], seed + [f"progress={progress}"]), data, out=p / "buffer", run_dir=p), False)
    wm_cfg = load_config(FitWorldModelConfig, [resolve_preset(f) for f in cfg.world_model_presets],
                         seed + cfg.world_model_overrides)
    # the experience model's SFT set: each transition with its history, the top-k demonstrations the synthetic
    # env will retrieve (own trajectory excluded) and a teacher rationale (used when prompt.reasoning is on)
    sft_set = step("annotate", lambda p, _: annotate(
        AnnotateConfig(teacher=cfg.teacher, demos_k=wm_cfg.prompt.demos_k, seed=cfg.seed), [Path(d) for d in data],
        out=p / "sft.jsonl", buffer_dir=Path(buffer["buffer_dir"]), run_dir=p, progress=progress), False)
    world_model = step("world_model", lambda p, again: fit_world_model(wm_cfg, [sft_set["out"]], run_dir=p,
                                                                       resume=again), True)
    sft_cfg = load_config(SFTPolicyConfig, [resolve_preset(f) for f in cfg.sft_presets], seed + cfg.sft_overrides)
    sft_cfg.env = cfg.env
    sft = step("sft", lambda p, again: sft_policy(sft_cfg, [oracle["trajectories"]], run_dir=p, resume=again), True)
    rl = [f"s2r.eval_episodes={cfg.eval_episodes}", f"s2r.eval_split={cfg.eval_split}"] + cfg.rl_overrides
    s2r_cfg = load_config(S2RConfig, [resolve_preset(f) for f in cfg.rl_presets], seed + rl)
    s2r_cfg.env = cfg.env
    _check_same_layout(sft_cfg, s2r_cfg)
    s2r_sum = step("s2r", lambda p, again: s2r(s2r_cfg, world_model["run_dir"], buffer["buffer_dir"], sft["run_dir"],
                                              run_dir=p, resume=again, progress=progress), True)
    real_cfg = replace(s2r_cfg.train_policy_config("real"),  # the same RL settings and real budget, real env
                       real_transition_budget=s2r_sum["real_budget"])
    real = step("real_only", lambda p, again: train_policy(real_cfg, run_dir=p, policy=sft["run_dir"], resume=again,
                                                           progress=progress), True)
    ev = EvaluateConfig(env=cfg.env, model=s2r_cfg.model, rollout=s2r_cfg.rollout, split=cfg.eval_split,
                        episodes=cfg.eval_episodes, references=True, seed=cfg.seed)
    step("eval_base", lambda p, _: evaluate(ev, policy="base", run_dir=p), False)
    step("eval_real_only", lambda p, _: evaluate(replace(ev, references=False),
                                                 policy=real["adapter_dir"], run_dir=p), False)


def _check_same_layout(sft: SFTPolicyConfig, rl: S2RConfig) -> None:
    """RL starts from the SFT adapter: the model and the context layout must be the ones SFT trained in. The
    rollouts' sampling (temperature, top_p) may differ: evaluation is greedy, and RL may explore more."""
    from dreamgym.config import to_yaml

    def layout(cfg, key):
        part = getattr(cfg, key)
        return to_yaml(replace(part, temperature=1.0, top_p=1.0) if key == "rollout" else part)

    diff = [k for k in ("model", "rollout") if layout(sft, k) != layout(rl, k)]
    if diff:
        raise DreamGymError(f"quickstart: keys {', '.join(diff)} of the sft presets differ from the rl presets; the "
                            "RL steps start from the SFT adapter, so both must use the same model and rollout layout")


def _results(rows: dict[str, dict], done: dict[str, dict]) -> dict[str, dict]:
    """The machine-readable comparison: method -> success_rate, mean_reward and the real transitions it trained
    on beyond the shared offline data (SFT: the oracle demonstrations; scripted rows: 0)."""
    from dreamgym.pipelines.report import method_costs

    costs = method_costs(done)
    return {("real_only_same_budget" if k == "real_only" else k): {
        "success_rate": r["success_rate"], "mean_reward": r["mean_reward"],
        "real_transitions": int(costs.get(k, {}).get("real", 0))}
        for k, r in rows.items()}


def _rows(done: dict[str, dict]) -> dict[str, dict]:
    """The comparison: every policy on the same real tasks (name -> success_rate, ci95, mean_reward, ...)."""
    evals = done["s2r"]["evaluations"]
    base = done["eval_base"]["rows"]
    rows = {"base": base["base"], "sft": evals["before"], "synthetic_only": evals["after_synthetic"],
            "s2r": evals["after"], "real_only": done["eval_real_only"]["rows"]["policy"]}
    rows.update({k: base[k] for k in ("oracle", "random") if k in base})
    keys = ("success_rate", "success_rate_ci95", "mean_reward", "avg_steps", "episodes")
    return {name: {k: r[k] for k in keys} for name, r in rows.items()}

