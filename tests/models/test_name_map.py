"""The HF <-> Megatron name map: shard shapes, Megatron's grouped QKV layout, round trips."""
import zlib

import pytest
import torch

from areal_mega.models.hf_config import ModelDims
from areal_mega.models.name_map import hf_to_megatron, megatron_to_hf, param_map

DIMS = ModelDims(arch="qwen2", num_layers=2, hidden_size=16, ffn_hidden_size=24, num_heads=8, num_kv_heads=4,
                 head_dim=2, vocab_size=101, max_position_embeddings=64, rope_theta=1e4, norm_eps=1e-6,
                 qkv_bias=True, tie_word_embeddings=False)
H, F, D = DIMS.hidden_size, DIMS.ffn_hidden_size, DIMS.head_dim
Q, KV = DIMS.num_heads * D, DIMS.num_kv_heads * D


def hf_shapes(layer: int) -> dict:
    p = f"model.layers.{layer}."
    return {
        "model.embed_tokens.weight": (DIMS.vocab_size, H), "lm_head.weight": (DIMS.vocab_size, H),
        "model.norm.weight": (H,), p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
        p + "self_attn.q_proj.weight": (Q, H), p + "self_attn.k_proj.weight": (KV, H), p + "self_attn.v_proj.weight": (KV, H),
        p + "self_attn.q_proj.bias": (Q,), p + "self_attn.k_proj.bias": (KV,), p + "self_attn.v_proj.bias": (KV,),
        p + "self_attn.o_proj.weight": (H, Q), p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
        p + "mlp.down_proj.weight": (H, F),
    }


MEGATRON = {  # name -> (kind, shard shape at TP=t)
    "embedding.word_embeddings.weight": ("vocab", lambda t: (DIMS.padded_vocab_size(t) // t, H)),
    "output_layer.weight": ("vocab", lambda t: (DIMS.padded_vocab_size(t) // t, H)),
    "decoder.final_layernorm.weight": ("replica", lambda t: (H,)),
    "decoder.layers.0.input_layernorm.weight": ("replica", lambda t: (H,)),
    "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": ("replica", lambda t: (H,)),
    "decoder.layers.0.self_attention.linear_qkv.weight": ("qkv", lambda t: ((Q + 2 * KV) // t, H)),
    "decoder.layers.0.self_attention.linear_qkv.bias": ("qkv", lambda t: ((Q + 2 * KV) // t,)),
    "decoder.layers.0.self_attention.linear_proj.weight": ("row", lambda t: (H, Q // t)),
    "decoder.layers.0.pre_mlp_layernorm.weight": ("replica", lambda t: (H,)),
    "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": ("replica", lambda t: (H,)),
    "decoder.layers.0.mlp.linear_fc1.weight": ("fc1", lambda t: (2 * F // t, H)),
    "decoder.layers.0.mlp.linear_fc2.weight": ("row", lambda t: (H, F // t)),
}


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(MEGATRON))
def test_round_trip_every_kind(name, tp):
    layer_offset = 1  # stage 2 of a PP=2 split: local layer 0 is global layer 1
    kind, shard_shape = MEGATRON[name]
    pm = param_map(name, DIMS, layer_offset)
    assert pm.kind == kind
    shapes = hf_shapes(layer_offset)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) + tp)
    hf = [torch.randn(shapes[n], generator=g) for n in pm.hf_names]
    shards = [hf_to_megatron(pm, hf, DIMS, r, tp) for r in range(tp)]
    for s in shards:
        assert tuple(s.shape) == shard_shape(tp)
    back = megatron_to_hf(pm, shards, DIMS)
    assert [n for n, _ in back] == list(pm.hf_names)
    for (_, t), ref in zip(back, hf):
        assert torch.equal(t, ref)  # vocab padding trimmed: shapes equal too


def test_vocab_padding_is_zero_rows_on_the_last_rank():
    pm = param_map("embedding.word_embeddings.weight", DIMS)
    full = torch.randn(DIMS.vocab_size, H)
    last = hf_to_megatron(pm, [full], DIMS, 3, 4)  # padded 104 -> shards of 26; rank 3 holds 78..103
    assert torch.equal(last[: 101 - 78], full[78:]) and torch.count_nonzero(last[101 - 78 :]) == 0


def test_qkv_is_megatron_grouped_layout():
    """Per query group: its query heads, then its key head, then its value head; TP ranks hold whole groups."""
    pm = param_map("decoder.layers.0.self_attention.linear_qkv.bias", DIMS)
    q, k, v = torch.arange(Q) + 1000.0, torch.arange(KV) + 2000.0, torch.arange(KV) + 3000.0
    qpg = DIMS.num_heads // DIMS.num_kv_heads
    expected = torch.cat([torch.cat([q[g * qpg * D:(g + 1) * qpg * D], k[g * D:(g + 1) * D], v[g * D:(g + 1) * D]])
                          for g in range(DIMS.num_kv_heads)])
    assert torch.equal(hf_to_megatron(pm, [q, k, v], DIMS, 0, 1), expected)
    assert torch.equal(hf_to_megatron(pm, [q, k, v], DIMS, 1, 2), expected[len(expected) // 2:])


def test_fc1_holds_gate_then_up_per_rank():
    pm = param_map("decoder.layers.0.mlp.linear_fc1.weight", DIMS)
    gate, up = torch.randn(F, H), torch.randn(F, H)
    shard = hf_to_megatron(pm, [gate, up], DIMS, 1, 2)
    assert torch.equal(shard, torch.cat([gate[F // 2:], up[F // 2:]]))


def test_layer_offset_and_tied_output():
    assert param_map("decoder.layers.1.mlp.linear_fc2.weight", DIMS, 4).hf_names == ("model.layers.5.mlp.down_proj.weight",)
    tied = ModelDims(**{**DIMS.__dict__, "tie_word_embeddings": True})
    assert param_map("output_layer.weight", tied).hf_names == ("model.embed_tokens.weight",)
    assert param_map("output_layer.weight", DIMS).hf_names == ("lm_head.weight",)
    assert param_map("decoder.layers.0.self_attention.core_attention._extra_state", DIMS) is None


@pytest.mark.parametrize("name", ["decoder.layers.0.mlp.router.weight", "embedding.position_embeddings.weight", "foo"])
def test_unknown_names_raise_naming_the_parameter(name):
    with pytest.raises(KeyError, match=name.replace(".", r"\.")):
        param_map(name, DIMS)
