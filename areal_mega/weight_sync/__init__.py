"""Trainer -> generation servers weight sync over torch.distributed broadcast groups (nccl / gloo), one per PP stage.

Dependencies: weight_sync -> rollout (GenerationClient: the servers' control plane, any backend) and
platform (process_group: the group both ends join); rollout never imports weight_sync.
"""
from areal_mega.weight_sync.broadcast import (
    WeightSyncError,
    WeightUpdateGroup,
    broadcast_weights,
    init_weight_update_group,
    stream_weights,
)
from areal_mega.weight_sync.config import WeightSyncConfig, resolve_master_addr
from areal_mega.weight_sync.stages import StageLayout, StageWeightSync

__all__ = ["StageLayout", "StageWeightSync", "WeightSyncConfig", "WeightSyncError", "WeightUpdateGroup",
           "broadcast_weights", "init_weight_update_group", "resolve_master_addr", "stream_weights"]
