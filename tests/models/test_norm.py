"""models/norm.RMSNorm (its closed-form backward off CUDA) against float64 RMSNorm, forward and backward."""
import types

import torch

from areal_mega.models.norm import RMSNorm


def test_matches_float64_forward_and_backward():
    config = types.SimpleNamespace(normalization="RMSNorm", layernorm_zero_centered_gamma=False, sequence_parallel=True)
    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(config, 48, eps=1e-6)
    assert norm.weight.sequence_parallel
    with torch.no_grad():
        norm.weight.copy_(torch.rand(48, generator=g) + 0.5)
    x = (3 * torch.randn(23, 2, 48, generator=g)).requires_grad_()
    w = torch.randn(23, 2, 48, generator=g)
    out = norm(x)
    x64, weight64 = x.double(), norm.weight.double()
    ref = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * weight64
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    grad_x, grad_w = torch.autograd.grad((out * w).sum(), (x, norm.weight))
    ref_x, ref_w = torch.autograd.grad((ref * w.double()).sum(), (x, norm.weight))
    torch.testing.assert_close(grad_x.double(), ref_x.double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_w.double(), ref_w.double(), rtol=0, atol=1e-5)
    assert out.grad_fn.name() == "_RMSNormFunctionBackward"
