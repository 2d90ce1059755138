"""The one HF <-> Megatron name map (checkpoint conversion and weight sync both use it).

A Megatron parameter of one pipeline stage maps to one or more HF tensors:

| Megatron (local spec; TE spec in brackets)        | HF                                   | kind    |
| ------------------------------------------------- | ------------------------------------ | ------- |
| embedding.word_embeddings.weight                  | model.embed_tokens.weight            | vocab   |
| decoder.layers.i.input_layernorm.weight           | model.layers.j.input_layernorm.weight| replica |
|   [self_attention.linear_qkv.layer_norm_weight]   |                                      |         |
| decoder.layers.i.self_attention.linear_qkv.weight | q_proj, k_proj, v_proj (.weight)     | qkv     |
| decoder.layers.i.self_attention.linear_qkv.bias   | q_proj, k_proj, v_proj (.bias)       | qkv     |
| decoder.layers.i.self_attention.linear_proj.weight| o_proj.weight                        | row     |
| decoder.layers.i.pre_mlp_layernorm.weight         | post_attention_layernorm.weight      | replica |
|   [mlp.linear_fc1.layer_norm_weight]              |                                      |         |
| decoder.layers.i.mlp.linear_fc1.weight            | gate_proj, up_proj (.weight)         | fc1     |
| decoder.layers.i.mlp.linear_fc2.weight            | down_proj.weight                     | row     |
| decoder.final_layernorm.weight                    | model.norm.weight                    | replica |
| output_layer.weight                               | lm_head.weight (embed_tokens if tied)| vocab   |

`j = i + layer_offset` (the stage's first global layer). Fused QKV uses
Megatron's grouped layout: per query group, its query heads then one key and
one value head; a TP rank holds whole groups. Fused gate/up holds, per TP
rank, `[gate_shard; up_shard]`. The vocabulary is padded to a multiple of TP
with zero rows and trimmed on the way out.
"""
from __future__ import annotations

import dataclasses
import re

import torch

from areal_mega.models.hf_config import ModelDims

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "input_layernorm.weight": (("input_layernorm.weight",), "replica"),
    "self_attention.linear_qkv.layer_norm_weight": (("input_layernorm.weight",), "replica"),
    "self_attention.linear_qkv.weight": (
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "qkv",
    ),
    "self_attention.linear_qkv.bias": (
        ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        "qkv",
    ),
    "self_attention.linear_proj.weight": (("self_attn.o_proj.weight",), "row"),
    "pre_mlp_layernorm.weight": (("post_attention_layernorm.weight",), "replica"),
    "mlp.linear_fc1.layer_norm_weight": (("post_attention_layernorm.weight",), "replica"),
    "mlp.linear_fc1.weight": (("mlp.gate_proj.weight", "mlp.up_proj.weight"), "fc1"),
    "mlp.linear_fc2.weight": (("mlp.down_proj.weight",), "row"),
}


@dataclasses.dataclass(frozen=True)
class ParamMap:
    """How one Megatron parameter relates to its HF tensors."""

    hf_names: tuple[str, ...]
    kind: str  # "replica" | "row" | "qkv" | "fc1" | "vocab"


def param_map(megatron_name: str, dims: ModelDims, layer_offset: int = 0) -> ParamMap | None:
    """Map a Megatron parameter name of one stage; None for non-weights (`_extra_state`)."""
    if megatron_name.endswith("_extra_state"):
        return None
    if megatron_name == "embedding.word_embeddings.weight":
        return ParamMap(("model.embed_tokens.weight",), "vocab")
    if megatron_name == "output_layer.weight":
        name = "model.embed_tokens.weight" if dims.tie_word_embeddings else "lm_head.weight"
        return ParamMap((name,), "vocab")
    if megatron_name == "decoder.final_layernorm.weight":
        return ParamMap(("model.norm.weight",), "replica")
    m = _LAYER.match(megatron_name)
    if m and m.group(2) in _LAYER_MAP:
        layer = int(m.group(1)) + layer_offset
        suffixes, kind = _LAYER_MAP[m.group(2)]
        return ParamMap(tuple(f"model.layers.{layer}.{s}" for s in suffixes), kind)
    raise KeyError(f"no HF name for Megatron parameter '{megatron_name}'")


def _qkv_shape(dims: ModelDims) -> tuple[int, int]:
    return dims.num_kv_heads, dims.num_heads // dims.num_kv_heads


def hf_to_megatron(pm: ParamMap, hf: list[torch.Tensor], dims: ModelDims, tp_rank: int, tp_size: int) -> torch.Tensor:
    """This TP rank's shard of the Megatron parameter built from its HF tensors."""
    if pm.kind == "replica":
        return hf[0]
    if pm.kind == "row":
        return hf[0].chunk(tp_size, dim=1)[tp_rank]
    if pm.kind == "vocab":
        full = hf[0]
        pad = dims.padded_vocab_size(tp_size) - full.shape[0]
        if pad:
            full = torch.cat([full, full.new_zeros(pad, *full.shape[1:])])
        return full.chunk(tp_size, dim=0)[tp_rank]
    if pm.kind == "fc1":
        gate, up = (t.chunk(tp_size, dim=0)[tp_rank] for t in hf)
        return torch.cat([gate, up], dim=0)
    if pm.kind == "qkv":
        groups, q_per_group = _qkv_shape(dims)
        q, k, v = hf
        tail = q.shape[1:]  # (H,) for weights, () for biases
        q = q.reshape(groups, q_per_group * dims.head_dim, *tail)
        k = k.reshape(groups, dims.head_dim, *tail)
        v = v.reshape(groups, dims.head_dim, *tail)
        fused = torch.cat([q, k, v], dim=1)  # [groups, (q_per_group + 2) * head_dim, *tail]
        return fused.chunk(tp_size, dim=0)[tp_rank].reshape(-1, *tail)
    raise ValueError(f"unknown parameter kind '{pm.kind}'")


def megatron_to_hf(pm: ParamMap, shards: list[torch.Tensor], dims: ModelDims) -> list[tuple[str, torch.Tensor]]:
    """HF tensors from the TP shards of one Megatron parameter (`shards[r]` from TP rank r)."""
    tp_size = len(shards)
    if pm.kind == "replica":
        return [(pm.hf_names[0], shards[0])]
    if pm.kind == "row":
        return [(pm.hf_names[0], torch.cat(shards, dim=1))]
    if pm.kind == "vocab":
        return [(pm.hf_names[0], torch.cat(shards, dim=0)[: dims.vocab_size])]
    if pm.kind == "fc1":
        halves = [s.chunk(2, dim=0) for s in shards]
        gate = torch.cat([h[0] for h in halves], dim=0)
        up = torch.cat([h[1] for h in halves], dim=0)
        return [(pm.hf_names[0], gate), (pm.hf_names[1], up)]
    if pm.kind == "qkv":
        groups, q_per_group = _qkv_shape(dims)
        full = torch.cat(shards, dim=0)
        tail = full.shape[1:]
        full = full.reshape(groups, (q_per_group + 2) * dims.head_dim, *tail)
        q, k, v = full.split([q_per_group * dims.head_dim, dims.head_dim, dims.head_dim], dim=1)
        return [
            (pm.hf_names[0], q.reshape(-1, *tail)),
            (pm.hf_names[1], k.reshape(-1, *tail)),
            (pm.hf_names[2], v.reshape(-1, *tail)),
        ]
    raise ValueError(f"unknown parameter kind '{pm.kind}' (tp_size={tp_size})")
