"""Device and distributed set-up; the CPU compatibility layer for megatron-core."""
from areal_mega.platform.device import (
    barrier,
    device,
    init_distributed,
    is_cuda,
    seed_everything,
)

__all__ = ["barrier", "device", "init_distributed", "is_cuda", "seed_everything"]
