"""Compiled Triton kernels at Qwen's vocabulary on a GPU (skipped without CUDA).

Run on a lent GPU with `pytest tests/kernels` (the conftest compiles Triton
there instead of interpreting it); benchmarks/gpu_check.sh does so.
"""
import pytest
import torch
from areal_mega.kernels import fused_linear_logprobs, ppo_loss, vocab_parallel_logprobs

pytestmark = pytest.mark.gpu

V, H = 151936, 1536  # Qwen2.5 vocabulary, R1-Distill-1.5B hidden size


def _lm_head_inputs(t: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(t, H, device="cuda", generator=g).bfloat16()
    weight = (0.05 * torch.randn(V, H, device="cuda", generator=g)).bfloat16()
    targets = torch.randint(0, V, (t,), device="cuda", generator=g)
    mask = torch.rand(t, device="cuda", generator=g) > 0.3
    return hidden, weight, targets, torch.randn(t, device="cuda", generator=g) * mask, \
        torch.randn(t, device="cuda", generator=g) * mask


def _scaled_close(actual, expected, rtol):
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fused_lm_head_bf16_matches_float64(temperature, reference):
    hidden, weight, targets, g_lp, g_ent = _lm_head_inputs(2048, seed=int(temperature * 10))
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    lp, ent = fused_linear_logprobs(hidden, weight, targets, temperature=temperature, backend="triton")
    gh, gw = torch.autograd.grad([lp, ent], [hidden, weight], [g_lp, g_ent])

    h = hidden.detach().double().requires_grad_(True)
    w = weight.detach().double().requires_grad_(True)
    ref_lp, ref_ent = reference(h @ w.t(), targets, temperature)
    ref_gh, ref_gw = torch.autograd.grad([ref_lp, ref_ent], [h, w], [g_lp.double(), g_ent.double()])
    assert (lp <= 0).all() and (ent >= 0).all()
    torch.testing.assert_close(lp.double(), ref_lp, rtol=1e-3, atol=1e-3)  # fp32 accumulation of bf16 inputs
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-3, atol=1e-3)
    assert gh.dtype == gw.dtype == torch.bfloat16
    _scaled_close(gh, ref_gh, 2e-2)
    _scaled_close(gw, ref_gw, 2e-2)


def test_fused_lm_head_never_allocates_full_logits():
    t = 16384
    hidden, weight, targets, g_lp, g_ent = _lm_head_inputs(t, seed=1)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    lp, ent = fused_linear_logprobs(hidden, weight, targets, backend="triton")
    gh, gw = torch.autograd.grad([lp, ent], [hidden, weight], [g_lp, g_ent])
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    grads = gh.numel() * gh.element_size() + gw.numel() * gw.element_size()
    full_logits_bf16 = t * V * 2
    assert extra - grads < full_logits_bf16 / 4, (extra, grads, full_logits_bf16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_vocab_parallel_at_full_vocabulary(dtype, reference):
    t = 1024
    g = torch.Generator(device="cuda").manual_seed(2)
    logits = (4.0 * torch.randn(t, V, device="cuda", generator=g)).to(dtype).requires_grad_(True)
    targets = torch.randint(0, V, (t,), device="cuda", generator=g)
    g_lp, g_ent = torch.randn(t, device="cuda", generator=g), torch.randn(t, device="cuda", generator=g)
    lp, ent = vocab_parallel_logprobs(logits, targets, temperature=0.7, backend="triton")
    (grad,) = torch.autograd.grad([lp, ent], [logits], [g_lp, g_ent])
    ref_logits = logits.detach().double().requires_grad_(True)
    ref_lp, ref_ent = reference(ref_logits, targets, 0.7)
    (ref_grad,) = torch.autograd.grad([ref_lp, ref_ent], [ref_logits], [g_lp.double(), g_ent.double()])
    torch.testing.assert_close(lp.double(), ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-5)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad, **tol)


def test_ppo_loss_triton_equals_torch_at_scale():
    t = 1 << 20
    g = torch.Generator(device="cuda").manual_seed(3)
    old = -4 * torch.rand(t, device="cuda", generator=g)
    lp = (old + 0.3 * torch.randn(t, device="cuda", generator=g)).requires_grad_(True)
    ref = old + 0.2 * torch.randn(t, device="cuda", generator=g)
    adv = torch.randn(t, device="cuda", generator=g)
    mask = torch.rand(t, device="cuda", generator=g) > 0.2
    out = {}
    for backend in ("torch", "triton"):
        loss, stats = ppo_loss(lp, old, adv, mask, eps_clip=0.2, eps_clip_high=0.28, dual_clip=3.0,
                               ref_logprobs=ref, kl_coef=0.01, backend=backend)
        (grad,) = torch.autograd.grad(loss, lp)
        out[backend] = (loss, grad, stats)
    # the GPU's exp may differ from torch's by an ulp, so a token whose ratio sits on a clip boundary
    # (1 - eps, 1 + eps_high, dual clip) can take the other branch: its value is continuous there
    # (loss compared everywhere), its gradient is not (compared away from the boundaries)
    ratio = torch.exp(lp.detach() - old)
    far = torch.ones_like(mask)
    for edge in (1 - 0.2, 1 + 0.28, 3.0):
        far &= (ratio - edge).abs() > 1e-5 * edge
    assert far.float().mean() > 0.99
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["triton"][1][far], out["torch"][1][far], rtol=1e-5, atol=1e-12)
    for key, value in out["torch"][2].items():  # fractions: a flipped token moves them by 1 / t
        torch.testing.assert_close(out["triton"][2][key], value, rtol=1e-5, atol=16 / t, msg=key)


def test_target_range_checked_only_on_request(monkeypatch):
    """On CUDA the id-range check (a device-to-host sync) runs only with AREAL_MEGA_CHECK_TARGETS=1."""
    from areal_mega.kernels import _common

    logits = torch.randn(4, 10, device="cuda")
    bad = torch.tensor([0, 1, 2, 10], device="cuda")
    monkeypatch.delenv(_common.CHECK_ENV, raising=False)
    vocab_parallel_logprobs(logits, bad, backend="torch")  # not checked: no sync
    monkeypatch.setenv(_common.CHECK_ENV, "1")
    with pytest.raises(ValueError, match="id 10 outside the vocabulary"):
        vocab_parallel_logprobs(logits, bad, backend="torch")
