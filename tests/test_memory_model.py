"""The memory model (benchmarks/memory_model.py): every shipped recipe fits an 80 GB training GPU,
deliberately bad layouts do not, and its parameter count is the model's."""
import pytest
import torch

from benchmarks.bench_memory import RECIPES, recipe_config
from benchmarks.memory_model import GIB, QWEN2_5_7B, R1_DISTILL_QWEN_1_5B, estimate, fits, num_params


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_each_recipe_fits_80gb(path):
    est = estimate(recipe_config(path), RECIPES[path])
    assert fits(est), (path, est.gib())


def test_bad_layouts_do_not_fit():
    # 7B without tensor parallelism at the recipe's 18K-token micro-batches
    assert not fits(estimate(recipe_config("configs/qwen2.5_7b_zero/zero.yaml", ["engine.parallel.tp=1"]), QWEN2_5_7B))
    # 24K tokens whose [T, V] logits are materialised (no fused log-prob kernel): 2 x 16 GB
    stage3 = recipe_config("configs/r1_distill_1.5b/stage3_24k.yaml")
    assert not fits(estimate(stage3, R1_DISTILL_QWEN_1_5B, fused_logprobs=False))


def test_recomputation_and_sharding_shrink_what_they_should():
    path = "configs/r1_distill_1.5b/stage3_24k.yaml"
    acts = {g: estimate(recipe_config(path, [f"engine.recompute.granularity={g}", "engine.recompute.method=uniform"]),
                        R1_DISTILL_QWEN_1_5B).activations for g in ("none", "selective", "full")}
    block = estimate(recipe_config(path), R1_DISTILL_QWEN_1_5B).activations  # the recipe: block, 14 of 28 layers
    assert acts["full"] < block < acts["none"] == acts["selective"]
    one = estimate(recipe_config(path, ["engine.optimizer.distributed_optimizer=false"]), R1_DISTILL_QWEN_1_5B)
    many = estimate(recipe_config(path), R1_DISTILL_QWEN_1_5B)  # 64 DP ranks share Adam's 12 bytes / param
    assert one.optimizer == pytest.approx(64 * many.optimizer)
    assert one.optimizer / GIB == pytest.approx(12 * 1.777e9 / GIB, rel=1e-3)


def test_parameter_count_is_the_models():
    assert num_params(R1_DISTILL_QWEN_1_5B) == pytest.approx(1.78e9, rel=0.01)  # the hub's model size
    assert num_params(QWEN2_5_7B) == pytest.approx(7.62e9, rel=0.01)


def test_parameter_count_matches_a_real_model(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    from areal_mega.models.hf_config import read_hf_dims

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32)
    assert num_params(read_hf_dims(tiny_qwen2_dir)) == sum(p.numel() for p in model.parameters())
