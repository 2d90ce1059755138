"""areal-mega: critic-free PPO for large reasoning models (megatron-core + SGLang)."""

__version__ = "0.1.0"
