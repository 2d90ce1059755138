"""Packed rows on the local layer spec: attention within each sequence, never a [T, T] tensor.

The TP=2 and PP=2 equality of packed and unpacked logprobs (within 1e-5,
fp32) is asserted by test_engine_layouts (`max_dlogprob_unpacked`), whose
64-token rows pack several sequences each.
"""
import pytest
import torch

from areal_mega.engine.forward import model_inputs
from areal_mega.engine.packing import MicroBatch
from areal_mega.models.hf_config import use_transformer_engine
from tests.distributed import torchrun


@pytest.mark.multirank
@pytest.mark.skipif(use_transformer_engine(), reason="the TE layer spec has its own THD attention")
def test_4x2048_row_builds_no_row_sized_tensor(tiny_qwen2_dir, tmp_path):
    (r,) = torchrun("tests.engine.worker_packed_rows", 1, ["--model", str(tiny_qwen2_dir)], tmp_path)
    assert r["core_attention"] == "PackedAttention"
    T = r["row_tokens"]
    # a dense mask is [T, T] = T^2 elements; per-sequence scores would be heads * 2048^2 = T^2 / 4
    assert r["largest_numel"] < T * T // 2, r
    # nor per-sequence [L, L] scores: SDPA takes torch's CPU flash kernel (4-D inputs; 3-D ones fall
    # back to the math kernel, which materialises them and is 11x slower here)
    assert r["largest_numel"] < r["seq_len"] ** 2, r
    assert r["max_dlogprob_unpacked"] <= 1e-5, r


def _micro_batch(seq_lens, tokens):
    return MicroBatch(input_ids=tokens, position_ids=tokens, seq_lens=torch.tensor(seq_lens),
                      loss_positions=torch.zeros(0, dtype=torch.long), targets=torch.zeros(0, dtype=torch.long),
                      seq_index=[3, 5], token_fields={})


def test_model_inputs_are_thd_boundaries_without_mask():
    inputs = model_inputs(_micro_batch([3, 4], torch.zeros(1, 7, dtype=torch.long)), torch.device("cpu"))
    assert inputs["attention_mask"] is None
    p = inputs["packed_seq_params"]
    assert p.qkv_format == "thd" and p.cu_seqlens_q.tolist() == [0, 3, 7] and p.cu_seqlens_q.dtype == torch.int32
    assert p.max_seqlen_q == p.max_seqlen_kv == 4


def test_row_over_int32_offsets_is_refused_naming_the_micro_batch():
    huge = torch.zeros(1, 1, dtype=torch.long).expand(1, 2**31)  # a stride-0 view: no memory
    with pytest.raises(ValueError, match=r"micro-batch of sequences \[3, 5\]: 2147483648 tokens overflow the int32"):
        model_inputs(_micro_batch([2**30, 2**30], huge), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"micro-batch of sequences \[3, 5\]: seq_lens \[3, 3\] must"):
        model_inputs(_micro_batch([3, 3], torch.zeros(1, 7, dtype=torch.long)), torch.device("cpu"))


def test_out_of_vocabulary_target_is_refused_on_the_cpu_naming_the_micro_batch():
    from areal_mega.engine.forward import response_logprobs

    mb = _micro_batch([3, 4], torch.zeros(1, 7, dtype=torch.long))
    mb.loss_positions, mb.targets = torch.tensor([1, 4]), torch.tensor([5, 12])
    with pytest.raises(ValueError, match=r"micro-batch of sequences \[3, 5\]: token id 12 outside the vocabulary \[0, 10\)"):
        response_logprobs(torch.zeros(1, 7, 8), torch.zeros(10, 8), mb, None, 1.0, "torch", vocab_size=10)
