"""models/swiglu.SwiGLU against float64 silu(gate) * linear. Inside the local spec's MLP it is covered end to end
by tests/engine/test_engine_layouts (logprobs equal to transformers at TP=2 and PP=2)."""
import torch
import torch.nn.functional as F

from areal_mega.models.swiglu import SwiGLU


def _reference(x):
    gate, linear = x.double().chunk(2, dim=-1)
    return F.silu(gate) * linear


def test_matches_float64_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(37, 1, 2 * 24, generator=g)).requires_grad_()  # [T, b, 2F]: megatron's fc1 output
    w = torch.randn(37, 1, 24, generator=g)
    out = SwiGLU()(x)
    ref = _reference(x)
    assert out.shape == (37, 1, 24)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    (ref_grad,) = torch.autograd.grad((ref * w.double()).sum(), x)
    torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=1e-6, atol=1e-6)

