"""The engine's slot-addressed KV cache (models/kv_slots.py): growth, placement of a call's requests into
rows [0, n), eviction, swaps and shared-prompt copies, with exact expected slots and values."""

import pytest
import torch

from dreamgym.models.kv_slots import KVSlots, common_prefix


def _filled(slots: int = 4, length: int = 8) -> KVSlots:
    """A cache of `slots` rows whose K/V at (row s, position p) hold 100 * s + p, lengths and ids set."""
    c = KVSlots(n_layers=2, n_kv_heads=1, head_dim=3)
    assert c.reserve(slots, length, torch.float32, torch.device("cpu"))
    for s in range(slots):
        c.K[:, s, :, :length] = (100 * s + torch.arange(length, dtype=torch.float32))[None, None, :, None]
        c.V[:, s, :, :length] = -c.K[:, s, :, :length]
        c.tokens[s] = [10 * s + p for p in range(length)]
        c.lengths[s] = length
    return c


def test_common_prefix():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([], [1]) == 0
    assert common_prefix([5] * 1000 + [1], [5] * 1000 + [2]) == 1000


def test_reserve_rounds_capacity_grows_in_place_and_keeps_contents():
    c = _filled(slots=2, length=8)
    assert (c.slots, c.capacity) == (2, 256)  # capacity in steps of 256 positions
    assert not c.reserve(2, 200, torch.float32, torch.device("cpu"))  # fits: no new tensors
    assert c.reserve(3, 300, torch.float32, torch.device("cpu"))
    assert (c.slots, c.capacity) == (3, 512)
    assert c.K[0, 1, 0, :8, 0].tolist() == [100.0 + p for p in range(8)]
    assert c.lengths.tolist() == [8, 8, 0] and c.tokens[2] == [] and c.owner == [None, None, None]


def test_reserve_refuses_a_cache_over_max_bytes():
    c = KVSlots(n_layers=2, n_kv_heads=1, head_dim=4, max_bytes=1000)
    with pytest.raises(MemoryError, match="max_cache_bytes"):
        c.reserve(1, 10, torch.float32, torch.device("cpu"))  # 2 x 2 x 1 x 256 x 4 x 4 bytes = 16 KiB


def test_swap_exchanges_kv_lengths_ids_and_owners():
    c = _filled()
    c.owner[:] = ["a", None, "c", None]
    c.lengths[3] = 5
    c.swap(0, 3)
    assert c.K[1, 0, 0, :5, 2].tolist() == [300.0, 301.0, 302.0, 303.0, 304.0]
    assert c.V[0, 3, 0, :8, 0].tolist() == [-float(p) for p in range(8)]
    assert c.lengths.tolist() == [5, 8, 8, 8]
    assert c.tokens[0][:2] == [30, 31] and c.tokens[3][:2] == [0, 1]
    assert c.owner == [None, None, "c", "a"]


def test_place_brings_keyed_and_one_off_requests_into_the_first_rows():
    c = _filled()
    c.owner[:] = [None, None, "x", "y"]
    # request 0 continues key "y" (slot 3); request 1 is a one-off whose prompt extends slot 1's ids
    where = c.place(["y", None], [c.tokens[3] + [7], c.tokens[1][:5] + [9]])
    assert where == [0, 1]  # row 0 <- request 0 (slot 3 swapped into row 0), row 1 <- request 1 (slot 1)
    assert c.tokens[0][:2] == [30, 31] and c.K[0, 0, 0, 0, 0].item() == 300.0  # key y's K/V moved along
    assert c.tokens[1][:2] == [10, 11]  # the longest shared prefix (5 ids) of the free slots
    assert c.tokens[3][:2] == [0, 1] and c.K[0, 3, 0, 1, 0].item() == 1.0  # the free row moved out
    assert c.owner == [None, None, "x", None]  # the other key keeps its slot


def test_place_evicts_a_keyed_slot_not_in_the_call_when_full():
    c = _filled(slots=2)
    c.owner[:] = ["x", "y"]
    where = c.place([None, "y"], [[1, 2], [3]])
    assert where == [0, 1] and c.owner == [None, None]  # x's slot went to the one-off request


def test_release_and_forget():
    c = _filled(slots=3)
    c.owner[:] = ["a", "b", "c"]
    c.release(["b"])
    assert c.owner == ["a", None, "c"]
    c.release()
    assert c.owner == [None, None, None]
    c.forget()
    assert c.tokens == [[], [], []] and c.lengths.tolist() == [0, 0, 0]


def test_copy_row_shares_a_prefilled_prompt():
    c = _filled(slots=3)
    c.copy_row(src=2, dst=0, ids=[1, 2, 3])
    assert c.K[1, 0, 0, :3, 1].tolist() == [200.0, 201.0, 202.0] and c.K[1, 0, 0, 3, 1].item() == 3.0
    assert c.lengths[0].item() == 3 and c.tokens[0] == [1, 2, 3]
