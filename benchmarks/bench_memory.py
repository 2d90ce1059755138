"""Per-GPU memory of each shipped recipe's training GPUs by the memory model (benchmarks/memory_model.py).

No measurement: the estimate, part by part in GiB, with and without the recipe's recomputation, for
the fit check against an 80 GB GPU (tests/test_memory_model.py asserts every recipe fits).
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.memory_model import BUDGET_GIB, QWEN2_5_7B, R1_DISTILL_QWEN_1_5B, estimate

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "configs/r1_distill_1.5b/stage1_8k.yaml": R1_DISTILL_QWEN_1_5B,
    "configs/r1_distill_1.5b/stage2_16k.yaml": R1_DISTILL_QWEN_1_5B,
    "configs/r1_distill_1.5b/stage3_24k.yaml": R1_DISTILL_QWEN_1_5B,
    "configs/qwen2.5_7b_zero/zero.yaml": QWEN2_5_7B,
}


def recipe_config(path: str, overrides=()):
    from areal_mega.config import load_config
    from areal_mega.trainer.config import RunConfig

    return load_config(RunConfig, REPO / path, list(overrides))


def main(quick: bool = False) -> dict:
    out = {"budget_gib": BUDGET_GIB}
    for path, dims in RECIPES.items():
        name = Path(path).parent.name + "/" + Path(path).stem
        for part, gib in estimate(recipe_config(path), dims).gib().items():
            out[f"{name}/{part}_gib"] = round(gib, 2)
        bare = estimate(recipe_config(path, ["engine.recompute.granularity=none"]), dims)
        out[f"{name}/total_without_recompute_gib"] = round(bare.total / 2**30, 2)
    return out
