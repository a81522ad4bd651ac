"""`dreamgym s2r`: sim-to-real. Phase 1 trains the policy with PPO/GRPO in the synthetic env (experience
model + replay buffer + curriculum; train-policy with `train_env: synthetic`), phase 2 continues RL from
phase 1's adapter in the real env under a hard real-transition budget (train-policy with `train_env: real`
and `real_transition_budget`; its real transitions also grow the replay buffer copy phase 1 exported).
Works with any real env by registry name or `pkg.module:Class` (`--real-env`).

Layout: `RUN/` holds config.yaml (S2RConfig), summary.json, provenance.json, `tb/` (eval/ and cost/
scalars at step 0 = before, 1 = after phase 1, 2 = after phase 2) and `s2r_state.json` (the budget fixed at
the start, finished evaluations, accumulated wall clock per phase). `RUN/phase1_synthetic/` and
`RUN/phase2_real/` are complete train-policy runs (own config, checkpoints, tb, rollouts, summary).

Budget: real env steps (transitions), `s2r.real_budget`, or by default `s2r.real_budget_fraction` (10%) of
the most a real-only run with the same config can use: max_iterations * rollouts per iteration *
rollout.max_turns. It is fixed when the run starts (a resume that raises max_iterations keeps it). Before
and after each phase the policy is evaluated greedily on `s2r.eval_episodes` tasks of the real env's
`s2r.eval_split`; those episodes are reported apart (`eval_real_transitions`), not charged to the budget.

Resume (`--run-dir RUN --resume`): finished evaluations and phases are kept; an unfinished phase resumes
from its own last checkpoint (and buffer copy). `s2r` returns the summary dict (the quickstart calls it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dreamgym.config import EvaluateConfig, S2RConfig, load_config, to_yaml
from dreamgym.errors import DreamGymError
from dreamgym.memory import peak_rss_mb, release_memory
from dreamgym.runs import RunDir, atomic_write_text

__all__ = ["s2r", "PHASES"]

PHASES = {"synthetic": "phase1_synthetic", "real": "phase2_real"}
"""phase -> its train-policy run dir inside the s2r run dir"""
_LEDGER = ("real_transitions", "synthetic_transitions", "tokens_generated", "tokens_trained", "gpu_hours")
_OPTIONAL = ("zero_var_group_share", "wm_parse_fail_rate")  # GRPO only / synthetic env only


def s2r(cfg: S2RConfig, world_model: str | None, buffer: str | None = None, policy: str | None = None,
        run_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Phase 1 (synthetic) then phase 2 (real, budgeted) with real evaluations around them; the summary."""
    from dreamgym.envs.base import make_env
    from dreamgym.pipelines.offline_policy import resolve_policy

    if world_model is None:
        raise DreamGymError("s2r needs --world-model RUN_OR_ADAPTER (a fit-world-model run) for phase 1")
    run = RunDir.open("s2r", run_dir, cfg, resume=resume)
    if resume:
        _check_resume(run, cfg)
    state = _State(run.path / "s2r_state.json", budget=cfg.real_budget())
    env = make_env(cfg.env)
    init = resolve_policy(policy)
    evals = {"before": state.evaluate("before", cfg, env, init or "base")}

    p1_dir = run.path / PHASES["synthetic"]
    p1 = state.phase("synthetic", cfg.train_policy_config("synthetic"), p1_dir, world_model, buffer, init, progress,
                     done=lambda s: s["iterations"] >= cfg.max_iterations)
    evals["after_synthetic"] = state.evaluate("after_synthetic", cfg, env, p1["adapter_dir"])

    p1_buffer = p1_dir / "checkpoints" / "buffer"
    p2_buffer = str(p1_buffer) if buffer is not None and (p1_buffer / "meta.json").is_file() else buffer
    p2_cfg = cfg.train_policy_config("real")
    p2_cfg.real_transition_budget = state.budget
    p2 = state.phase("real", p2_cfg, run.path / PHASES["real"], None, p2_buffer, str(p1_dir), progress,
                     done=lambda s: s["real_transitions"] >= state.budget or s["iterations"] >= p2_cfg.max_iterations)
    evals["after"] = state.evaluate("after", cfg, env, p2["adapter_dir"])

    phases = {name: _phase_ledger(s, state.wall.get(name, 0.0)) for name, s in (("synthetic", p1), ("real", p2))}
    rates = {}
    for key, r in evals.items():
        if r is not None:
            suffix = "" if key == "after" else f"_{key}"
            rates[f"success_rate{suffix}"] = r["success_rate"]
            rates[f"success_rate{suffix}_ci95"] = r["success_rate_ci95"]
            rates[f"mean_reward{suffix}"] = r["mean_reward"]
    eval_s = {f"eval_{k}": state.wall.get(f"eval_{k}", 0.0) for k in evals}
    wall = {**eval_s, **{n: p["wall_clock_s"] for n, p in phases.items()}}
    wall["total"] = round(sum(wall.values()), 3)
    summary = dict(
        real_env=cfg.env.name, world_model=world_model, buffer=buffer, policy_init=policy, algo=cfg.algo.name,
        adapter_dir=p2["adapter_dir"], buffer_dir=str(run.path / PHASES["real"] / "checkpoints" / "buffer") if buffer else None,
        real_budget=state.budget, real_budget_reference=cfg.real_budget_reference(),
        real_budget_fraction=None if cfg.s2r.real_budget is not None else cfg.s2r.real_budget_fraction,
        **{k: _total(phases, k) for k in _LEDGER}, eval_real_transitions=sum(r["transitions"] for r in evals.values() if r),
        eval_split=cfg.s2r.eval_split, eval_episodes=cfg.s2r.eval_episodes, **rates, evaluations=evals, phases=phases,
        wall_clock_s=wall, peak_rss_mb=round(peak_rss_mb()))
    _log_tensorboard(run, evals, phases)
    return run.write_summary(**summary)


