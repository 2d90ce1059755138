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
    tp1 = recipe_config("configs/qwen2.5_7b_zero/zero.yaml", ["engine.parallel.tp=1", "engine.sequence_parallel=false"])
    assert not fits(estimate(tp1, QWEN2_5_7B))
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


def test_sequence_parallel_splits_the_activations_tp_replicated():
    path = "configs/qwen2.5_7b_zero/zero.yaml"  # TP 4, 18,432-token micro-batches, 28 layers of h = 3584
    assert recipe_config(path).engine.sequence_parallel
    h, tp, tokens, layers = 3584, 4, 18432, 28
    for recompute, layer_inputs in (("none", 0), ("full", layers)):  # full, uniform: one kept input per layer
        over = [f"engine.recompute.granularity={recompute}", "engine.recompute.method=uniform"]
        on = estimate(recipe_config(path, over), QWEN2_5_7B)
        off = estimate(recipe_config(path, [*over, "engine.sequence_parallel=false"]), QWEN2_5_7B)
        # the two norm inputs and the QKV / fc1 inputs (4h bf16 per token) and each kept layer input (2h)
        # go from replicated to split over TP; nothing else changes
        replicated_layers = layers if recompute == "none" else 1  # full: one layer's activations at a time
        saved = tokens * (replicated_layers * 2 * 4 * h + layer_inputs * 2 * h) * (1 - 1 / tp)
        assert off.activations - on.activations == pytest.approx(saved)
        assert off.total - off.activations == on.total - on.activations
    assert estimate(recipe_config(path), QWEN2_5_7B).total / GIB == pytest.approx(35.3, abs=0.1)
