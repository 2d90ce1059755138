"""Device and distributed set-up (device, process_group: the weight-update group both ends join); the CPU
compatibility layer for megatron-core. Depends on torch only; every other package may use it."""
from areal_mega.platform.device import (
    barrier,
    device,
    init_distributed,
    is_cuda,
    seed_everything,
)

__all__ = ["barrier", "device", "init_distributed", "is_cuda", "seed_everything"]
