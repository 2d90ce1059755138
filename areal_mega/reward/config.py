"""Reward configuration (the `reward:` section of a run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RewardConfig:
    """How answers are scored.

    correct_reward / wrong_reward: the AReaL v0.1 values (+5 / -5).
    num_workers: checker processes in a RewardPool.
    timeout_s: wall-clock limit of one check, enforced by killing the worker.
    max_response_chars: longer responses score wrong without being parsed.
    memory_limit_mb: address-space limit of each worker (0 = none).
    start_method: multiprocessing start method for workers ("spawn" is safe
        after torch and threads are up; "forkserver" starts faster).
    """

    correct_reward: float = 5.0
    wrong_reward: float = -5.0
    num_workers: int = 2
    timeout_s: float = 5.0
    max_response_chars: int = 200_000
    memory_limit_mb: int = 2048
    start_method: str = "spawn"

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1, got {self.num_workers}")
        if self.timeout_s <= 0:
            raise ValueError(f"reward.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_response_chars < 1:
            raise ValueError(f"reward.max_response_chars must be >= 1, got {self.max_response_chars}")
        if self.memory_limit_mb < 0:
            raise ValueError(f"reward.memory_limit_mb must be >= 0, got {self.memory_limit_mb}")
        if self.start_method not in ("spawn", "forkserver", "fork"):
            raise ValueError(f"reward.start_method must be spawn, forkserver or fork, got {self.start_method!r}")
