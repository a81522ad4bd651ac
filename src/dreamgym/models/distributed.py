"""Multi-device training strategies for the Lightning trainers (`sft.strategy`, `sft.devices`).

* `auto`: Lightning's choice (one device, no wrapping): the default and the CPU path.
* `ddp`: data parallel, one process per device, gradients all-reduced (the model fits each device); on CPU
  the processes talk over gloo (tests/test_distributed.py runs two).
* `fsdp`: Lightning's `FSDPStrategy`: every decoder layer of the model (found by class, any Llama-family or
  other HF architecture whose layer class ends in `DecoderLayer`) is its own FSDP unit, parameters are
  sharded across the processes (FULL_SHARD; world size 1 runs unsharded, FSDP's NO_SHARD), `use_orig_params`
  keeps LoRA's trainable and the frozen base weights in one flat parameter, and checkpoints are gathered
  into one full state dict on rank 0 (`state_dict_type="full"`), so a run trained with FSDP resumes and
  exports adapters exactly like a single-device one. GPUs only (torch's FSDP has no CPU device support).

What changes for the code around the trainer: parameter names under FSDP carry wrapper prefixes
(`clean_param_name`), each process trains on its share of the batches (`shard_batches`), gradient norms
of sharded parameters are summed over processes (`global_grad_norm`), and an adapter is exported from the
gathered state dict (`full_state_dict`) rather than from the (sharded) live modules.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from dreamgym.config.loading import ConfigError

__all__ = ["STRATEGIES", "build_strategy", "decoder_layer_classes", "clean_param_name", "shard_batches",
           "uses_fsdp", "is_sharded", "global_grad_norm", "clip_grad_norm_", "full_state_dict"]

STRATEGIES = ("auto", "ddp", "fsdp")
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def build_strategy(name: str, model: Any, devices: int, key: str = "sft.strategy", need_gpu: bool = True) -> Any:
    """The Lightning `strategy=` argument for `name` (one of STRATEGIES) and a model about to be trained.
    need_gpu=False builds an FSDP strategy object without CUDA (the meta-device dry run of paper presets)."""
    if name not in STRATEGIES:
        raise ConfigError(f"key '{key}': got {name!r}, expected one of {', '.join(STRATEGIES)}")
    if name == "auto":
        if devices > 1:
            raise ConfigError(f"key '{key}': 'auto' trains on one device, but devices={devices}; "
                              "set it to 'ddp' or 'fsdp' for several")
        return "auto"
    if getattr(getattr(model, "config", None), "quantization_config", None) is not None and name == "fsdp":
        raise ConfigError(f"key '{key}': 'fsdp' with a 4-bit (nf4) base is not supported (bitsandbytes' packed "
                          "weights cannot be flattened into FSDP units); use 'ddp' or model.quantization=none")
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # LoRA leaves most parameters frozen: unused *trainable* ones would be a bug, so keep the check off
        return DDPStrategy(find_unused_parameters=False)
    from lightning.pytorch.strategies import FSDPStrategy

    layers = decoder_layer_classes(model)
    if not layers:
        raise ConfigError(f"key '{key}': 'fsdp' found no decoder-layer class (a module class named "
                          f"'*DecoderLayer') in {type(model).__name__}; use 'ddp'")
    if need_gpu and not torch.cuda.is_available():
        raise ConfigError(f"key '{key}': 'fsdp' needs CUDA GPUs (torch's FSDP has no CPU device support); use "
                          "'ddp' for several CPU processes")
    return FSDPStrategy(auto_wrap_policy=layers, use_orig_params=True, state_dict_type="full",
                        sharding_strategy="FULL_SHARD", limit_all_gathers=True)


def decoder_layer_classes(model: Any) -> set[type]:
    """The transformer-block classes of an HF model (LlamaDecoderLayer, Qwen2DecoderLayer, ...)."""
    return {type(m) for m in model.modules() if type(m).__name__.endswith("DecoderLayer")}


def clean_param_name(name: str) -> str:
    """A parameter name without FSDP/activation-checkpointing/compile wrapper segments (the checkpoint key)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def shard_batches(batches: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """This process's share of an epoch's batches: every world_size-th from `rank`, after dropping the tail
    that does not divide evenly (all processes must run the same number of steps, or collectives hang)."""
    if world_size <= 1:
        return list(batches)
    usable = len(batches) // world_size * world_size
    return list(batches[rank:usable:world_size])


def uses_fsdp(trainer: Any) -> bool:
    """True when the trainer runs Lightning's FSDPStrategy (any world size)."""
    if trainer is None:
        return False
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def is_sharded(trainer: Any) -> bool:
    """True when the trainer's parameters are split across processes (FSDP with world size > 1)."""
    return uses_fsdp(trainer) and trainer.world_size > 1


def global_grad_norm(params: Iterable[torch.nn.Parameter], trainer: Any = None) -> torch.Tensor | None:
    """L2 norm (float32) of all gradients; under FSDP each process holds a shard, so the squares are summed
    over them (under DDP the gradients are already identical everywhere). The per-tensor norms come from one
    `torch._foreach_norm` per device, a handful of kernels whatever the number of tensors (a LoRA on every
    projection of a 28-layer model has 392; a norm per tensor launched ~800 kernels per optimizer step)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None and p.grad.numel():
            by_device.setdefault(p.grad.device, []).append(p.grad)
    if not by_device and not is_sharded(trainer):
        return None
    with torch.no_grad():
        squares = [torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).square().sum()
                   for grads in by_device.values()]
    device = next(iter(by_device)) if by_device else trainer.strategy.root_device
    total = torch.stack([s.to(device) for s in squares]).sum() if squares else torch.zeros((), device=device)
    if is_sharded(trainer):
        total = trainer.strategy.reduce(total, reduce_op="sum")
    return total.sqrt()


def clip_grad_norm_(params: Iterable[torch.nn.Parameter], max_norm: float | None, trainer: Any = None
                    ) -> torch.Tensor | None:
    """Scale gradients in place so that their global L2 norm (`global_grad_norm`: summed over FSDP shards)
    is at most `max_norm` (None or 0: no clipping), with torch's formula (coefficient max_norm / (norm + 1e-6),
    capped at 1, applied by multi-tensor kernels); returns the norm before clipping, or None without gradients.
    Lightning's FSDPPrecision refuses norm clipping, so fit-world-model clips (and logs the norm) here."""
    params = [p for p in params if p.grad is not None]
    norm = global_grad_norm(params, trainer)
    if norm is not None and max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def full_state_dict(trainer: Any, module: Any, keep: set[str]) -> dict[str, torch.Tensor] | None:
    """The LightningModule's state dict restricted to `keep` (clean names), gathered whole: a collective
    call on every process under FSDP (rank 0 gets the dict, the others None), else the module's own."""
    if uses_fsdp(trainer):
        state = trainer.strategy.lightning_module_state_dict()
        if trainer.global_rank != 0:
            return None
    else:
        state = module.state_dict()
    clean = ((clean_param_name(k), v) for k, v in state.items())
    return {k: v for k, v in clean if k in keep}
