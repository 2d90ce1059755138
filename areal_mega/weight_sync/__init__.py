"""Trainer -> generation servers weight sync over a torch.distributed broadcast group (nccl / gloo)."""
from areal_mega.weight_sync.broadcast import WeightUpdateGroup, broadcast_weights, init_weight_update_group
from areal_mega.weight_sync.config import WeightSyncConfig

__all__ = ["WeightSyncConfig", "WeightUpdateGroup", "broadcast_weights", "init_weight_update_group"]
