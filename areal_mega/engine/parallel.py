"""The one owner of the parallel topology: megatron-core parallel_state.

Other modules never call parallel_state; they receive a `Topology` and the
process groups in it.
"""
from __future__ import annotations

import dataclasses

import torch.distributed as dist

from areal_mega.engine.config import ParallelConfig


@dataclasses.dataclass(frozen=True)
class Topology:
    """This rank's place in TP x PP x DP and the groups it talks over."""

    tp_rank: int
    tp_size: int
    pp_rank: int
    pp_size: int
    dp_rank: int
    dp_size: int
    tp_group: object
    pp_group: object
    dp_group: object  # NCCL/gloo group of this rank's DP replicas
    dp_gloo_group: object  # gloo group for Python objects

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def is_sync_rank(self) -> bool:
        """The rank of its stage that talks to generation servers (dp=0, tp=0)."""
        return self.dp_rank == 0 and self.tp_rank == 0


def init_topology(cfg: ParallelConfig, seed: int) -> Topology:
    """Initialise megatron-core model parallel state over the default group."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    world = dist.get_world_size()
    cfg.dp(world)  # raises with the keys named if the layout does not fit
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(
            tensor_model_parallel_size=cfg.tp,
            pipeline_model_parallel_size=cfg.pp,
        )
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return Topology(
        tp_rank=ps.get_tensor_model_parallel_rank(),
        tp_size=ps.get_tensor_model_parallel_world_size(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        pp_size=ps.get_pipeline_model_parallel_world_size(),
        dp_rank=ps.get_data_parallel_rank(),
        dp_size=ps.get_data_parallel_world_size(),
        tp_group=ps.get_tensor_model_parallel_group(),
        pp_group=ps.get_pipeline_model_parallel_group(),
        dp_group=ps.get_data_parallel_group(),
        dp_gloo_group=ps.get_data_parallel_group_gloo(),
    )


def destroy_topology() -> None:
    from megatron.core import parallel_state as ps

    ps.destroy_model_parallel()
