"""Experience-model SFT throughput: our path against a plain peft + HF loop, side by side in one run.

Data: real SFT examples as `fit-world-model` builds them from raw trajectories (the no-annotation
fallback): WebShop train tasks played by the scripted oracle and random policies (what `dreamgym
collect` writes), turned into records by `trajectory_records` and tokenized by `SFTDataModule` with the
default prompt config (history 3 turns, state 1500 chars; examples ~650-1500 tokens). A seeded sample
of `--examples` of them is trained on by both paths, one epoch per round, so both do the same number of
optimizer steps on the same examples (the same useful tokens).
- baseline ("plain"): the loop a user would write: random-order batches right-padded to the longest,
  `model(input_ids, attention_mask, labels)` (HF loss over full (B, T, vocab) logits), backward,
  clip 1.0, AdamW; same LoRA config (`model.lora`), its own copy of the same base model.
- ours: `ExperienceModel` + `SFTDataModule` under a Lightning Trainer as `fit-world-model` runs them
  (length-bucketed batches; logits only at the labelled positions; part-weighted loss; clip 1.0).
Useful tokens = non-padding tokens (attention mask). tok/s is over train-step compute (forward,
backward, optimizer step: the module's `perf/tokens_per_s` definition, the same clock for the plain
loop); `wall tok/s` adds everything around the steps (Lightning's fit setup, collation). Rounds
alternate plain and ours so load from other processes hits both alike.

    python benchmarks/sft.py --quick                 # < 1 min on 2 CPU cores: tiny-random model
    python benchmarks/sft.py                          # embedded SmolLM2-135M, 4 examples (~4 min, 1 thread)
    python benchmarks/sft.py --device cuda --examples 256 --batch-size 8
    python benchmarks/sft.py --quick --count-ops     # + compute ops per step (~ GPU kernel launches), both paths

The last line reads `sft useful tokens/s speedup vs plain loop: N.NNx`.
"""

from __future__ import annotations

import argparse
import logging
import platform
import random
import time
import warnings
from dataclasses import dataclass

import torch

from dreamgym.config import EnvConfig, FitWorldModelConfig, load_config
from dreamgym.experience.sft_data import SFTDataModule, SFTExample, trajectory_records

warnings.filterwarnings("ignore", message=".*(LeafSpec|is_gradient_checkpointing).*")  # third-party chatter

__all__ = ["PassResult", "collect_records", "build_data", "plain_pass", "ours_pass", "run", "print_op_counts", "main"]


