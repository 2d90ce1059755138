"""Math answer extraction and equivalence (Qwen protocol), safe against untrusted output."""
from areal_mega.reward.config import RewardConfig
from areal_mega.reward.extract import extract_answer
from areal_mega.reward.pool import RewardPool, math_equal, math_reward

__all__ = ["RewardConfig", "RewardPool", "extract_answer", "math_equal", "math_reward"]
