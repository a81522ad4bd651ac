"""Count the compute ops a piece of code dispatches: a device-independent proxy for GPU kernel launches.

On a GPU whose step is bound by launches rather than by arithmetic (small batches, many small tensors, a
sandboxed driver where every launch is expensive), the number of kernels per step sets the time. Counting
them needs no GPU: every ATen op that reaches the dispatcher below autograd and is not a view (views
launch no kernel) is one kernel or one fused multi-tensor launch on CUDA. Allocation and bookkeeping ops
(`empty`, `detach`, reading a scalar) are not counted. Used by `benchmarks/sft.py --count-ops` and the
tests that keep per-step overheads from growing with the number of parameters.

    with OpCounter() as ops:
        loss.backward()
    ops.total, ops.by_name.most_common(5)
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "NOT_KERNELS"]

NOT_KERNELS = frozenset({"detach", "alias", "_unsafe_view", "empty", "empty_strided", "new_empty", "new_empty_strided",
                         "_local_scalar_dense", "lift_fresh", "is_same_size", "set_",
                         "_has_compatible_shallow_copy_type"})
"""ATen ops that allocate or read memory without launching a compute kernel"""


class OpCounter(TorchDispatchMode):
    """Counts non-view, non-allocation ATen ops by name while active (`total`, `by_name`)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if not func.is_view and name not in NOT_KERNELS:
            self.by_name[name] += 1
        return func(*args, **(kwargs or {}))
