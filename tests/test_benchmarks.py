"""The benchmarks of benchmarks/ cannot rot: the SFT and synthetic-env benchmarks run end to end on the
tiny-random model with the smallest workloads (seconds) and print their machine-readable last line; the
rollout benchmark's workload runs both backends with the policy's LoRA attached; the
GPU memory benchmark's pure helpers are checked on CPU (real configs' parameter counts, the NF4 size
estimate, the SFT batch layout, a tiny NF4 model built layer by layer through bitsandbytes' CPU path)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_sft_benchmark_same_work_both_paths_and_last_line(capsys):
    sft = _load("sft")
    speedup = sft.main(["--config", "configs/world_model/debug.yaml", "--examples", "2", "--batch-size", "2",
                        "--rounds", "1", "--episodes", "1", "--count-ops"])  # debug preset: tiny-random
    lines = capsys.readouterr().out.strip().splitlines()
    ops = next(ln for ln in lines if ln.startswith("compute ops per optimizer step"))
    plain_ops, ours_ops = map(int, re.search(r"plain (\d+), ours (\d+)", ops).groups())
    assert 0 < plain_ops and 0 < ours_ops
    assert re.fullmatch(r"sft useful tokens/s speedup vs plain loop: \d+\.\d\dx", lines[-1])
    assert speedup > 0
    plain, ours = [ln.split() for ln in lines if ln.startswith("  all")]
    assert plain[1:4] == ["plain", "1", plain[3]] and ours[1] == "ours"
    assert plain[2:4] == ours[2:4]                        # same optimizer steps, same useful tokens
    assert float(ours[4].rstrip("%")) <= float(plain[4].rstrip("%"))  # bucketing never pads more


def test_sft_plain_pass_pads_to_the_longest():
    sft = _load("sft")
    ids, mask, labels = sft._pad([[5, 6, 7], [8]], [[-100, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert labels.tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_synthetic_env_benchmark_runs_and_backends_agree(capsys):
    bench = _load("synthetic_env")
    rows = bench.main(["--model", "tiny-random", "--batches", "2", "--steps", "1", "--new-tokens", "8",
                       "--buffer-episodes", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"synthetic transitions/s: [\d.e-]+ \(engine\), [\d.e-]+ \(hf\); native webshop steps/s: \d+",
                        last)
    assert len(rows) == 1 and rows[0]["hf"] > 0 and rows[0]["engine"] > 0 and rows[0]["native"] > 0
    assert rows[0]["same"] == 1.0                        # greedy: the engine writes what HF generate writes


def test_memory_benchmark_param_counts_match_the_real_models():
    mem = _load("memory_qlora")
    total = {name: sum(mem.param_count(mem.make_config(name)).values()) for name in mem.SHAPES}
    assert total["llama3-8b"] == pytest.approx(8.03e9, rel=0.005)       # Meta-Llama-3-8B: 8,030,261,248
    assert total["llama3.2-3b"] == pytest.approx(3.21e9, rel=0.005)     # Llama-3.2-3B: 3,212,749,824
    assert total["qwen2.5-3b"] == pytest.approx(3.09e9, rel=0.005)      # Qwen2.5-3B: 3,085,938,688
    gib = mem.nf4_bytes(mem.make_config("llama3-8b")) / 2 ** 30
    assert 5.0 < gib < 6.5                                              # 3.3 GiB of NF4 + 2 GiB bf16 embeddings
    assert mem.fits(70 * 2 ** 30) and not mem.fits(75 * 2 ** 30)


def test_memory_benchmark_sft_batch_labels_only_the_target():
    mem = _load("memory_qlora")
    from dreamgym.experience.sft_data import PART_STATE

    b = mem.sft_batch(2, 10, 3, vocab=50)
    assert b["input_ids"].shape == (2, 10) and b["attention_mask"].all()
    assert (b["labels"][:, :7] == -100).all() and torch.equal(b["labels"][:, 7:], b["input_ids"][:, 7:])
    assert (b["parts"][:, 7:] == PART_STATE).all() and (b["parts"][:, :7] == 0).all()


def test_memory_benchmark_builds_a_tiny_nf4_model_on_cpu():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    mem = _load("memory_qlora")
    cfg = mem.make_config("llama3-8b", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=128, vocab_size=256)
    model = mem.build_nf4_model(cfg, "cpu", compute_dtype=torch.float32)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * len(mem.PROJECTIONS)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 256) and torch.isfinite(logits).all()


def test_memory_benchmark_help_and_clear_exit_without_cuda(capsys):
    mem = _load("memory_qlora")
    with pytest.raises(SystemExit) as help_exit:
        mem.main(["--help"])
    assert help_exit.value.code == 0 and "fits on 80 GB" in capsys.readouterr().out
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the no-GPU message does not apply")
    with pytest.raises(SystemExit, match="needs CUDA"):
        mem.main([])


def test_memory_benchmark_every_phase_runs_on_cpu_at_tiny_shapes(capsys):
    pytest.importorskip("bitsandbytes")
    mem = _load("memory_qlora")
    tiny = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=256)
    args = ["--sft-batch", "2", "--sft-seq", "16", "--sft-target", "4", "--gen-batch", "2", "--gen-prompt", "8",
            "--gen-new", "3", "--policy-batch", "2", "--policy-seq", "16", "--steps", "1"]
    import argparse
    ns = argparse.Namespace(**{k.lstrip("-").replace("-", "_"): int(v) for k, v in zip(args[::2], args[1::2])},
                            experience_shape="llama3-8b", policy_shape="llama3.2-3b", no_grad_ckpt=False)
    result = mem.run(ns, device="cpu", shape_overrides=tiny)
    out = capsys.readouterr().out
    assert out.count("done:") == 6 and out.strip().splitlines()[-1].startswith("fits on 80 GB: yes")
    assert result["peak_gib"] == 0.0


def test_qlora_sft_benchmark_runs_fit_world_model_on_a_shaped_model(tmp_path, capsys):
    """CPU smoke run of the 1.5B QLoRA benchmark's path: a tiny Qwen2 of the script's own builder, LoRA on a
    float32 base (NF4 is the GPU run's), real fit-world-model on oracle trajectories; the summary it prints
    comes from the run."""
    from dreamgym.types import write_trajectories
    from tests.test_experience_sft import oracle_trajectories

    data = tmp_path / "oracle.jsonl"
    write_trajectories(data, oracle_trajectories(2))
    bench = _load("qlora_sft")
    summary = bench.main(["--data", str(data), "--shape", "tiny", "--device", "cpu", "--no-quant", "--steps", "2",
                          "--batch-size", "2", "--max-seq-len", "2048", "--run-dir", str(tmp_path / "run"),
                          "--model-dir", str(tmp_path / "model")])
    assert summary["global_step"] == 2 and summary["tokens_per_s"] > 0 and summary["quantization"] == "none"
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "run" / "summary.json").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("qlora sft tiny: ")


def test_policy_update_memory_benchmark_runs_each_setting_apart_and_prints_the_ratio(capsys):
    bench = _load("policy_update_memory")
    ratio = bench.main(["--model", "tiny-random", "--rows", "2", "--tokens", "48", "--budgets", "0", "48"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"policy update peak memory whole/micro: \d+\.\d\dx", lines[-1]) and ratio > 0
    rows = [ln.split() for ln in lines[2:-1]]
    assert [r[0] for r in rows] == ["whole", "48"] and all(int(r[1]) > 0 for r in rows)


def test_rollout_benchmark_workload_with_the_policy_lora_engine_matches_hf():
    """The rollout benchmark's workload (scripted WebShop pages, a group of 4, 2 turns) on tiny-random with the
    policy's LoRA attached (unmerged, non-zero): both backends give the same greedy tokens; the adapter runs."""
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_model

    rollout = _load("rollout")
    model, tok = load_model(ModelConfig(name="tiny-random", device="cpu"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        bare = model(ids).logits
    model = rollout.attach_lora(model, 4)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, bare)            # non-zero B: the adapter changes outputs
    tasks, recordings = rollout.record_pages(1, 2)
    hf, _ = rollout.measure(model, tok, tasks, recordings, 4, 2, 6, 200, "hf", listed=5)
    fast, _ = rollout.measure(model, tok, tasks, recordings, 4, 2, 6, 200, "engine", listed=5)
    agree, dlogp = rollout.compare(hf, fast)
    assert agree == 1.0 and dlogp < 1e-4 and fast.tokens_generated == hf.tokens_generated > 0
