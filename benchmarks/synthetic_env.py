"""Synthetic env transitions/s (the experience model answering actions) against native WebShop steps/s,
side by side in one run, at a few batch sizes.

Workload: B WebShop train tasks run `--steps` steps in three VectorEnvs driven by the same scripted
agent (first a search with the instruction's words, then a seeded random choice among the listed
actions):
- synthetic, backend=hf: `SyntheticVectorEnv` over `build_predictor` (the default experience prompt: 3
  history turns, 3 retrieved demos from a replay buffer of oracle episodes, state 1500 chars), one
  batched `generate_ids` per step with HF `generate`;
- synthetic, backend=engine: the same, through the KV engine (`models/engine.py`);
- native: the real WebShop env, one instance per episode (`EnvPool`), repeated until 0.5 s have passed.
Greedy decoding, write-back off (both synthetic runs see the same buffer, hence the same prompts): the
table reports the share of identical next states between hf and engine. transitions/s = env steps
(one per running episode per `step`) / wall clock of reset + all steps (retrieval, prompt building,
prefill and decode included). The buffer's encoder is the hashing one (no sentence-transformers weights).

    python benchmarks/synthetic_env.py --quick        # < 1 min on 2 CPU cores: tiny-random model, B in 1, 8
    python benchmarks/synthetic_env.py                 # embedded SmolLM2-135M, B in 1, 4 (~3 min, 1 thread)
    python benchmarks/synthetic_env.py --device cuda --batches 1 16 64 --new-tokens 192

The last line reads `synthetic transitions/s: N.N (engine), N.N (hf); native webshop steps/s: N` for
the largest batch measured.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from dataclasses import dataclass, replace

import torch

from dreamgym.config import EnvConfig, ModelConfig, ReplayConfig, SyntheticEnvConfig
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.episodes import run_episode
from dreamgym.experience.synthetic_env import SyntheticVectorEnv, build_predictor
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import build_encoder

__all__ = ["DriveResult", "drive", "build_synthetic", "run", "main"]


@dataclass
class DriveResult:
    """Transitions stepped, seconds, and every observation returned (for the hf/engine agreement)."""

    transitions: int
    seconds: float
    observations: list[str]

    @property
    def per_s(self) -> float:
        return self.transitions / max(self.seconds, 1e-9)


def drive(vec, tasks: list, steps: int, seed: int = 0) -> DriveResult:
    """reset(tasks), then up to `steps` steps of the scripted agent; timed as a whole."""
    rng = random.Random(seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    observations = [r.observation for r in vec.reset(tasks)]
    n = 0
    for _ in range(steps):
        running = vec.running
        if not running:
            break
        actions = [_choose(acts, tasks[i].instruction, rng) for i, acts in zip(running, vec.available_actions())]
        observations += [r.observation for r in vec.step(actions)]
        n += len(actions)
    for i in vec.running:  # leave no episode open between runs
        vec.end(i)
    if cuda:
        torch.cuda.synchronize()
    return DriveResult(n, time.perf_counter() - t0, observations)


def build_synthetic(model_name: str, device: str, new_tokens: int, steps: int, buffer_episodes: int, real_env):
    """(SyntheticVectorEnv over the base model with a hashing-encoder buffer of oracle episodes, predictor)."""
    buffer = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    oracle = real_env.oracle()
    buffer.add_trajectories([run_episode(real_env, oracle, t, 15) for t in real_env.tasks("train")[-buffer_episodes:]])
    cfg = SyntheticEnvConfig(model=ModelConfig(name=model_name, device=device), max_new_tokens=new_tokens,
                             max_steps=steps + 1, write_back=False)
    predictor = build_predictor(cfg, buffer=buffer)
    return SyntheticVectorEnv(predictor, cfg, "webshop", real_env=real_env, buffer=buffer), predictor


def run(model_name: str = "tiny-random", device: str = "cpu", batches: tuple[int, ...] = (1, 8), steps: int = 2,
        new_tokens: int = 32, buffer_episodes: int = 8, print_fn=print) -> list[dict]:
    """One row per batch size: synthetic hf / engine transitions/s, agreement, native steps/s."""
    real_env = make_env(EnvConfig())
    vec, predictor = build_synthetic(model_name, device, new_tokens, steps, buffer_episodes, real_env)
    model = predictor.model
    tasks = real_env.tasks("train")
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    where = torch.cuda.get_device_name() if model.device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    print_fn(f"# synthetic env benchmark: {model_name} ({n_params:.0f}M params, {next(model.parameters()).dtype}), "
             f"{where}; {steps} steps per episode, {new_tokens} new tokens max per transition, greedy")
    predictor.settings = replace(predictor.settings, backend="engine", batch_size=1)
    drive(vec, tasks[:1], 1)  # warm-up (allocation, kernels)
    pool = EnvPool(real_env)
    print_fn(f"{'B':>4} {'hf tr/s':>9} {'engine tr/s':>11} {'speedup':>8} {'same states':>11} {'prompt tok':>10} "
             f"{'new tok':>8} {'native steps/s':>14}")
    rows = []
    for b in batches:
        out = {}
        for backend in ("hf", "engine"):
            predictor.settings = replace(predictor.settings, backend=backend, batch_size=b)
            p0, g0 = predictor.prompt_tokens, predictor.tokens_generated
            out[backend] = drive(vec, tasks[:b], steps)
            prompt_tok, new_tok = predictor.prompt_tokens - p0, predictor.tokens_generated - g0
        native, t_native, reps = 0, 0.0, 0
        while t_native < 0.5 or reps < 2:
            res = drive(pool, tasks[reps * b:(reps + 1) * b] or tasks[:b], steps, seed=reps)
            native, t_native, reps = native + res.transitions, t_native + res.seconds, reps + 1
        hf, eng = out["hf"], out["engine"]
        same = sum(x == y for x, y in zip(hf.observations, eng.observations)) / max(len(hf.observations), 1)
        row = dict(batch=b, hf=hf.per_s, engine=eng.per_s, same=same, native=native / t_native,
                   prompt_tokens=prompt_tok / max(eng.transitions, 1), new_tokens=new_tok / max(eng.transitions, 1))
        rows.append(row)
        print_fn(f"{b:>4} {row['hf']:>9.2f} {row['engine']:>11.2f} {row['engine'] / row['hf']:>7.2f}x {same:>11.3f} "
                 f"{row['prompt_tokens']:>10.0f} {row['new_tokens']:>8.1f} {row['native']:>14.0f}", flush=True)
    real_env.close()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny-random model, B in 1, 8 (< 1 min on 2 CPU cores)")
    ap.add_argument("--model", default=None, help="model.name (default smollm2-135m; tiny-random with --quick)")
    ap.add_argument("--batches", type=int, nargs="*", help="batch sizes (default 1 4; quick 1 8; cuda 1 16 64)")
    ap.add_argument("--steps", type=int, default=2, help="steps per episode")
    ap.add_argument("--new-tokens", type=int, default=None,
                    help="max new tokens per transition (default CPU 64, quick 32, cuda 192 = the config default)")
    ap.add_argument("--buffer-episodes", type=int, default=8, help="oracle episodes in the replay buffer")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    model = args.model or ("tiny-random" if args.quick else "smollm2-135m")
    batches = tuple(args.batches or ([1, 8] if args.quick else [1, 16, 64] if cuda else [1, 4]))
    new_tokens = args.new_tokens or (32 if args.quick else 192 if cuda else 64)
    rows = run(model, args.device, batches, args.steps, new_tokens, args.buffer_episodes)
    last = rows[-1]
    print(f"synthetic transitions/s: {_num(last['engine'])} (engine), {_num(last['hf'])} (hf); "
          f"native webshop steps/s: {last['native']:.0f}")
    return rows


# -- internals ---------------------------------------------------------------------------------

def _num(x: float) -> str:
    """N.N, with more decimals below 10 so CPU rates like 0.14 do not print as 0.1."""
    return f"{x:.1f}" if x >= 10 else f"{x:.2g}" if x < 0.1 else f"{x:.2f}"


def _choose(actions: list[str], instruction: str, rng: random.Random) -> str:
    """The scripted agent: search the instruction's first words where a search box is offered (or no
    action is listed), else a random listed action."""
    clicks = [a for a in actions if not a.startswith("search[")]
    if not clicks:
        return "search[" + " ".join(instruction.split()[:6]) + "]"
    return rng.choice(clicks)


if __name__ == "__main__":
    main()
