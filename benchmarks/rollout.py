"""Rollout generation: the KV engine (`models/engine.py`) against the straightforward loop, side by side
in one run, on the real workload: multi-turn GRPO rollouts (groups of 8 samples per task) over
WebShop-length observations.

Workload: WebShop test tasks played by the scripted oracle give, per task, the pages an agent sees over
`--turns` turns; a scripted VectorEnv replays them (turn t shows page t whatever the policy did), so both
backends see the same contexts. Each episode runs through `rl.rollout.run_rollouts` with greedy decoding:
- baseline (`backend=hf`): HF `generate` once per turn on the episode's whole token history (the
  default dynamic cache, nothing reused between turns or between a group's samples);
- engine (`backend=engine`): in-place KV cache, a group's identical first prompt prefilled once, later
  turns prefill only the new observation, continuous batching.
Both get the same ids (the rollout's `ChatContext`), so greedy tokens must agree; the table reports the
token agreement and the largest log-prob difference. tok/s = generated tokens / wall clock of the
rollout (prefill included).

    python benchmarks/rollout.py --device cpu --quick      # < 1 min on 2 CPU cores, embedded SmolLM2-135M
    python benchmarks/rollout.py --device cpu              # B in 1, 16, 64
    python benchmarks/rollout.py --device cuda             # 1.5B-shaped random-init model, B in 1, 16, 64, 256
    python benchmarks/rollout.py --device cpu --quick --lora-rank 16 --count-ops   # the policy's LoRA attached

`--lora-rank R` wraps the model in the policy's adapter (peft LoRA on every projection, alpha 2R, random
non-zero init as after training): the RL workload, whose rollouts run the adapter unmerged (both backends).
`--count-ops` adds the engine's compute ops per decode step (prefill included; `dreamgym.op_count`, a
device-independent proxy for GPU kernel launches) from one more, untimed engine rollout per batch.

The last line reads `rollout speedup vs hf generate: N.NNx (batch B)` for the largest batch measured.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time

import torch

from dreamgym.config import EnvConfig, ModelConfig
from dreamgym.envs.base import make_env
from dreamgym.models.engine import engine_for, unbind_engine
from dreamgym.episodes import run_episode
from dreamgym.models.loading import load_model, load_tokenizer
from dreamgym.policies import make_policy
from dreamgym.rl.context import ChatContext, ContextSettings
from dreamgym.rl.rollout import RolloutSettings, run_rollouts
from dreamgym.types import StepResult

GROUP = 8
PADDED = False  # --padded-decode: the engine runs its CUDA-graph path's static-shape step eagerly (CPU)
COMPILE = False  # --compile-decode: the static-shape step goes through torch.compile (then the CUDA graph)
# Qwen2.5-1.5B's shape with the SmolLM2 tokenizer's vocabulary (no hub access: random init)
GPU_SHAPE = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1e6,
                 tie_word_embeddings=True)


class ScriptedPages:
    """A VectorEnv replaying recorded pages: turn t of episode i shows page t of its task's recording."""

    def __init__(self, recordings: dict[str, list[tuple[str, list[str]]]]):
        self.recordings = recordings
        self.name = "scripted-webshop"

    def reset(self, tasks):
        self.tasks, self.turn = tasks, [0] * len(tasks)
        self._done = [False] * len(tasks)
        return [StepResult(self.recordings[t.id][0][0], 0.0, False, {}) for t in tasks]

    @property
    def running(self) -> list[int]:
        return [i for i, d in enumerate(self._done) if not d]

    def available_actions(self) -> list[list[str]]:
        return [self.recordings[self.tasks[i].id][self.turn[i]][1] for i in self.running]

    def step(self, actions):
        out = []
        for i in self.running:
            pages = self.recordings[self.tasks[i].id]
            self.turn[i] = min(self.turn[i] + 1, len(pages) - 1)
            out.append(StepResult(pages[self.turn[i]][0], 0.0, False, {}))
        return out

    def end(self, index: int) -> None:
        self._done[index] = True


