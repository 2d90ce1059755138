"""Device selection, torch.distributed init (nccl on GPU, gloo on CPU), seeding."""
from __future__ import annotations

import datetime
import os
import random

import numpy as np
import torch
import torch.distributed as dist


def is_cuda() -> bool:
    return torch.cuda.is_available()


def device() -> torch.device:
    """The device this rank computes on: its local GPU, or the CPU."""
    if is_cuda():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(timeout_s: float = 600.0) -> tuple[int, int]:
    """Initialise the default process group from torchrun's env (or a 1-rank group).

    Returns (rank, world_size). NCCL when CUDA is present, gloo otherwise; on
    CPU the megatron-core compatibility layer is switched on here. The default
    group carries compute collectives that every rank enters together, so its
    `timeout_s` is short; a rank waiting for the controller (through a rollout,
    while servers start) waits in the engine's gloo object group instead, whose
    time-out is engine.collective_timeout_s (hours). On resume the controller
    starts its servers before the weight-sync join, so rank 0's TP peers wait
    for them there, not in `iter_hf_weights`: their TP all-gathers (megatron's
    TP group, megatron's 30 min) run inside the sync, each waiting at most for
    one bucket's broadcast, which weight_sync.timeout_s bounds on the sender
    (tests/weight_sync/test_weight_sync_timeouts.py).
    """
    if not is_cuda():
        from areal_mega.platform import megatron_cpu

        megatron_cpu.install()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    if is_cuda():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(
        backend="nccl" if is_cuda() else "gloo",
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return dist.get_rank(), dist.get_world_size()


def barrier(group=None) -> None:
    if dist.is_initialized():
        dist.barrier(group=group)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
