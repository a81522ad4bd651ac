"""Embedded SmolLM2-135M-Instruct through `models/loading.py`: the one-off GGUF -> safetensors
conversion, a load from the converted cache, and greedy generation speed at batch 1 and 8.

    python benchmarks/model_loading.py                    # converts into a temp cache (~1 min), then measures
    python benchmarks/model_loading.py --cache-dir DIR    # reuse a cache (conversion is skipped when present)
    python benchmarks/model_loading.py --dtype bfloat16   # compare dtypes (auto = float32 on AVX2-only CPUs)
    python benchmarks/model_loading.py --threads 1        # busy machine: oversubscribed threads crawl

Generation: greedy, exactly --new-tokens tokens per sequence (min = max, so EOS never shortens a row),
chat-template prompts of different lengths, left-padded. tok/s = batch x new tokens / wall clock of
`generate` (prefill included), best of --repeats. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from dreamgym.config import ModelConfig
from dreamgym.models.loading import _cpu_flags, chat_prompt_ids, embedded_model_path, load_model, pick_dtype

PROMPTS = [
    "What is the capital of France?",
    "i need a gluten free snack pack of 12, lower than 40.00 dollars",
    "Write one sentence about the sea.",
    "Name three colors.",
    "Explain what a shopping cart is on a web store in two sentences.",
    "How many legs does a spider have?",
    "Suggest a name for a cat.",
    "What should I search for to buy red running shoes in size 9?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None, help="dreamgym cache root (default: a fresh temp folder)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice); on a "
                    "busy shared machine 1 thread can be several times faster than oversubscribed cores")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    flags = sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}, "
          f"flags {flags}, auto dtype {pick_dtype('cpu')}")

    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-") as tmp:
        cache = args.cache_dir or tmp
        t0 = time.perf_counter()
        embedded_model_path(cache)
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, tok = load_model(ModelConfig(cache_dir=cache, device="cpu", dtype=args.dtype))
        load_s = time.perf_counter() - t0
        print(f"conversion (or cache hit): {convert_s:.1f} s; load from cache: {load_s:.1f} s; dtype {model.dtype}")

        rates = {}
        for batch in args.batches:
            texts = [chat_prompt_ids(tok, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
                     for i in range(batch)]
            enc = tok.pad({"input_ids": texts}, return_tensors="pt")
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                         do_sample=False)
                best = min(best, time.perf_counter() - t0)
            assert out.shape[1] - enc["input_ids"].shape[1] == args.new_tokens
            rates[batch] = batch * args.new_tokens / best
            print(f"batch {batch}: {rates[batch]:.1f} tok/s ({best:.2f} s for {args.new_tokens} new tokens per row)")
        print("convert_s {:.1f}, load_s {:.1f}, ".format(convert_s, load_s)
              + ", ".join(f"tok_per_s_b{b} {r:.1f}" for b, r in rates.items()))


if __name__ == "__main__":
    main()
