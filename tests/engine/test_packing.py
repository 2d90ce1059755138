"""Packing into token-budget rows and balanced DP partitioning."""
import pytest
import torch

from areal_mega.engine.packing import SeqBatch, pack, partition_balanced


def _batch(lengths, prompt=2):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 50, (n,), generator=g).tolist() for n in lengths]
    adv = [torch.randn(n - prompt, generator=g) for n in lengths]
    return SeqBatch(ids, [prompt] * len(lengths), {"advantages": adv})


def test_pack_respects_budget_and_keeps_every_response_token():
    batch = _batch([7, 30, 12, 5, 19, 26, 3])
    rows = pack(batch, max_tokens=32)
    assert all(mb.num_tokens <= 32 for mb in rows)
    assert sorted(i for mb in rows for i in mb.seq_index) == list(range(len(batch)))
    for mb in rows:
        ids = mb.input_ids[0]
        # each loss position predicts the next token of the same sequence, in order
        assert torch.equal(ids[mb.loss_positions + 1], mb.targets)
        expected = torch.cat([torch.tensor(batch.input_ids[i][2:]) for i in mb.seq_index])
        assert torch.equal(mb.targets, expected)
        assert torch.equal(mb.token_fields["advantages"], torch.cat([batch.token_fields["advantages"][i] for i in mb.seq_index]))
        assert mb.response_lens.tolist() == [batch.response_len(i) for i in mb.seq_index]
        starts = torch.cumsum(mb.seq_lens, 0) - mb.seq_lens
        assert all(mb.position_ids[0, s].item() == 0 for s in starts.tolist())
    assert len(rows) < len(batch)  # several sequences share a row


def test_sequence_over_budget_is_an_error_not_a_truncation():
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch=16"):
        pack(_batch([10, 20]), max_tokens=16)


def test_partition_balances_tokens_over_dp_ranks():
    lengths = [100, 90, 80, 10, 10, 10, 5, 5]
    parts = partition_balanced(lengths, 2)
    assert sorted(i for p in parts for i in p) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(lengths)  # greedy LPT's bound
    assert partition_balanced([1, 2, 3], 4)[3] == []  # fewer sequences than ranks: an idle rank
