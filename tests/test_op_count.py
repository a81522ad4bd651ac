"""OpCounter (dreamgym/op_count.py): exact counts of kernel-launching ops, views and allocations left out."""

from __future__ import annotations

import torch

from dreamgym.op_count import OpCounter


def test_counts_compute_ops_by_name_and_skips_views_and_allocations():
    a = torch.ones(2, 3)
    with OpCounter() as ops:
        v = a.view(3, 2).t()                   # views: no kernel
        b = torch.empty(4)                     # allocation: no kernel
        c = (a + 1).sum()
        b.fill_(c.item())                      # reading a scalar: no kernel; fill_: one
    assert ops.by_name == {"add": 1, "sum": 1, "fill_": 1} and ops.total == 3
    assert v.shape == (2, 3) and b.tolist() == [12.0] * 4


def test_backward_ops_are_counted_too():
    x = torch.ones(3, requires_grad=True)
    with OpCounter() as ops:
        (x * 2).sum().backward()               # forward: mul, sum; backward: ones_like (seed), mul (grad of mul)
    assert ops.by_name == {"mul": 2, "sum": 1, "ones_like": 1}
    assert x.grad.tolist() == [2.0, 2.0, 2.0]
