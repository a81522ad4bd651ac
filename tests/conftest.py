"""Test-session settings and the shared fixtures of tests/offline_fixtures.py. Tiny models gain nothing
from intra-op threads, and on a shared 2-core machine OpenMP threads that spin-wait made single forward
passes 10-40x slower (measured), so the tests run torch single-threaded."""

import torch

from tests.offline_fixtures import offline_data, tiny_world_model  # noqa: F401  (fixtures for every module)

torch.set_num_threads(1)