def record_pages(n_tasks: int, turns: int) -> tuple[list, dict]:
    """Oracle-played WebShop test tasks with at least `turns` + 1 pages: (tasks, {task id: pages})."""
    env = make_env(EnvConfig())
    oracle = make_policy("oracle", env)
    tasks, recordings = [], {}
    for task in env.tasks("test"):
        traj = run_episode(env, oracle, task, max_turns=15)
        pages = [(s.observation, s.available_actions) for s in traj.steps] + [(traj.final_observation, [])]
        if len(pages) > turns:
            tasks.append(task)
            recordings[task.id] = pages[: turns + 1]
        if len(tasks) == n_tasks:
            break
    return tasks, recordings


def build_model(device: str, dtype: str):
    if device == "cpu":
        return load_model(ModelConfig(device="cpu", dtype=dtype))
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = load_tokenizer(ModelConfig())
    torch_dtype = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **GPU_SHAPE)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch_dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def attach_lora(model, rank: int, seed: int = 0):
    """The policy's adapter (config.models.LoraSettings' projections, alpha 2r) with random non-zero B, so the
    adapter changes the outputs as a trained one does; peft's unmerged LoRA layers run in every forward."""
    from peft import LoraConfig, get_peft_model

    from dreamgym.config.models import LoraSettings

    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LoraSettings().target_modules,
                     init_lora_weights=False)
    return get_peft_model(model, cfg).eval()


