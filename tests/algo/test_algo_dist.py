"""DP all-reduce: 2 gloo processes on halves of a batch equal one process on the whole batch."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from algo_ref import random_batch

from areal_mega.algo.advantages import compute_advantages, normalize_advantages
from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.mismatch import logprob_mismatch

SPLIT = 4  # rank 0 gets rows [:4], rank 1 rows [4:]: uneven, and group 1 straddles the cut
GROUP_IDS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 3, 3])


def _figures(task, old, ref, logprobs, mask, group_ids, group):
    # the advantages take flat [num_tokens] tensors with per-sample lengths: rows of L tokens here
    lengths = torch.full((mask.shape[0],), mask.shape[1], dtype=torch.int64)
    flat = [x.reshape(-1) for x in (old, ref, mask)]
    out = {}
    for mode in ("batch", "group"):
        out[mode] = normalize_advantages(flat[0], flat[2], lengths, mode, group_ids=group_ids,
                                         group=group).view(mask.shape)
    cfg = AlgoConfig(kl_coef=0.1, adv_norm="batch")
    adv, out["stats"] = compute_advantages(cfg, task, flat[2], lengths, flat[0], flat[1], group_ids, dp_group=group)
    out["adv"] = adv.view(mask.shape)
    out["mismatch"] = logprob_mismatch(logprobs, old, mask, group=group)
    return out


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    task, old, ref, logprobs, mask, _ = random_batch(batch=10, seed=21)
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    out = _figures(task[rows], old[rows], ref[rows], logprobs[rows], mask[rows], GROUP_IDS[rows], dist.group.WORLD)
    torch.save(out, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.multirank
def test_two_gloo_ranks_equal_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    task, old, ref, logprobs, mask, _ = random_batch(batch=10, seed=21)
    whole = _figures(task, old, ref, logprobs, mask, GROUP_IDS, None)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key in ("batch", "group", "adv"):
        torch.testing.assert_close(torch.cat([p[key] for p in parts]), whole[key], rtol=1e-5, atol=1e-6)
    for p in parts:
        for key in ("stats", "mismatch"):
            assert p[key] == pytest.approx(whole[key], rel=1e-9)
