"""The reference server's fast forward for Qwen2 checkpoints: a preallocated KV cache and no per-step objects.

    decoder = Qwen2Decoder.of(model)          # None unless a plain Qwen2 (then transformers' forward serves)
    cache = decoder.new_cache(rows, max_len)  # [layers] x [rows, kv_heads, max_len, head_dim] keys and values
    logits = decoder(ids, mask, pos, cache)   # ids/pos [B, T], mask [B, S] (S = cached + T) -> [B, V] fp32
    cache.batch_select_indices(idx)           # keep rows idx (as transformers' DynamicCache)

The same arithmetic as transformers' Qwen2 (RMSNorm, default rotary, SDPA with
grouped KV heads, SiLU-gated MLP, tied or separate output head) on the
model's own parameters, read at each call, so weight updates apply at once.
What it leaves out is transformers' per-step work around that arithmetic:
building a 4-D mask, concatenating the cache at every layer and step, and
output objects; on the quickstart model a decode step takes ~0.7x the time
(benchmarks/RESULTS.md). The logits are those of transformers' forward to
fp32 rounding (tests/rollout/test_reference_decoder.py).

Left-padded prefill: a padding position attends to itself only (its output
is never read), so no row of the attention is empty and nothing is NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class StaticKVCache:
    """Keys and values `[rows, kv_heads, max_len, head_dim]` per layer, filled from position 0 on."""

    def __init__(self, num_layers: int, rows: int, kv_heads: int, max_len: int, head_dim: int):
        shape = (rows, kv_heads, max_len, head_dim)
        self.keys = [torch.empty(shape) for _ in range(num_layers)]
        self.values = [torch.empty(shape) for _ in range(num_layers)]
        self.max_len = max_len

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]


class Qwen2Decoder:
    """Forward of a transformers Qwen2ForCausalLM (see the module doc); build with `of`."""

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None))
        self.inv_freq = 1.0 / (float(theta) ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))
        self.scale = self.head_dim ** -0.5

    @classmethod
    def of(cls, model) -> "Qwen2Decoder | None":
        """The decoder of `model`, or None where it would not compute transformers' forward (another
        architecture, a non-default rotary, sliding-window attention, another activation)."""
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
        if (cfg.model_type != "qwen2" or cfg.hidden_act != "silu" or getattr(cfg, "use_sliding_window", False)
                or rope.get("rope_type", rope.get("type", "default")) != "default"
                or theta is None or type(model).__name__ != "Qwen2ForCausalLM"):
            return None
        return cls(model)

    def new_cache(self, rows: int, max_len: int) -> StaticKVCache:
        return StaticKVCache(len(self.model.model.layers), rows, self.kv_heads, max_len, self.head_dim)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """Next-token logits `[B, V]` after ids `[B, T]` at positions pos `[B, T]`; mask `[B, S]` (1 = a real
        token) covers the S - T cached positions and these T. Writes the T new keys/values into `cache`."""
        B, T = ids.shape
        S = mask.shape[1]
        start = S - T
        if S > cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions, {S} needed")
        keep = mask.bool()
        if T == 1:
            attn = keep[:, None, None, :]
        else:  # causal over the new positions, real keys only; a padding query sees itself
            q_at = torch.arange(start, S).unsqueeze(1)
            attn = (torch.arange(S).unsqueeze(0) <= q_at) & keep[:, None, :]
            attn = (attn | (torch.arange(S).unsqueeze(0) == q_at)).unsqueeze(1)
        freqs = pos.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # [B, 1, T, D]
        inner = self.model.model
        x = inner.embed_tokens.weight[ids]
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        for i, layer in enumerate(inner.layers):
            a = layer.self_attn
            h = self._norm(x, layer.input_layernorm.weight)
            q = self._rotate(F.linear(h, a.q_proj.weight, a.q_proj.bias).view(B, T, H, D).transpose(1, 2), cos, sin)
            k = self._rotate(F.linear(h, a.k_proj.weight, a.k_proj.bias).view(B, T, KV, D).transpose(1, 2), cos, sin)
            v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(B, T, KV, D).transpose(1, 2)
            cache.keys[i][:, :, start:S] = k
            cache.values[i][:, :, start:S] = v
            o = F.scaled_dot_product_attention(q, cache.keys[i][:, :, :S], cache.values[i][:, :, :S], attn_mask=attn,
                                               scale=self.scale, enable_gqa=H != KV)
            x = x + F.linear(o.transpose(1, 2).reshape(B, T, H * D), a.o_proj.weight, a.o_proj.bias)
            m = layer.mlp
            h = self._norm(x, layer.post_attention_layernorm.weight)
            x = x + F.linear(F.silu(F.linear(h, m.gate_proj.weight)) * F.linear(h, m.up_proj.weight), m.down_proj.weight)
        h = self._norm(x[:, -1], inner.norm.weight)
        return F.linear(h, self.model.lm_head.weight).float()
