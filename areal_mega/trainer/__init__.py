"""The RL (and SFT) trainer: run config, controller steps, weight sync wiring, evaluation."""
