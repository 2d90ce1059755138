"""Shuffled, resumable batch sampler over a data set of `num_items` prompts.

Each epoch is a fresh permutation drawn from (seed, epoch), so the order is
reproducible without storing it; `state_dict()` holds epoch, position and
seed, and a sampler restored from it yields exactly the batches the original
would have yielded next.
"""
from __future__ import annotations

import random


class ResumableSampler:
    """Batches of indices into [0, num_items); with drop_last an epoch's short tail is skipped."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 1, drop_last: bool = True):
        if num_items < 1:
            raise ValueError(f"sampler: num_items must be >= 1, got {num_items}")
        if batch_size < 1 or (drop_last and batch_size > num_items):
            raise ValueError(f"sampler: batch_size must be in [1, num_items={num_items}], got {batch_size}")
        self.num_items, self.batch_size, self.seed, self.drop_last = num_items, batch_size, seed, drop_last
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_items))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        """The next batch_size indices (fewer only at an epoch end without drop_last)."""
        remaining = self.num_items - self.position
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.position : self.position + self.batch_size]
        self.position += len(batch)
        return batch

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_items": self.num_items,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the data set size must match."""
        for key in ("epoch", "position", "seed", "num_items"):
            if key not in state:
                raise ValueError(f"sampler state: missing '{key}'")
        if state["num_items"] != self.num_items:
            raise ValueError(
                f"sampler state: num_items {state['num_items']} does not match this data set ({self.num_items})"
            )
        if not 0 <= state["position"] <= self.num_items:
            raise ValueError(f"sampler state: position {state['position']} out of range")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self.batch_size = state.get("batch_size", self.batch_size)
        self._order = self._permutation(self.epoch)
