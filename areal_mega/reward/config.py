"""Reward configuration (the `reward:` section of a run config)."""
from __future__ import annotations

from dataclasses import dataclass

CHECKERS = ("builtin", "math_verify", "both")
MODES = ("reward", "eval")


@dataclass
class RewardConfig:
    """How answers are found and scored.

    The reward values of a right / wrong answer are `algo.reward_correct` /
    `algo.reward_wrong` (one key per setting; the trainer reads those).
    mode: answer extraction, "reward" (committed answers only: boxes,
        "answer is", final-answer lines; no fall-back) or "eval" (the Qwen
        math-evaluation protocol with its fall-backs, for benchmarks); see extract.py.
    checker: "builtin" (our parser, which never executes model text),
        "math_verify" (HF math-verify, optional extra) or "both" (correct when
        either says so; disagreements are counted). Every checker runs inside
        the worker processes, under the same limits.
    num_workers: checker processes in a RewardPool.
    timeout_s: wall-clock limit of one check, enforced by killing the worker.
    max_response_chars: longer responses score wrong without being parsed.
    memory_limit_mb: address-space limit of each worker (0 = none).
    """

    mode: str = "reward"
    checker: str = "builtin"
    num_workers: int = 2
    timeout_s: float = 5.0
    max_response_chars: int = 200_000
    memory_limit_mb: int = 2048

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"reward.mode must be one of {MODES}, got {self.mode!r}")
        if self.checker not in CHECKERS:
            raise ValueError(f"reward.checker must be one of {CHECKERS}, got {self.checker!r}")
        if self.checker != "builtin":
            from areal_mega.reward.mathverify import available

            if not available():
                raise ValueError(f"reward.checker={self.checker!r} needs math-verify: pip install -e .[math-verify]")
        if self.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1, got {self.num_workers}")
        if self.timeout_s <= 0:
            raise ValueError(f"reward.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_response_chars < 1:
            raise ValueError(f"reward.max_response_chars must be >= 1, got {self.max_response_chars}")
        if self.memory_limit_mb < 0:
            raise ValueError(f"reward.memory_limit_mb must be >= 0, got {self.memory_limit_mb}")