# -- internals ---------------------------------------------------------------------------------

class _State:
    """s2r_state.json: the fixed budget, finished evaluations, wall-clock seconds per phase (all sessions)."""

    def __init__(self, path: Path, budget: int):
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.budget: int = data.get("budget", budget)
        self.evals: dict = data.get("evals", {})
        self.wall: dict[str, float] = data.get("wall_clock_s", {})
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"budget": self.budget, "evals": self.evals,
                                                 "wall_clock_s": self.wall}, indent=2))

    def _add_wall(self, key: str, seconds: float) -> None:
        self.wall[key] = round(self.wall.get(key, 0.0) + seconds, 3)
        self._save()

    def evaluate(self, key: str, cfg: S2RConfig, env, policy: str) -> dict | None:
        """Greedy real-env evaluation of `policy` (once per key and run; None when eval_episodes is 0)."""
        from dreamgym.pipelines.evaluate import evaluate_policy, row

        if key in self.evals or cfg.s2r.eval_episodes == 0:
            return self.evals.get(key)
        t0 = time.perf_counter()
        tasks = env.tasks(cfg.s2r.eval_split)[: cfg.s2r.eval_episodes]
        if not tasks:
            raise DreamGymError(f"key 's2r.eval_split': env {cfg.env.name!r} has no {cfg.s2r.eval_split} tasks")
        ecfg = EvaluateConfig(env=cfg.env, model=cfg.model, rollout=cfg.rollout, split=cfg.s2r.eval_split,
                              episodes=len(tasks), references=False, seed=cfg.seed)
        self.evals[key] = {**row(evaluate_policy(ecfg, env, tasks, policy)), "policy": policy}
        release_memory()  # the evaluated policy and its KV cache (a garbage cycle) before the next phase loads
        self._add_wall(f"eval_{key}", time.perf_counter() - t0)
        return self.evals[key]

    def phase(self, name: str, pcfg, path: Path, world_model, buffer, policy, progress: bool, done) -> dict:
        """Run (or resume, or skip when its summary says it is done) one train-policy phase."""
        from dreamgym.pipelines.train_policy import train_policy

        summary_path = path / "summary.json"
        if summary_path.is_file() and done(json.loads(summary_path.read_text())):
            return json.loads(summary_path.read_text())
        t0 = time.perf_counter()
        summary = train_policy(pcfg, run_dir=path, world_model=world_model, buffer=buffer, policy=policy,
                               resume=(path / "config.yaml").is_file(), progress=progress)
        release_memory()  # the phase's models, engines and trainer are garbage cycles: free them now
        self._add_wall(name, time.perf_counter() - t0)
        return summary


def _phase_ledger(s: dict, wall: float) -> dict:
    keys = ("run_dir", "iterations", "success_rate_first", "success_rate_last", "adapter_dir",
            "policy_updates") + _LEDGER
    return {**{k: s.get(k) for k in keys}, **{k: s[k] for k in _OPTIONAL if k in s}, "wall_clock_s": wall}


def _total(phases: dict, key: str):
    vals = [p[key] or 0 for p in phases.values()]
    return round(sum(vals), 4) if key == "gpu_hours" else sum(vals)


def _check_resume(run: RunDir, cfg: S2RConfig) -> None:
    saved = load_config(S2RConfig, [run.config_path], [])
    changed = [k for k in ("model", "env", "algo", "synthetic", "rollout") if to_yaml(getattr(saved, k)) != to_yaml(getattr(cfg, k))]
    if saved.s2r.real_budget != cfg.s2r.real_budget or saved.s2r.real_budget_fraction != cfg.s2r.real_budget_fraction:
        changed.append("s2r.real_budget/real_budget_fraction")
    if changed:
        raise DreamGymError(f"--resume: {', '.join(changed)} differ from the saved config of {run.path}; a resumed "
                            "s2r run keeps its model, env, algorithm, context layout and budget (drop those overrides)")


def _log_tensorboard(run: RunDir, evals: dict, phases: dict) -> None:
    """eval/ at steps 0 (before), 1 (after phase 1), 2 (after phase 2); cost/ running totals at 1 and 2."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tb_dir))
    try:
        for step, key in enumerate(("before", "after_synthetic", "after")):
            r = evals.get(key)
            if r is None:
                continue
            lo, hi = r["success_rate_ci95"]
            for name, value in (("eval/success_rate", r["success_rate"]), ("eval/success_rate_ci95_lo", lo),
                                ("eval/success_rate_ci95_hi", hi), ("eval/mean_reward", r["mean_reward"]),
                                ("eval/episode_length", r["avg_steps"])):
                writer.add_scalar(name, value, step)
        running = dict.fromkeys(_LEDGER, 0.0)
        for step, p in enumerate(phases.values(), start=1):
            for k in _LEDGER:
                running[k] += float(p[k] or 0)
                writer.add_scalar(f"cost/{k}", running[k], step)
    finally:
        writer.close()

