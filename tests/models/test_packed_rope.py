"""models/packed_rope against megatron-core's own unfused THD RoPE, run in float64, on fresh random inputs."""
import types

import pytest
import torch

from areal_mega.models.packed_rope import apply_rope, row_cos_sin


def _megatron_thd_rope64(x, lens, head_dim, base):
    """megatron's `_apply_rotary_pos_emb_thd` on float64 `x`, frequencies from megatron's RotaryEmbedding."""
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_thd
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    rope = RotaryEmbedding(kv_channels=head_dim, rotary_percent=1.0, rotary_base=base, use_cpu_initialization=True,
                           cp_group=types.SimpleNamespace(size=lambda: 1, rank=lambda: 0))
    freqs = rope.get_freqs_non_repeated(max(lens))  # get_emb's layout, without its move to the GPU
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, None, :]
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    return _apply_rotary_pos_emb_thd(x.double(), cu, emb, cp_group=rope.cp_group)


@pytest.mark.parametrize("base", [10000, 1000000])
@pytest.mark.parametrize("lens", [[5, 1, 17, 9, 30], [64]])
def test_matches_megatron_thd_rope_forward_and_backward(lens, base):
    g = torch.Generator().manual_seed(len(lens) + base)
    heads, head_dim = 3, 16
    x = torch.randn(sum(lens), heads, head_dim, generator=g, requires_grad=True)
    bounds = [0] + torch.cumsum(torch.tensor(lens), 0).tolist()
    cos, sin = row_cos_sin(bounds, head_dim, base, torch.float32, torch.device("cpu"))
    assert cos.shape == sin.shape == (sum(lens), 1, head_dim // 2)
    out = apply_rope(x, cos, sin)
    ref = _megatron_thd_rope64(x, lens, head_dim, base)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    w = torch.randn(out.shape, generator=g)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    (ref_grad,) = torch.autograd.grad((ref * w.double()).sum(), x)
    torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=0, atol=1e-6)


def test_positions_restart_at_each_sequence():
    cos, sin = row_cos_sin([0, 3, 5], 4, 10000, torch.float64, torch.device("cpu"))
    alone, _ = row_cos_sin([0, 3], 4, 10000, torch.float64, torch.device("cpu"))
    assert torch.equal(cos[:3], alone) and torch.equal(cos[3:], alone[:2])
    assert torch.equal(cos[0], torch.ones(1, 2, dtype=torch.float64))
    assert torch.equal(sin[3], torch.zeros(1, 2, dtype=torch.float64))
