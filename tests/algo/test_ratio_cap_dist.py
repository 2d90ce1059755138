"""The minibatch ratio cap all-reduces over DP: two gloo ranks with different micro-batches decide alike."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.loss import MinibatchRatioCap, policy_loss


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    old = -torch.rand(2, 6, generator=torch.Generator().manual_seed(rank)) - 0.1
    mask = torch.ones(2, 6, dtype=torch.bool)
    lp = old + (2.0 if rank == 0 else 0.0)  # rank 0 far off-policy (ratio e^2), rank 1 on-policy
    stats = [policy_loss(lp[i:i + 1], old[i:i + 1], torch.ones(1, 6), mask[i:i + 1], AlgoConfig(), backend="torch")[1]
             for i in range(2)]
    gate = MinibatchRatioCap(5.0, dist.group.WORLD)
    torch.save({"triggered": gate(stats), "mean": gate.mean}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.multirank
def test_ranks_share_one_minibatch_decision(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    want = (math.exp(2.0) + 1.0) / 2  # 12 far tokens, 12 on-policy ones
    for o in out:
        assert o["triggered"] is False and math.isclose(o["mean"], want, rel_tol=1e-6)
