"""Critic-free PPO: KL-in-reward, reward-to-go advantages, normalisation, sampling filters, losses."""
