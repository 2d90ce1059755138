"""The weight-update process group, built the way SGLang joins it.

SGLang (v0.5.23, `ModelRunner.init_weights_update_group` ->
`init_custom_process_group`) joins with rank `rank_offset + tp_rank` through
a `tcp://master_address:master_port` rendezvous: the TCPStore's server lives
on rank 0 (the trainer), every key is put under `PrefixStore(group_name)`,
and the group is made with torch's `_new_process_group_helper`, outside the
default process group. A trainer that used `init_process_group` instead would
write other store keys and both sides would hang; one that reused its own
default group would collide with Megatron's. So both ends here (the trainer's
senders in weight_sync, and the receivers in rollout: the reference server and
our vLLM weight-transfer engine) call `join_group` below with the same layering.
It lives in platform, below both, so that weight_sync (which drives the servers
through rollout's client) and rollout never import each other in a circle.

The store is built with `TCPStore` directly, not torch's `tcp://` rendezvous:
under torchrun (TORCHELASTIC_USE_AGENT_STORE=True) that rendezvous makes
rank 0 a store *client* of the agent's store, so a trainer launched by
torchrun would host nothing and every server would wait for it.
"""
from __future__ import annotations

import datetime

import torch.distributed as dist
from torch.distributed.distributed_c10d import PrefixStore, _new_process_group_helper, _world

DEFAULT_TIMEOUT_S = 300.0


class RendezvousError(RuntimeError):
    """Joining a weight-update group failed; the message names the group, address, port and rank."""


def join_group(
    master_address: str,
    master_port: int,
    rank: int,
    world_size: int,
    group_name: str,
    backend: str = "gloo",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dist.ProcessGroup:
    """Join (rank 0: host) the group `group_name` of `world_size` ranks; blocks until all joined.

    Rank 0 owns the TCPStore on `master_address:master_port`. The returned
    group has ranks 0..world_size-1 and is independent of any default
    torch.distributed group in this process.
    """
    if not group_name:
        raise ValueError("group_name must not be empty")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    timeout = datetime.timedelta(seconds=timeout_s)
    where = (f"weight-update group {group_name!r}: rendezvous at tcp://{master_address}:{master_port} "
             f"(rank {rank} of {world_size}, {backend}, time-out {timeout_s:g} s)")
    try:
        store = dist.TCPStore(
            master_address, int(master_port), world_size, is_master=(rank == 0), timeout=timeout,
            wait_for_workers=False,
        )
        store = PrefixStore(group_name, store)
        pg, _ = _new_process_group_helper(
            world_size, rank, [], dist.Backend(backend), store, group_name=group_name, timeout=timeout
        )
    except Exception as e:  # the store's and gloo's messages do not say which rendezvous failed
        raise RendezvousError(f"{where} failed: {type(e).__name__}: {e}") from e
    _world.pg_group_ranks[pg] = {i: i for i in range(world_size)}
    return pg


def leave_group(pg: dist.ProcessGroup) -> None:
    """Destroy a group made by `join_group` (frees its name for a later join)."""
    dist.destroy_process_group(pg)
