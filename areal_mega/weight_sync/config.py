"""Weight-sync configuration (the `weight_sync:` section of a run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WeightSyncConfig:
    """How the trainer sends weights to the generation servers.

    backend: "auto" (nccl with CUDA, gloo without), "nccl" or "gloo".
    master_addr / master_port: where the trainer (rank 0) hosts the group's
    TCPStore; port 0 = pick a free one. Must differ from the trainer's own
    torch.distributed port.
    group_name: the PrefixStore / group name the servers join under.
    bucket_bytes: bytes per /update_weights_from_distributed call (slime: 512 MB).
    pause_mode: SGLang /pause_generation mode around an update ("abort",
    "retract", "in_place") or "none".
    timeout_s: rendezvous and collective time-out.
    """

    backend: str = "auto"
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    group_name: str = "weight_update_group"
    bucket_bytes: int = 512 * 2**20
    pause_mode: str = "abort"
    timeout_s: float = 300.0

    def __post_init__(self):
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"weight_sync.backend must be auto, nccl or gloo, got {self.backend!r}")
        if not 0 <= self.master_port < 65536:
            raise ValueError(f"weight_sync.master_port must be in [0, 65535], got {self.master_port}")
        if not self.group_name:
            raise ValueError("weight_sync.group_name must not be empty")
        if self.bucket_bytes < 1:
            raise ValueError(f"weight_sync.bucket_bytes must be >= 1, got {self.bucket_bytes}")
        if self.pause_mode not in ("abort", "retract", "in_place", "none"):
            raise ValueError(f"weight_sync.pause_mode must be abort, retract, in_place or none, got {self.pause_mode!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"weight_sync.timeout_s must be > 0, got {self.timeout_s}")

    def resolved_backend(self) -> str:
        import torch

        if self.backend == "auto":
            return "nccl" if torch.cuda.is_available() else "gloo"
        return self.backend