@dataclass
class PassResult:
    """One epoch over the examples: useful (non-padding) and padded tokens, optimizer steps, seconds."""

    useful: int = 0
    padded: int = 0
    steps: int = 0
    step_s: float = 0.0
    wall_s: float = 0.0

    def add(self, other: "PassResult") -> None:
        for k in ("useful", "padded", "steps", "step_s", "wall_s"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def tokens_per_s(self) -> float:
        return self.useful / max(self.step_s, 1e-9)

    @property
    def padding_share(self) -> float:
        return 1.0 - self.useful / max(self.padded, 1)


def collect_records(episodes: int, max_turns: int = 15) -> list[dict]:
    """SFT records of `episodes` oracle + `episodes` random WebShop train episodes (real env, real pages)."""
    from dreamgym.envs.base import make_env
    from dreamgym.episodes import run_episode
    from dreamgym.policies import make_policy

    env = make_env(EnvConfig())
    tasks = env.tasks("train")
    records = []
    for name in ("oracle", "random"):
        policy = make_policy(name, env, seed=0)
        for ep in range(episodes):
            records += trajectory_records(run_episode(env, policy, tasks[ep % len(tasks)], max_turns, episode=ep))
    env.close()
    return records


def build_data(cfg: FitWorldModelConfig, tokenizer, records: list[dict], n_examples: int, seed: int = 0) -> SFTDataModule:
    """The pipeline's datamodule over a seeded sample of `n_examples` records (no validation split)."""
    sample = random.Random(seed).sample(records, min(n_examples, len(records)))
    dm = SFTDataModule(sample, tokenizer, cfg.prompt, cfg.sft, seed=cfg.seed)
    dm.setup("fit")
    return dm


def plain_pass(model, optimizer, examples: list[SFTExample], batch_size: int, pad_id: int, seed: int,
               autocast_dtype: torch.dtype | None = None) -> PassResult:
    """The baseline: one epoch of random-order batches padded to the longest, HF loss, AdamW."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    device = next(model.parameters()).device
    res, t_wall = PassResult(), time.perf_counter()
    model.train()
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start:start + batch_size]]
        ids, mask, labels = _pad([e.input_ids for e in batch], [e.labels for e in batch], pad_id)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        res.step_s += time.perf_counter() - t0
        res.useful += int(mask.sum())
        res.padded += mask.numel()
        res.steps += 1
    res.wall_s = time.perf_counter() - t_wall
    return res


def ours_pass(module, datamodule: SFTDataModule, device: torch.device) -> PassResult:
    """Our path: one epoch of `fit-world-model`'s Lightning fit (no logger/checkpoint/progress bar)."""
    import lightning as L

    from dreamgym.pipelines.fit_world_model import resolve_precision

    sft = module.cfg.sft
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision=resolve_precision(sft.precision, device), max_epochs=1, max_steps=-1,
                        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=sft.gradient_clip_val or None,
                        gradient_clip_algorithm="norm", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    c = module.counters
    before = (c["tokens_seen"], c["pad_tokens"], c["train_time_s"])
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    wall = time.perf_counter() - t0
    useful = c["tokens_seen"] - before[0]
    return PassResult(useful=useful, padded=useful + c["pad_tokens"] - before[1], steps=trainer.global_step,
                      step_s=c["train_time_s"] - before[2], wall_s=wall)


def run(model_name: str = "tiny-random", device: str = "cpu", examples: int = 24, batch_size: int = 4,
        rounds: int = 2, episodes: int = 8, cfg: FitWorldModelConfig | None = None,
        print_fn=print, count_ops: bool = False) -> tuple[PassResult, PassResult]:
    """Build both paths, alternate `rounds` epochs of each; returns (plain totals, ours totals). `cfg`
    (default: `FitWorldModelConfig()`, i.e. the default prompt and LoRA) gets the model/batch set here.
    `count_ops`: then one more epoch of each under `OpCounter`, printing compute ops per optimizer step."""
    from dreamgym.experience.module import ExperienceModel
    from dreamgym.models.loading import load_model

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-fit banners between table rows
    cfg = cfg or FitWorldModelConfig()
    cfg.model.name, cfg.model.device = model_name, device
    cfg.sft.batch_size, cfg.sft.val_fraction, cfg.sft.progress = batch_size, 0.0, False
    cfg.sft.sample_every_n_val, cfg.sft.validate_before_fit = 0, False
    torch.manual_seed(cfg.seed)
    ours_model, tokenizer = load_model(cfg.model, for_training=True)
    torch.manual_seed(cfg.seed)
    plain_model, _ = load_model(cfg.model, for_training=True)  # same base, same LoRA config and init
    dev = next(plain_model.parameters()).device
    module = ExperienceModel(cfg, model=ours_model, tokenizer=tokenizer)
    dm = build_data(cfg, tokenizer, collect_records(episodes), examples, seed=cfg.seed)
    opt = torch.optim.AdamW([p for p in plain_model.parameters() if p.requires_grad], lr=cfg.sft.lr,
                            weight_decay=cfg.sft.weight_decay)  # the same optimizer settings as ours
    weights_dtype = next(plain_model.parameters()).dtype
    from dreamgym.pipelines.fit_world_model import resolve_precision

    # the baseline autocasts as Lightning's precision for ours does (a QLoRA base keeps its non-quantized
    # weights in float32, so the weights' dtype does not tell: the first H100 run left the baseline without it)
    precision = resolve_precision(cfg.sft.precision, dev)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    lengths = [len(e.input_ids) for e in dm.train]
    n_params = sum(p.numel() for p in plain_model.parameters()) / 1e6
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    print_fn(f"# sft benchmark: {model_name} ({n_params:.0f}M params, {weights_dtype}, LoRA r={cfg.model.lora.r}), "
             f"{where}; precision {precision} (both paths); {len(dm.train)} examples "
             f"({min(lengths)}-{max(lengths)} tokens, mean "
             f"{sum(lengths) / len(lengths):.0f}), batch {batch_size}, {rounds} round(s) of one epoch each")
    print_fn(f"{'round':>5} {'path':>6} {'steps':>5} {'useful tok':>10} {'padding':>8} {'step s':>8} "
             f"{'tok/s':>8} {'wall tok/s':>10}")
    totals = (PassResult(), PassResult())
    for r in range(rounds):
        for name, total, do in (("plain", totals[0], lambda: plain_pass(plain_model, opt, dm.train, batch_size,
                                                                           int(tokenizer.pad_token_id), r, autocast)),
                                ("ours", totals[1], lambda: ours_pass(module, dm, dev))):
            res = do()
            total.add(res)
            print_fn(f"{r:>5} {name:>6} {res.steps:>5} {res.useful:>10} {res.padding_share:>8.1%} {res.step_s:>8.2f} "
                     f"{res.tokens_per_s:>8.1f} {res.useful / max(res.wall_s, 1e-9):>10.1f}", flush=True)
    for name, t in zip(("plain", "ours"), totals):
        print_fn(f"{'all':>5} {name:>6} {t.steps:>5} {t.useful:>10} {t.padding_share:>8.1%} {t.step_s:>8.2f} "
                 f"{t.tokens_per_s:>8.1f} {t.useful / max(t.wall_s, 1e-9):>10.1f}")
    if count_ops:
        print_op_counts(lambda: plain_pass(plain_model, opt, dm.train, batch_size, int(tokenizer.pad_token_id),
                                           rounds, autocast),
                        lambda: ours_pass(module, dm, dev), print_fn)
    return totals


def print_op_counts(plain, ours, print_fn=print, top: int = 8) -> tuple[float, float]:
    """One epoch of each path under `OpCounter`: compute ops (~ GPU kernel launches) per optimizer step, and
    the ops whose per-step counts differ most. Ours includes the optimizer-state init of its first step
    (Lightning builds the optimizer at each fit; the plain loop keeps its own). Returns (plain, ours)."""
    from dreamgym.op_count import OpCounter

    per_step = []
    for run_pass in (plain, ours):
        with OpCounter() as ops:
            res = run_pass()
        per_step.append(({k: v / max(res.steps, 1) for k, v in ops.by_name.items()}, ops.total / max(res.steps, 1)))
    (p_ops, p_total), (o_ops, o_total) = per_step
    print_fn(f"compute ops per optimizer step (~ GPU kernel launches): plain {p_total:.0f}, ours {o_total:.0f} "
             f"({o_total / max(p_total, 1e-9):.3f}x)")
    names = sorted(set(p_ops) | set(o_ops), key=lambda k: -abs(o_ops.get(k, 0) - p_ops.get(k, 0)))[:top]
    print_fn("  most different: " + ", ".join(f"{k} {p_ops.get(k, 0):.0f} vs {o_ops.get(k, 0):.0f}" for k in names))
    return p_total, o_total


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny-random model, 6 examples (< 1 min on 2 CPU cores)")
    ap.add_argument("--model", default=None, help="model.name (default: the config's, smollm2-135m; tiny-random "
                    "with --quick)")
    ap.add_argument("--examples", type=int, default=None, help="examples trained on per round (default 4; quick 6)")
    ap.add_argument("--batch-size", type=int, default=None, help="examples per batch (default 2; quick 3)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating epochs per path (default 1; quick 2)")
    ap.add_argument("--episodes", type=int, default=None, help="oracle + random WebShop episodes giving the records "
                    "(default 8; quick 4)")
    ap.add_argument("--config", "-c", action="append", default=[],
                    help="fit-world-model preset(s) for the prompt and LoRA (e.g. configs/world_model/debug.yaml)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--count-ops", action="store_true", help="then one more epoch of each path counting compute "
                    "ops per optimizer step (a proxy for GPU kernel launches; slower, untimed)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    cfg = load_config(FitWorldModelConfig, args.config, [])
    model = args.model or ("tiny-random" if quick else cfg.model.name)
    examples = args.examples or (6 if quick else 4)
    batch = args.batch_size or (3 if quick else 2)
    rounds = args.rounds or (2 if quick else 1)
    plain, ours = run(model, args.device, examples, batch, rounds, args.episodes or (4 if quick else 8), cfg,
                      count_ops=args.count_ops)
    speedup = ours.tokens_per_s / max(plain.tokens_per_s, 1e-9)
    print(f"sft useful tokens/s speedup vs plain loop: {speedup:.2f}x")
    return speedup


# -- internals ---------------------------------------------------------------------------------

def _pad(ids: list[list[int]], labels: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad to the longest: (input_ids, attention_mask, labels with -100 on padding), each (B, T)."""
    width = max(map(len, ids))
    out_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    out_labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, (i, lab) in enumerate(zip(ids, labels)):
        out_ids[row, :len(i)], mask[row, :len(i)], out_labels[row, :len(i)] = torch.tensor(i), 1, torch.tensor(lab)
    return out_ids, mask, out_labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
