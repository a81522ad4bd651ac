"""QLoRA SFT of a ~1.5B experience model through the real `dreamgym fit-world-model` (issue 5's GPU item).

No hub access, so the weights are random: a Qwen2.5-1.5B-shaped decoder (hidden 1536, 28 layers, 12 heads,
2 KV heads, MLP 8960, tied embeddings) with the SmolLM2 tokenizer's vocabulary (49,152 rows; 1.38B
parameters) is written once as a bf16 safetensors folder (+ tokenizer), then `fit_world_model` trains it
exactly as the CLI does with the single-GPU paper preset (`configs/paper/webshop_world_model.yaml`:
4-bit NF4 base, double quantization, bf16 compute, LoRA r16 on every projection, gradient checkpointing,
bf16-mixed) on real SFT records (`dreamgym annotate` output or raw trajectories). Random weights do not
change the cost of a step: tokens/s and peak memory are the real ones for this shape and data.

    python benchmarks/qlora_sft.py --data logs/audit5/sft.jsonl                 # GPU: ~1-2 min
    python benchmarks/qlora_sft.py --data D.jsonl --shape tiny --device cpu \
        --no-quant                                                               # CPU smoke test (seconds)

Prints the fit summary's `tokens_per_s`, `peak_mem_gb`, losses and steps; the last line reads
`qlora sft 1.5b: N tok/s, peak M.MM GB (steps S, batch B)`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from memory_qlora import SHAPES, build_bf16_model, make_config  # noqa: E402 -- the shapes the benchmarks share

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=4096)
"""--shape tiny: qwen2.5-1.5b shrunk for the CPU smoke run"""
TINY_DEEP = dict(TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=28)
"""--shape tiny-deep: qwen2.5-1.5b's 28 layers (392 LoRA tensors at r16 on every projection) at toy width: the same
ops per training step as the real model at CPU cost (`benchmarks/sft.py --count-ops`)"""
SMALL_SHAPES = {"tiny": TINY, "tiny-deep": TINY_DEEP}


def write_shaped_model(shape: str, out: Path, device: str, seed: int = 0) -> int:
    """A random-init causal LM of `shape` (a memory_qlora SHAPES name, 'tiny' or 'tiny-deep') with the SmolLM2
    tokenizer's vocabulary, saved (bf16) with that tokenizer to `out`; returns its parameter count."""
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_tokenizer

    tok = load_tokenizer(ModelConfig())
    overrides = dict(SMALL_SHAPES.get(shape, {}))
    cfg = make_config("qwen2.5-1.5b" if shape in SMALL_SHAPES else shape, vocab_size=len(tok),
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **overrides)
    torch.manual_seed(seed)
    model = build_bf16_model(cfg, device)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="SFT records (annotate output) or trajectory files")
    ap.add_argument("--shape", default="qwen2.5-1.5b", choices=sorted(SHAPES) + sorted(SMALL_SHAPES))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps (sft.max_steps)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=4096)
    ap.add_argument("--no-quant", action="store_true", help="LoRA on a bf16/fp32 base (CPU: bitsandbytes' "
                    "NF4 runs there but slowly)")
    ap.add_argument("--run-dir", type=Path, default=None, help="fit run dir (default: a temp folder)")
    ap.add_argument("--model-dir", type=Path, default=None, help="write the random model here and keep it (reused "
                    "when it exists; e.g. for benchmarks/sft.py --model DIR)")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for fit-world-model")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("qlora_sft.py --device cuda needs CUDA (torch.cuda.is_available() is False); use --device cpu "
                 "--shape tiny --no-quant for the smoke run")

    from dreamgym.config import FitWorldModelConfig, load_config
    from dreamgym.pipelines.fit_world_model import fit_world_model

    with tempfile.TemporaryDirectory(prefix="dreamgym-qlora-") as tmp:
        folder = args.model_dir or Path(tmp) / f"{args.shape}-random"
        if not (folder / "config.json").is_file():
            t0 = time.perf_counter()
            n_params = write_shaped_model(args.shape, folder, args.device)
            print(f"# wrote {args.shape}-shaped random model ({n_params / 1e9:.2f}B params, bf16) in "
                  f"{time.perf_counter() - t0:.1f} s")
        cuda = args.device == "cuda"
        overrides = [
            f"model.name={folder}", f"model.device={args.device}",
            f"model.dtype={'bfloat16' if cuda else 'float32'}",
            f"model.quantization={'none' if args.no_quant else 'nf4'}",
            f"sft.max_steps={args.steps}", f"sft.batch_size={args.batch_size}", "sft.accumulate_grad_batches=1",
            f"sft.max_seq_len={args.max_seq_len}", "sft.max_epochs=100", "sft.warmup_steps=2",
            f"sft.val_check_interval={args.steps}", "sft.limit_val_batches=2", "sft.sample_every_n_val=0", "sft.progress=false",
            *(["sft.precision=32-true"] if not cuda else []), *args.set,
        ]
        cfg = load_config(FitWorldModelConfig, [REPO / "configs/paper/webshop_world_model.yaml"], overrides)
        run_dir = args.run_dir or Path(tmp) / "run"
        t0 = time.perf_counter()
        summary = fit_world_model(cfg, data=[args.data], run_dir=run_dir)
        wall = time.perf_counter() - t0
    keys = ("global_step", "train_loss_first", "train_loss", "val_loss_first", "val_loss", "tokens_per_s", "tokens_seen",
            "peak_mem_gb", "train_examples", "dropped_too_long", "precision", "quantization")
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"# device {device}; preset configs/paper/webshop_world_model.yaml; quantization "
          f"{'none' if args.no_quant else 'nf4'}; wall {wall:.1f} s (fit incl. load)")
    print(json.dumps({k: summary.get(k) for k in keys}))
    print(f"qlora sft {args.shape}: {summary.get('tokens_per_s', 0):.0f} tok/s, peak {summary.get('peak_mem_gb', 0):.2f} "
          f"GB (steps {summary.get('global_step')}, batch {args.batch_size})")
    return summary


if __name__ == "__main__":
    main()
