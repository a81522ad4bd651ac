"""memory.release_memory frees garbage cycles that hold tensors (a model and its engine form one) and reports
the process's memory."""

import gc
import weakref

import torch

from dreamgym.memory import peak_rss_mb, release_memory, rss_mb


class _Holder:
    def __init__(self):
        self.weights = torch.zeros(1024, 1024)
        self.me = self  # a reference cycle: only a full collection frees it


def test_release_memory_frees_a_cycle_that_holds_a_tensor():
    gc.collect()
    gc.disable()
    try:
        ref = weakref.ref(_Holder())
        assert ref() is not None  # unreachable, not yet collected
        assert release_memory() >= 1
        assert ref() is None
    finally:
        gc.enable()


def test_rss_is_positive_and_under_the_peak():
    now, peak = rss_mb(), peak_rss_mb()
    assert 0 < now <= peak * 1.01
