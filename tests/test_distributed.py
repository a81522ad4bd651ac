"""Multi-device training (`sft.strategy`, `sft.devices`; models/distributed.py): pure helpers with exact
values, and `fit-world-model` run for real as two gloo processes on the CPU with FSDP (sharded LoRA
training) and with DDP: both see the same batches, so after the same steps their adapters must agree,
and the FSDP adapter is exported whole (gathered to rank 0) and loads back into peft."""

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
from dreamgym.models.distributed import build_strategy, clean_param_name, decoder_layer_classes, shard_batches
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
    strategy = build_strategy("fsdp", model, devices=2)
    assert type(strategy).__name__ == "FSDPStrategy"
    with pytest.raises(ConfigError, match="no decoder-layer class"):
        build_strategy("fsdp", torch.nn.Linear(2, 2), devices=2)


def _fit(tmp_path, data, name: str, *overrides: str) -> tuple[dict, dict]:
    """fit-world-model in a fresh interpreter (Lightning launches the extra gloo processes from its argv)."""
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


@pytest.mark.slow
def test_two_process_fsdp_trains_like_ddp_and_exports_the_whole_adapter(tmp_path, data):
    fsdp, fsdp_adapter = _fit(tmp_path, data, "fsdp", "sft.strategy=fsdp", "sft.devices=2")
    ddp, ddp_adapter = _fit(tmp_path, data, "ddp", "sft.strategy=ddp", "sft.devices=2")
    single, single_adapter = _fit(tmp_path, data, "single")
    assert fsdp["devices"] == ddp["devices"] == 2 and single["devices"] == 1
    assert fsdp["global_step"] == ddp["global_step"] == 2
    # the two processes trained on disjoint halves: tokens are summed over them, as for DDP
    assert fsdp["tokens_trained"] == ddp["tokens_trained"] > 0
    assert fsdp_adapter.keys() == ddp_adapter.keys() == single_adapter.keys()
    assert all(v.numel() > 0 for v in fsdp_adapter.values())   # gathered whole, not a rank's shard
    diffs = {k: (fsdp_adapter[k] - ddp_adapter[k]).abs().max().item() for k in fsdp_adapter}
    assert max(diffs.values()) < 1e-5, diffs
    # and training moved the adapter: LoRA B starts at zero
    assert max(v.abs().max().item() for k, v in fsdp_adapter.items() if "lora_B" in k) > 0
    # the FSDP run's adapter loads into peft and its checkpoint resumes under FSDP
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_adapter

    model, _ = load_adapter(ModelConfig(name="tiny-random"), tmp_path / "fsdp")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(fsdp_adapter)
