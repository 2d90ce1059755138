"""Synthetic arithmetic for the CPU quickstart: `Compute 23+45.` -> `68`.

Every pair (a, b) with low <= a, b <= high is one problem. A seeded shuffle
splits the pairs: the first `heldout` are the held-out set, the rest train,
so no held-out problem is ever in train. Records have the JSONL loader's
type (source "synthetic_train" / "synthetic_heldout"); use the `quickstart`
template (the prompt is the question itself; the expected response is
` \\boxed{68}` then EOS).
"""
from __future__ import annotations

import random

from areal_mega.data.jsonl import MathRecord


def synthetic_split(
    seed: int = 1, low: int = 10, high: int = 99, heldout: int = 200
) -> tuple[list[MathRecord], list[MathRecord]]:
    """(train, held-out) records of the addition task (see module docstring)."""
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    if heldout >= len(pairs):
        raise ValueError(f"synthetic: heldout={heldout} leaves no training problems out of {len(pairs)}")
    random.Random(f"synthetic:{seed}").shuffle(pairs)

    def record(a: int, b: int, source: str) -> MathRecord:
        return MathRecord(id=f"{a}+{b}", problem=f"Compute {a}+{b}.", answer=str(a + b), source=source)

    held = [record(a, b, "synthetic_heldout") for a, b in pairs[:heldout]]
    train = [record(a, b, "synthetic_train") for a, b in pairs[heldout:]]
    return train, held


def off_by_one(answer: str, rng: random.Random) -> str:
    """A near miss of an integer `answer`: one more or one less, chosen by `rng` ("68" -> "67" or "69");
    the noisy teacher's mistake in the quickstart's warm start (trainer.sft_label_noise)."""
    try:
        value = int(answer)
    except ValueError:
        raise ValueError(f"off_by_one: answer {answer!r} is not an integer") from None
    return str(value + rng.choice((-1, 1)))
