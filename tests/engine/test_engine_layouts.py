"""Our Megatron model equals transformers at TP/PP layouts; packing, optimizer step, HF export."""
import pytest
import torch

from tests.distributed import torchrun

WORKER = "tests.engine.worker_engine"


def _weights(results):
    merged = {}
    for r in results:
        merged.update(r["weights_after_step"])
    return merged


@pytest.mark.multirank
@pytest.mark.parametrize("arch_fixture", ["tiny_qwen2_dir", "tiny_llama_dir"])
def test_layouts_match_transformers_and_each_other(arch_fixture, request, tmp_path):
    model_dir = request.getfixturevalue(arch_fixture)
    runs = {}
    for tp, pp, dp in [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)]:
        nproc = tp * pp * dp
        results = torchrun(WORKER, nproc, ["--model", str(model_dir), "--tp", str(tp), "--pp", str(pp),
                                           "--temperature", "0.7", "--dtype", "fp32"], tmp_path / f"{tp}x{pp}x{dp}")
        for r in results:
            assert r["max_dlogprob"] <= 1e-4, (tp, pp, dp, r["max_dlogprob"])
            assert r["max_dlogprob_unpacked"] <= 1e-5, (tp, pp, dp, r["max_dlogprob_unpacked"])
            assert r["min_entropy"] >= 0.0
        runs[(tp, pp, dp)] = _weights(results)  # DP=2 checks the global token normalisation
    base = runs[(1, 1, 1)]
    from transformers import AutoModelForCausalLM

    initial = {k: v.flatten().tolist() for k, v in AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict().items()}
    assert len(base) > 10
    for layout, weights in runs.items():
        assert weights.keys() == base.keys(), layout
        for name in base:
            diff = (torch.tensor(weights[name]) - torch.tensor(base[name])).abs().max().item()
            assert diff <= 1e-5, (layout, name, diff)
    moved = max((torch.tensor(base[n]) - torch.tensor(initial[n])).abs().max().item() for n in base)
    assert moved > 1e-4, "the optimizer step must change the weights"


@pytest.mark.multirank
def test_export_reload_gives_identical_tensors(tiny_qwen2_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    export = tmp_path / "export"
    torchrun(WORKER, 2, ["--model", str(tiny_qwen2_dir), "--pp", "2", "--export", str(export)], tmp_path / "run")
    reloaded = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32).state_dict()
    original = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32).state_dict()
    assert reloaded.keys() == original.keys()
    changed = [k for k in original if not torch.equal(original[k], reloaded[k])]
    assert changed, "the exported model must carry the optimizer step"
    files = sorted(p.name for p in export.glob("*.safetensors"))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    names = set()
    for f in files:
        with safe_open(str(export / f), framework="pt") as h:
            names |= set(h.keys())
    assert "lm_head.weight" not in names  # tied embeddings: nothing extra to store
