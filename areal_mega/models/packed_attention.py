"""Core attention for Megatron's local layer spec over packed rows (no Transformer Engine).

A packed row holds several sequences back to back; `PackedSeqParams` (format
'thd', the one Transformer Engine reads too) gives their boundaries in
`cu_seqlens_q`. `PackedAttention` runs causal scaled-dot-product attention on
each sequence's own slice, so a row costs O(sum of L_i^2) time and memory,
never the O(T^2) of a dense block-diagonal mask over the whole row. RoPE is
applied here first (models/packed_rope.py; the local spec's GPTModel has no
position embedding of its own), restarting at each sequence start
(`cu_seqlens` again), so every sequence sees positions 0..L_i-1 exactly as
when it runs alone.

It replaces `DotProductAttention` in the `core_attention` slot of the local
spec (`models/hf_config.build_gpt_model`): same constructor (plus the RoPE
base, a spec parameter), same forward arguments. Heads arrive already split over tensor-parallel ranks (the QKV
projection is column-parallel), so each rank attends with its own
`num_attention_heads / tp` query heads and `num_query_groups / tp` KV groups.

Why SDPA per sequence and not `torch.nn.attention.flex_attention` with a
document mask: measured on CPU (torch 2.13, 4 heads x 32, fwd+bwd, one thread)
per-sequence SDPA took 171 / 276 / 593 ms at 16x256 / 8x512 / 4x2048 tokens
against 1.79 / 1.70 / 6.59 s for one SDPA call with the dense block mask,
and flex attention refuses the backward on CPU ("does not support backward
on CPU"). SDPA per sequence has no length limit of its own; the row's
`cu_seqlens` are int32 (checked where they are built, engine/forward.py).
One host read of `cu_seqlens` per layer (`.tolist()`) is the price on a GPU,
as for Megatron's unfused THD RoPE, which this module's RoPE replaces.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from megatron.core.transformer.module import MegatronModule
from megatron.core.utils import divide

from areal_mega.models.packed_rope import apply_rope, row_cos_sin


class PackedAttention(MegatronModule):
    """RoPE, then causal attention within each packed sequence of a 'thd' row.

    rotary_base: RoPE's base (HF rope_theta), set by the layer spec (models/hf_config.build_gpt_model).
    forward(query [T, np, d], key [T, ng, d], value [T, ng, d] (query and key not yet rotated), attention_mask=None,
            packed_seq_params=PackedSeqParams(qkv_format='thd', cu_seqlens_q=[S+1] int32, ...))
      -> [T, np * d] (np, ng: query heads and KV groups of this TP rank).
    """

    def __init__(self, config, layer_number: int, attn_mask_type, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None, *, rotary_base: float):
        super().__init__(config=config)
        from megatron.core.process_groups_config import ProcessGroupCollection

        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        problems = {
            "attention_dropout": dropout != 0.0,
            "context_parallel_size": config.context_parallel_size != 1,
            "softmax_type": config.softmax_type != "vanilla",
            "window_size": config.window_size is not None,
        }
        bad = [k for k, v in problems.items() if v]
        if bad:
            raise ValueError(f"PackedAttention (local spec) supports no {bad}; "
                             "use the Transformer Engine spec for them")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp_size = pg_collection.tp.size()
        self.layer_number = max(1, layer_number)
        self.heads = divide(config.num_attention_heads, tp_size)
        self.groups = divide(config.num_query_groups, tp_size)
        head_dim = divide(config.kv_channels * config.num_attention_heads, config.num_attention_heads)
        self.rotary_base = rotary_base
        # the scale megatron's DotProductAttention applies (query-key layer scaling included)
        self.softmax_scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
        if config.apply_query_key_layer_scaling:
            self.softmax_scale /= self.layer_number

    def forward(self, query, key, value, attention_mask=None, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is None or packed_seq_params.qkv_format != "thd":
            raise ValueError("PackedAttention needs packed_seq_params with qkv_format='thd' "
                             "(engine/forward.model_inputs builds them)")
        if attention_mask is not None or attention_bias is not None:
            raise ValueError("PackedAttention takes sequence boundaries from packed_seq_params, "
                             "not an attention mask or bias")
        if query.dim() != 3 or query.shape[1] != self.heads or key.shape[1] != self.groups:
            raise ValueError(f"PackedAttention: expected query [T, {self.heads}, d] and key [T, {self.groups}, d], "
                             f"got {list(query.shape)} and {list(key.shape)}")
        bounds = packed_seq_params.cu_seqlens_q.tolist()
        if bounds[0] != 0 or bounds[-1] != query.shape[0]:
            raise ValueError(f"cu_seqlens_q {bounds[0]}..{bounds[-1]} does not cover the row of {query.shape[0]} tokens")
        cos, sin = row_cos_sin(bounds, query.shape[2], self.rotary_base, query.dtype, query.device)
        query, key = apply_rope(query, cos, sin), apply_rope(key, cos, sin)
        # [T, h, d] -> [1, h, T, d]: each sequence is a slice along dim 2. The batch dimension
        # matters: torch's CPU flash kernel (no [L, L] scores) takes 4-D inputs only, 3-D ones
        # fall back to the math kernel (11x slower with GQA at L = 2048, and it materialises the scores).
        q, k, v = (x.transpose(0, 1)[None] for x in (query, key, value))
        gqa = self.heads != self.groups
        # torch.split, not one slice per sequence: a slice's backward writes its gradient into a zeroed
        # copy of the whole row (O(num_seqs x T) per layer, 40% of a quickstart train step); split's
        # backward concatenates the pieces once
        lens = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        outs = [
            F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=self.softmax_scale, enable_gqa=gqa)
            for qs, ks, vs in zip(q.split(lens, dim=2), k.split(lens, dim=2), v.split(lens, dim=2))
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return out[0].transpose(0, 1).reshape(query.shape[0], self.heads * query.shape[2])
