"""Data movement of the engine: each rank receives about its own share, as flat tensors; results
reach rank 0 in the batch's order (engine/transport.py)."""
import pytest
import torch

from areal_mega.engine.packing import SeqBatch
from areal_mega.engine.transport import flatten, unflatten
from tests.distributed import torchrun

WORKER = "tests.engine.worker_transport"


def test_flatten_round_trip():
    batch = SeqBatch([[1, 2, 3, 4], [5, 6, 7], [8, 9]], [1, 2, 1],
                     {"advantages": [torch.tensor([1.0, 2, 3]), torch.tensor([4.0]), torch.tensor([5.0])],
                      "old_logprobs": [torch.tensor([-1.0, -2, -3]), torch.tensor([-4.0]), torch.tensor([-5.0])]})
    ints, floats = flatten(batch, ["advantages", "old_logprobs"])
    assert ints.dtype == torch.int64 and ints.tolist() == [4, 3, 2, 1, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert floats.shape == (2, 5)
    back = unflatten(ints, floats, 3, ["advantages", "old_logprobs"])
    assert back.input_ids == batch.input_ids and back.prompt_lens == batch.prompt_lens
    for name in batch.token_fields:
        for a, b in zip(back.token_fields[name], batch.token_fields[name]):
            assert torch.equal(a, b)


@pytest.mark.multirank
@pytest.mark.parametrize("tp", [1, 2])
def test_each_rank_receives_its_own_share(tiny_qwen2_dir, tmp_path, tp):
    """DP=2 (tp=1): rank 1 receives about half the batch per call, not the whole batch 1-2 times
    (as the pickled broadcast + all-gather of results did); TP=2: the whole batch once per call."""
    r0, r1 = torchrun(WORKER, 2, ["--model", str(tiny_qwen2_dir), "--tp", str(tp)], tmp_path / f"tp{tp}")
    share, batch = r1["share_bytes"], r1["batch_bytes"]
    if tp == 1:
        assert 0.4 * batch < share < 0.6 * batch
    else:
        assert share == batch
    for call, got in r1["received"].items():
        # its share, plus small metadata (sizes, field names, per-micro-batch stats)
        assert share <= got <= share + 4096, (call, got, share, batch)
    # rank 0 sends, and receives only the other replica's results (logprobs, entropy: 8 bytes a token)
    assert r0["received"]["forward"] <= 0.6 * batch + 4096
    torch.testing.assert_close(torch.tensor(r0["train_step_logprobs"]), torch.tensor(r0["forward_logprobs"]),
                               rtol=0, atol=1e-5)
