"""Test-session settings. Tiny models gain nothing from intra-op threads, and on a shared 2-core
machine OpenMP threads that spin-wait made single forward passes 10-40x slower (measured), so the
tests run torch single-threaded."""

import torch

torch.set_num_threads(1)
