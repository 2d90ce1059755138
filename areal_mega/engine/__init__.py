"""Megatron training engine: parallel state, packing, forward, train step, optimizer, checkpoint."""
