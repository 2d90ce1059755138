"""The reference server's static-cache Qwen2 forward (rollout/qwen2_decoder.py) against transformers' forward:
the same logits through a left-padded prefill, row selection and decode steps; the same samples from the
engine with it and without it; other architectures keep transformers' forward."""
import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from areal_mega.models.tiny import build_tiny_model
from areal_mega.rollout.qwen2_decoder import Qwen2Decoder
from areal_mega.rollout.reference_engine import ReferenceEngine, validate_sampling


@pytest.fixture(scope="module", params=["tied_gqa", "untied_mha"])
def model(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "tied_gqa":
        build_tiny_model(d, num_heads=4, num_kv_heads=2, tie_word_embeddings=True, init_std=0.2)
    else:
        build_tiny_model(d, num_heads=4, num_kv_heads=4, tie_word_embeddings=False, init_std=0.2, seed=3)
    return AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()


def _hf(model, ids, mask, pos, cache):
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                 past_key_values=cache).logits[:, -1].float()


@torch.no_grad()
def test_logits_match_transformers_through_prefill_row_selection_and_decode(model):
    decoder = Qwen2Decoder.of(model)
    assert decoder is not None
    g = torch.Generator().manual_seed(0)
    lens = [7, 3, 5]
    L = max(lens)
    ids = torch.zeros((3, L), dtype=torch.long)
    mask = torch.zeros((3, L), dtype=torch.long)
    for r, n in enumerate(lens):  # left padding, as the engine prefills
        ids[r, L - n:] = torch.randint(2, 90, (n,), generator=g)
        mask[r, L - n:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ours, theirs = decoder.new_cache(3, L + 6), DynamicCache()
    a, b = decoder(ids, mask, pos, ours), _hf(model, ids, mask, pos, theirs)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    rows = torch.tensor([0, 0, 1, 2, 2])  # samples copy their prompt's cache rows
    ours.batch_select_indices(rows)
    theirs.batch_select_indices(rows)
    mask, pos = mask[rows], pos[rows][:, -1:]
    for step in range(5):
        tok = torch.randint(2, 90, (len(mask), 1), generator=g)
        mask = torch.cat([mask, torch.ones((len(mask), 1), dtype=torch.long)], dim=1)
        pos = pos + 1
        a, b = decoder(tok, mask, pos, ours), _hf(model, tok, mask, pos, theirs)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        if step == 2:  # a finished row leaves the batch
            keep = torch.tensor([0, 2, 3])
            ours.batch_select_indices(keep)
            theirs.batch_select_indices(keep)
            mask, pos = mask[keep], pos[keep]


def test_engine_samples_are_the_same_with_and_without_it(tiny_qwen2_dir):
    engine = ReferenceEngine(str(tiny_qwen2_dir))
    assert engine.decoder is not None
    prompts = [[5, 6, 7, 8, 9], [20, 21], [40, 41, 42, 43]]

    def params(j: int, seed: int) -> dict:  # rows end at different steps
        return validate_sampling({"temperature": 1.0, "max_new_tokens": 4 + 4 * j, "stop_token_ids": [1],
                                  "sampling_seed": seed}, engine.vocab_size)

    def run():
        samples = engine.submit_many([(p, params(j, 11 + 3 * i + j)) for i, p in enumerate(prompts) for j in range(3)])
        return [s.future.result(timeout=60) for s in samples]

    fast = run()
    decoder, engine.decoder = engine.decoder, None
    try:
        slow = run()
    finally:
        engine.decoder = decoder
    assert [r["output_ids"] for r in fast] == [r["output_ids"] for r in slow]
    assert len({len(r["output_ids"]) for r in fast}) == 3
    for r, s in zip(fast, slow):
        assert max(abs(x - y) for x, y in zip(r["logprobs"], s["logprobs"])) < 1e-5


def test_other_architectures_keep_transformers_forward(tiny_llama_dir, tiny_qwen2_dir):
    llama = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    assert Qwen2Decoder.of(llama) is None
    qwen = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32)
    qwen.config.use_sliding_window = True
    assert Qwen2Decoder.of(qwen) is None
