"""Multi-device training (`sft.strategy`, `sft.devices`; models/distributed.py): pure helpers with exact
values; `fit-world-model` run for real as two DDP processes on the CPU (gloo): each trains on its own shard
of the batches (token counts exact), one run dir, one loadable adapter; and, where CUDA GPUs exist, FSDP
against DDP on the same batches (the FSDP adapter gathered whole to rank 0 must match)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dreamgym.config import FitWorldModelConfig, load_config
from dreamgym.config.loading import ConfigError
from dreamgym.experience.sft_data import BucketBatchSampler
from dreamgym.models.distributed import (build_strategy, clean_param_name, clip_grad_norm_, decoder_layer_classes,
                                         shard_batches)
from dreamgym.types import write_trajectories
from tests.test_experience_sft import oracle_trajectories

DEBUG = "configs/world_model/debug.yaml"


def test_shard_batches_takes_every_nth_and_drops_the_uneven_tail():
    batches = [[0], [1], [2], [3], [4], [5], [6]]
    assert shard_batches(batches, 0, 2) == [[0], [2], [4]]
    assert shard_batches(batches, 1, 2) == [[1], [3], [5]]
    assert shard_batches(batches, 2, 3) == [[2], [5]]
    assert shard_batches(batches, 0, 1) == batches


def test_bucket_sampler_shards_are_disjoint_equal_and_cover_the_even_part():
    lengths = [5, 9, 3, 7, 1, 8, 2, 6, 4, 10, 11]                     # 11 examples, batch 2 -> 6 batches
    full = list(BucketBatchSampler(lengths, 2, 2, seed=3))
    ranks = [list(BucketBatchSampler(lengths, 2, 2, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(BucketBatchSampler(lengths, 2, 2, seed=3, world_size=2)) == 3
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_clean_param_name_strips_wrapper_segments():
    name = "model.base_model.model.model.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.mlp.up_proj.weight"
    assert clean_param_name(name) == "model.base_model.model.model.layers.0.mlp.up_proj.weight"
    assert clean_param_name("_orig_mod.lm_head.weight") == "lm_head.weight"


def test_clip_grad_norm_matches_torch_and_reports_the_norm_before_clipping():
    """The FSDP path's clipping (Lightning's FSDPPrecision refuses norm clipping) uses torch's formula."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # norm 5
    norm = clip_grad_norm_([a, b], 1.0)
    assert norm.item() == 5.0
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 0.0]) / (5.0 + 1e-6))
    torch.testing.assert_close(b.grad, torch.tensor([4.0]) / (5.0 + 1e-6))
    ref = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    ref[0].grad, ref[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert torch.equal(ref[0].grad, a.grad) and torch.equal(ref[1].grad, b.grad)
    c = torch.nn.Parameter(torch.zeros(1))
    c.grad = torch.tensor([0.5])  # under the limit: unchanged
    assert clip_grad_norm_([c, torch.nn.Parameter(torch.zeros(1))], 1.0).item() == 0.5 and c.grad.item() == 0.5


def test_global_grad_norm_is_float32_and_a_fixed_number_of_kernels_whatever_the_tensor_count():
    """One foreach norm per device: the ops dispatched do not grow with the number of gradients (a norm per
    tensor made ~800 extra kernels per optimizer step for a LoRA on every projection of 28 layers)."""
    from dreamgym.models.distributed import global_grad_norm
    from dreamgym.op_count import OpCounter

    def params(k: int, dtype=torch.float32) -> list[torch.nn.Parameter]:
        out = []
        for i in range(k):
            p = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
            p.grad = torch.full((3,), float(i % 4), dtype=dtype)
            out.append(p)
        return out

    counts = []
    for k in (4, 400):
        ps = params(k)
        with OpCounter() as ops:
            norm = global_grad_norm(ps)
        counts.append(ops.total)
        expected = torch.cat([p.grad for p in ps]).double().norm()
        assert norm.dtype == torch.float32 and abs(norm.item() - expected.item()) < 1e-5 * expected.item()
    assert counts[0] == counts[1] <= 8
    bf16 = params(8, torch.bfloat16)
    assert global_grad_norm(bf16).dtype == torch.float32                     # squares summed in float32
    assert global_grad_norm([torch.nn.Parameter(torch.zeros(2))]) is None     # no gradient at all


def test_clip_grad_norm_without_a_limit_reports_the_norm_and_leaves_gradients():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([30.0, 40.0])
    assert clip_grad_norm_([a], None).item() == 50.0 and torch.equal(a.grad, torch.tensor([30.0, 40.0]))
    assert clip_grad_norm_([a], 0.0).item() == 50.0 and torch.equal(a.grad, torch.tensor([30.0, 40.0]))


def test_strategy_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="sft.strategy"):
        load_config(FitWorldModelConfig, [], ["sft.strategy=deepspeed"])
    with pytest.raises(ConfigError, match="sft.devices"):
        load_config(FitWorldModelConfig, [], ["sft.devices=0"])
    with pytest.raises(ConfigError, match="'auto' trains on one device"):
        build_strategy("auto", torch.nn.Linear(2, 2), devices=2)


