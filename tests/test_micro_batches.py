"""rl.batch.micro_batches / micro_batch_weights: how a minibatch is cut for gradient accumulation (exact values)."""

import pytest
import torch

from dreamgym.rl.batch import micro_batch_weights, micro_batches


def _lists(parts):
    return [p.tolist() for p in parts]


def test_longest_first_packing_under_the_token_budget():
    rows, lengths = torch.tensor([10, 11, 12, 13]), torch.tensor([5, 9, 3, 9])
    assert _lists(micro_batches(rows, lengths, 18)) == [[11, 13], [10, 12]]  # 9 x 2 = 18; then 5 x 2 = 10
    assert _lists(micro_batches(rows, lengths, 27)) == [[11, 13, 10], [12]]
    assert _lists(micro_batches(rows, lengths, 0)) == [[10, 11, 12, 13]]   # 0 = one pass
    assert _lists(micro_batches(rows, lengths, 4)) == [[11], [13], [10], [12]]  # a row longer than the budget: alone
    assert micro_batches(torch.tensor([], dtype=torch.long), torch.tensor([]), 8) == []


def test_weights_are_token_or_sequence_shares_of_the_minibatch():
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    parts = [torch.tensor([0, 2]), torch.tensor([1, 3])]  # 3 tokens / 1 sequence with tokens; 5 tokens / 2 sequences
    assert micro_batch_weights(mask, parts, "token-mean") == [(3 / 8, 3 / 8), (5 / 8, 5 / 8)]
    for agg in ("seq-mean-token-mean", "seq-mean-token-sum"):
        assert micro_batch_weights(mask, parts, agg) == [(1 / 3, 3 / 8), (2 / 3, 5 / 8)]
    assert micro_batch_weights(torch.zeros(2, 3), [torch.tensor([0]), torch.tensor([1])], "token-mean") == \
        [(0.0, 0.0), (0.0, 0.0)]


def test_negative_budget_is_refused():
    from dreamgym.config import TrainPolicyConfig, load_config
    from dreamgym.config.loading import ConfigError

    with pytest.raises(ConfigError, match="algo.micro_batch_tokens"):
        load_config(TrainPolicyConfig, [], ["algo.micro_batch_tokens=-1"])
