"""PackedAttention (local-spec core attention: RoPE, then attention) against float64 RoPE + attention run on each
sequence alone."""
import math
import types

import pytest
import torch

from areal_mega.models.hf_config import ModelDims, transformer_config
from areal_mega.models.packed_attention import PackedAttention


def _dims(heads=4, kv_heads=2, head_dim=8):
    return ModelDims(arch="qwen2", num_layers=2, hidden_size=heads * head_dim, ffn_hidden_size=64, num_heads=heads,
                     num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=101, max_position_embeddings=64,
                     rope_theta=1e4, norm_eps=1e-6, qkv_bias=True, tie_word_embeddings=True)


def _tp(size):
    return types.SimpleNamespace(tp=types.SimpleNamespace(size=lambda: size))


def _attention(dims, tp_size=1, **overrides):
    from megatron.core.transformer.enums import AttnMaskType

    config = transformer_config(dims, 1, 1, torch.float32)
    for k, v in overrides.items():
        setattr(config, k, v)
    return PackedAttention(config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self",
                           pg_collection=_tp(tp_size), rotary_base=dims.rope_theta)


def _params(lens):
    from megatron.core.packed_seq_params import PackedSeqParams

    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max(lens),
                           max_seqlen_kv=max(lens))


def _rope64(x, base):
    """x [n, h, d] at positions 0..n-1, non-interleaved RoPE in float64 (angles as megatron forms them, in float32)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angles = torch.outer(torch.arange(x.shape[0], dtype=torch.float32), inv_freq).double()[:, None]
    x1, x2 = x.double().chunk(2, dim=-1)
    return torch.cat((x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()), dim=-1)


def _reference(q, k, v, lens, scale, base):
    """Each sequence alone: float64 RoPE from position 0, explicit causal softmax, KV groups repeated to the
    query heads."""
    rep = q.shape[1] // k.shape[1]
    out, start = [], 0
    for n in lens:
        qs, ks = (_rope64(x[start:start + n], base).transpose(0, 1) for x in (q, k))
        vs = v[start:start + n].double().transpose(0, 1)
        ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
        scores = (qs @ ks.transpose(1, 2)) * scale
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        out.append((scores.softmax(-1) @ vs).transpose(0, 1))
        start += n
    return torch.cat(out).reshape(sum(lens), -1)


@pytest.mark.parametrize("tp_size", [1, 2])
def test_matches_each_sequence_alone_forward_and_backward(tp_size):
    dims = _dims()
    attn = _attention(dims, tp_size)
    heads, groups = dims.num_heads // tp_size, dims.num_kv_heads // tp_size  # this TP rank's share
    assert (attn.heads, attn.groups) == (heads, groups)
    lens = [5, 1, 17, 9]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lens), h, dims.head_dim, generator=g, requires_grad=True)
               for h in (heads, groups, groups))
    out = attn(q, k, v, None, packed_seq_params=_params(lens))
    ref = _reference(q, k, v, lens, 1.0 / math.sqrt(dims.head_dim), dims.rope_theta)
    assert out.shape == (sum(lens), heads * dims.head_dim)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    w = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * w.double()).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=1e-5)


def test_softmax_scale_follows_megatron():
    dims = _dims(head_dim=8)
    assert _attention(dims).softmax_scale == pytest.approx(1 / math.sqrt(8))
    from megatron.core.transformer.enums import AttnMaskType

    config = transformer_config(dims, 1, 1, torch.float32)
    config.apply_query_key_layer_scaling = True
    layer3 = PackedAttention(config, 3, AttnMaskType.causal, "self", pg_collection=_tp(1), rotary_base=1e4)
    assert layer3.softmax_scale == pytest.approx(1 / math.sqrt(8) / 3)


def test_bad_inputs_are_named():
    dims = _dims()
    attn = _attention(dims)
    q, k = torch.zeros(6, 4, 8), torch.zeros(6, 2, 8)
    with pytest.raises(ValueError, match="packed_seq_params"):
        attn(q, k, k, None)
    with pytest.raises(ValueError, match="does not cover the row of 6 tokens"):
        attn(q, k, k, None, packed_seq_params=_params([2, 3]))
    with pytest.raises(ValueError, match="attention mask"):
        attn(q, k, k, torch.zeros(1, 1, 6, 6, dtype=torch.bool), packed_seq_params=_params([6]))
    with pytest.raises(ValueError, match="attention_dropout"):
        _attention(dims, attention_dropout=0.1)
