"""Peak memory and time of one PPO/GRPO minibatch update (`PolicyRL.accumulate_gradients`: forward, losses,
backward) with the whole minibatch in one pass (`algo.micro_batch_tokens=0`, the baseline) vs token-bounded
micro-batches, side by side on the same batch. Each setting runs in its own child process, so its peak
resident memory (`ru_maxrss`; CUDA: max allocated) is its own.

The batch: `--rows` episodes of `--tokens` tokens (one row half as long: real padding), a sampled token at
every 4th position (episodes interleave observations and actions), GRPO advantages of +-1, a KL term.

    python benchmarks/policy_update_memory.py                      # SmolLM2-135M + LoRA, 4 x 1024 tokens
    python benchmarks/policy_update_memory.py --rows 4 --tokens 2048 --budgets 0 2048   # the CPU study's case
    python benchmarks/policy_update_memory.py --model tiny-random --rows 2 --tokens 64 --budgets 0 64

The last line reads `policy update peak memory whole/micro: N.NNx`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(model_name: str, rows: int, tokens: int, budget: int, threads: int) -> dict:
    """One setting, in this process: load, build the batch, one accumulate_gradients; peak MB and seconds."""
    import torch

    from dreamgym.config import TrainPolicyConfig, load_config
    from dreamgym.models.loading import load_model
    from dreamgym.rl.batch import RolloutBatch
    from dreamgym.rl.module import PolicyRL

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(TrainPolicyConfig, [], [f"model.name={model_name}", f"algo.micro_batch_tokens={budget}",
                                              "algo.kl_coef=0.05", f"algo.minibatch_size={rows}"])
    model, tok = load_model(cfg.model, for_training=True)
    module = PolicyRL(cfg, model, tok)
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (rows, tokens))
    attn = torch.ones(rows, tokens, dtype=torch.long)
    attn[0, tokens // 2:] = 0
    resp = torch.zeros(rows, tokens)
    resp[:, 3::4] = 1
    resp = resp * attn
    batch = RolloutBatch(ids, attn, resp, torch.zeros(rows, tokens), torch.zeros(rows, tokens),
                         torch.zeros(rows), torch.zeros(rows, dtype=torch.long), 0,
                         torch.full((rows, tokens, 0), -1, dtype=torch.long))
    batch = module.to(device)._to_device(batch)
    old_logp, _ = module._score(batch, reference=False)
    ref_logp = module._reference_logp(batch)
    adv = torch.where(resp.bool().to(device), torch.tensor([1.0, -1.0] * rows, device=device)[:rows, None], 0.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    module.accumulate_gradients(batch, torch.arange(rows, device=device), old_logp, None, ref_logp, adv, None,
                                lambda loss: loss.backward())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"budget": budget, "peak_mb": round(peak), "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--budgets", type=int, nargs="+", default=[0, 1024], help="micro_batch_tokens; 0 = baseline")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.model, a.rows, a.tokens, a.budgets[0], a.threads)))
        return 0.0
    results = []
    for budget in a.budgets:
        out = subprocess.run([sys.executable, __file__, "--child", "--model", a.model, "--rows", str(a.rows),
                              "--tokens", str(a.tokens), "--budgets", str(budget), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{a.model}, {a.rows} episodes x {a.tokens} tokens, one minibatch update")
    print(f"  {'micro_batch_tokens':>18} {'peak MB':>8} {'seconds':>8}")
    for r in results:
        print(f"  {r['budget'] or 'whole':>18} {r['peak_mb']:>8} {r['seconds']:>8}")
    ratio = results[0]["peak_mb"] / min(r["peak_mb"] for r in results[1:]) if len(results) > 1 else 1.0
    print(f"policy update peak memory whole/micro: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