def measure(model, tok, tasks, recordings, batch: int, turns: int, new_tokens: int, obs_chars: int, backend: str,
            listed: int = 30):
    groups = max(1, batch // GROUP)
    group = min(GROUP, batch)
    episode_tasks = [t for t in tasks[:groups] for _ in range(group)]
    ctx = ChatContext(tok, ContextSettings(observation_chars=obs_chars, max_listed_actions=listed))
    settings = RolloutSettings(max_turns=turns, max_new_tokens=new_tokens, do_sample=False, batch_size=batch,
                               max_context_tokens=32768, backend=backend)
    if backend == "engine":
        eng = engine_for(model, tok)
        eng.padded_decode, eng.compile_decode = PADDED, COMPILE
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = run_rollouts(model, tok, ctx, ScriptedPages(recordings), episode_tasks, settings)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return result, seconds


def free(model) -> None:
    """Drop the engine's cache and graphs (the next backend measured gets the memory)."""
    unbind_engine(model)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def kernel_counts(prof, result, eng, before_steps: int) -> str:
    """One line: GPU kernels (and their time) the profiled rollout ran in all, per decode step, and graph replays."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy_ms = sum(e.device_time for e in kernels) / 1e3
    launches = sum(1 for e in prof.events() if e.name in ("cudaGraphLaunch", "cuGraphLaunch"))
    steps = eng.stats["decode_steps"] - before_steps
    per_step = f", {len(kernels) / steps:.0f} per decode step ({steps} steps)" if steps else ""
    return (f"GPU kernels: {len(kernels)}, busy {busy_ms:.1f} ms{per_step}; graph replays {launches}; "
            f"tokens {result.tokens_generated}")


def compare(a, b) -> tuple[float, float]:
    """(share of sampled tokens equal, max |log-prob difference| over equal prefixes)."""
    same = total = 0
    worst = 0.0
    for ea, eb in zip(a.episodes, b.episodes):
        ia = [t for t, m in zip(ea.trace.ids, ea.trace.mask) if m]
        ib = [t for t, m in zip(eb.trace.ids, eb.trace.mask) if m]
        la = [p for p, m in zip(ea.trace.logprobs, ea.trace.mask) if m]
        lb = [p for p, m in zip(eb.trace.logprobs, eb.trace.mask) if m]
        total += max(len(ia), len(ib))
        for x, y, px, py in zip(ia, ib, la, lb):
            if x != y:
                break
            same += 1
            worst = max(worst, abs(px - py))
    return same / max(total, 1), worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="one small batch (CPU: under a minute)")
    ap.add_argument("--batches", type=int, nargs="*", help="batch sizes (default: 1 16 64 [256 on cuda])")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--obs-chars", type=int, default=1200, help="observation text per turn (the policy default)")
    ap.add_argument("--dtype", default="auto", help="model dtype (auto: CPU by capability, bf16 on cuda)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = torch default)")
    ap.add_argument("--profile", action="store_true", help="print the engine's time per phase (synchronizes)")
    ap.add_argument("--padded-decode", action="store_true", help="CPU: run the CUDA-graph path's static-shape "
                    "decode step (greedy ids picked and fed inside the step) eagerly")
    ap.add_argument("--compile-decode", action="store_true", help="compile the static-shape decode step with "
                    "torch.compile (fused kernels) before the CUDA graph captures it; the warm-up runs compile")
    ap.add_argument("--torch-profile", action="store_true", help="torch.profiler table of one engine rollout")
    ap.add_argument("--lora-rank", type=int, default=0, help="attach the policy's LoRA adapter of this rank "
                    "(0 = the bare model, as the recorded tables)")
    ap.add_argument("--count-ops", action="store_true", help="compute ops per engine decode step (one more "
                    "untimed engine rollout per batch)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        batches, turns, new_tokens, obs_chars = [8], 3, 8, 200
    else:
        batches = args.batches or ([1, 16, 64, 256] if args.device == "cuda" else [1, 16, 64])
        turns, new_tokens, obs_chars = args.turns, args.new_tokens, args.obs_chars
    model, tok = build_model(args.device, args.dtype)
    if args.lora_rank:
        model = attach_lora(model, args.lora_rank)
    global PADDED, COMPILE
    PADDED, COMPILE = args.padded_decode, args.compile_decode
    tasks, recordings = record_pages(max(1, max(batches) // GROUP), turns)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"# rollout benchmark: {type(model).__name__} {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"{next(model.parameters()).dtype}, {dev}; {turns} turns, {new_tokens} new tokens/turn max, "
          f"groups of {GROUP}, observations {obs_chars} chars"
          + (f"; LoRA r={args.lora_rank} on every projection (unmerged)" if args.lora_rank else ""))
    listed = 5 if args.quick else 30
    measure(model, tok, tasks, recordings, min(batches), 1, 4, obs_chars, "engine", listed)  # warm-up (allocation, kernels)
    print(f"{'B':>4} {'hf tok/s':>9} {'engine tok/s':>12} {'speedup':>8} {'same tokens':>11} {'max |dlogp|':>11} "
          f"{'ctx tokens':>10}")
    last = None
    for b in batches:
        try:
            free(model)
            base, t_base = measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "hf", listed)
        except torch.OutOfMemoryError:
            print(f"{b:>4} hf generate ran out of GPU memory at this batch", flush=True)
            continue
        free(model)
        measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "engine", listed)  # warm: allocate, capture
        fast, t_fast = measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "engine", listed)
        eng = engine_for(model, tok)
        if args.profile:  # a separate run: the profile synchronizes around every phase
            eng.profile, eng.timing = True, dict.fromkeys(eng.timing, 0.0)
            _, t_prof = measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "engine", listed)
            eng.profile = False
        if args.torch_profile:
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            before_steps = eng.stats["decode_steps"]
            with profile(activities=acts) as prof:
                prof_result, _ = measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "engine", listed)
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
            print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
            print("     " + kernel_counts(prof, prof_result, eng, before_steps))
        if args.count_ops:
            from dreamgym.op_count import OpCounter

            before_steps = eng.stats["decode_steps"]
            with OpCounter() as ops:
                measure(model, tok, tasks, recordings, b, turns, new_tokens, obs_chars, "engine", listed)
            steps = max(1, eng.stats["decode_steps"] - before_steps)
            top = ", ".join(f"{k} {v / steps:.0f}" for k, v in ops.by_name.most_common(6))
            print(f"     engine compute ops per decode step (prefill included): {ops.total / steps:.0f} ({top})")
        if args.profile:
            print("     engine time (profiled run): " + ", ".join(f"{k} {v:.3f}" for k, v in eng.timing.items())
                  + f", total {t_prof:.3f} s; unprofiled {t_fast:.3f} s", flush=True)
        agree, dlogp = compare(base, fast)
        ctx = max(len(e.trace.ids) for e in fast.episodes)
        speed = t_base / t_fast
        print(f"{b:>4} {base.tokens_generated / t_base:>9.1f} {fast.tokens_generated / t_fast:>12.1f} {speed:>7.2f}x "
              f"{agree:>11.3f} {dlogp:>11.2e} {ctx:>10}", flush=True)
        last = (speed, b)
    print(f"rollout speedup vs hf generate: {last[0]:.2f}x (batch {last[1]})")


if __name__ == "__main__":
    main()