def test_fsdp_wraps_each_decoder_layer_class():
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_model

    model, _ = load_model(ModelConfig(name="tiny-random"))
    assert {c.__name__ for c in decoder_layer_classes(model)} == {"LlamaDecoderLayer"}
    strategy = build_strategy("fsdp", model, devices=2, need_gpu=False)
    assert type(strategy).__name__ == "FSDPStrategy" and strategy.kwargs["use_orig_params"] is True
    with pytest.raises(ConfigError, match="no decoder-layer class"):
        build_strategy("fsdp", torch.nn.Linear(2, 2), devices=2, need_gpu=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'fsdp' needs CUDA GPUs"):
            build_strategy("fsdp", model, devices=2)


def _fit(tmp_path, data, name: str, *overrides: str) -> tuple[dict, dict]:
    """fit-world-model in a fresh interpreter (Lightning launches the extra processes from its argv)."""
    run_dir = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DREAMGYM_RUN_DIR", None)
    cmd = [sys.executable, "-m", "dreamgym.cli", "fit-world-model", "-c", DEBUG, "--data", str(data),
           "--run-dir", str(run_dir), "sft.max_steps=2", "sft.val_check_interval=2", "sft.sample_every_n_val=0",
           *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    from safetensors.torch import load_file

    adapter = load_file(str(run_dir / "checkpoints" / "adapter" / "adapter_model.safetensors"))
    return summary, adapter


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "oracle.jsonl"
    write_trajectories(path, oracle_trajectories(8))
    return path


def _shard_target_tokens(data, world_size: int, steps: int) -> int:
    """Labelled tokens of the first `steps` batches of every rank's shard (what the run should count)."""
    from dreamgym.experience.sft_data import SFTDataModule, bucket_batches, load_records
    from dreamgym.models.loading import load_tokenizer

    cfg = load_config(FitWorldModelConfig, [DEBUG], [])
    dm = SFTDataModule(load_records([data]), load_tokenizer(cfg.model), cfg.prompt, cfg.sft, seed=cfg.seed)
    dm.setup("fit")
    lengths = [len(e.input_ids) for e in dm.train]
    batches = bucket_batches(lengths, cfg.sft.batch_size, cfg.sft.bucket_megabatch, cfg.seed, 0)
    mine = [b for r in range(world_size) for b in shard_batches(batches, r, world_size)[:steps]]
    return sum(sum(1 for x in dm.train[i].labels if x != -100) for b in mine for i in b)


def test_two_cpu_processes_train_on_disjoint_shards_with_ddp(tmp_path, data):
    ddp, ddp_adapter = _fit(tmp_path, data, "ddp", "sft.strategy=ddp", "sft.devices=2")
    single, single_adapter = _fit(tmp_path, data, "single")
    assert ddp["devices"] == 2 and single["devices"] == 1 and ddp["global_step"] == single["global_step"] == 2
    # each process trained on its own half of the batches, and the tokens were summed over both
    assert ddp["tokens_trained"] == _shard_target_tokens(data, 2, 2) != single["tokens_trained"]
    assert single["tokens_trained"] == _shard_target_tokens(data, 1, 2)
    # one run dir (rank 1 wrote nothing of its own), one adapter, trained (LoRA B starts at zero) and loadable
    assert not (tmp_path / "ddp" / "rank1").exists() and ddp_adapter.keys() == single_adapter.keys()
    assert max(v.abs().max().item() for k, v in ddp_adapter.items() if "lora_B" in k) > 0
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_adapter

    model, _ = load_adapter(ModelConfig(name="tiny-random"), tmp_path / "ddp")
    assert sum("lora_" in k for k in model.state_dict()) == len(ddp_adapter)


@pytest.mark.gpu
def test_fsdp_on_the_gpus_exports_the_whole_adapter_and_matches_ddp(tmp_path, data):
    if not torch.cuda.is_available():
        pytest.skip("FSDP needs CUDA GPUs (torch's FSDP has no CPU device support)")
    n = str(torch.cuda.device_count())
    fsdp, fsdp_adapter = _fit(tmp_path, data, "fsdp", "sft.strategy=fsdp", f"sft.devices={n}", "sft.precision=32-true")
    ddp, ddp_adapter = _fit(tmp_path, data, "ddp", "sft.strategy=ddp", f"sft.devices={n}", "sft.precision=32-true")
    assert fsdp["devices"] == ddp["devices"] == int(n) and fsdp["tokens_trained"] == ddp["tokens_trained"]
    assert fsdp_adapter.keys() == ddp_adapter.keys() and all(v.numel() for v in fsdp_adapter.values())
    diffs = {k: (fsdp_adapter[k].float() - ddp_adapter[k].float()).abs().max().item() for k in fsdp_adapter}
    assert max(diffs.values()) < 1e-4, diffs
