"""vocab_parallel_logprobs against float64 log_softmax, both backends, fwd + bwd."""
import pytest
import torch
from areal_mega.kernels import vocab_parallel_logprobs

T, V = 37, 300  # not multiples of any chunk or block size
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def _inputs(dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (3.0 * torch.randn(T, V, generator=g)).to(dtype)
    targets = torch.randint(0, V, (T,), generator=g)
    mask = torch.rand(T, generator=g) > 0.3
    g_lp = torch.randn(T, generator=g) * mask
    g_ent = torch.randn(T, generator=g) * mask
    return tuple(x.to(device) for x in (logits, targets, g_lp, g_ent))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_float64_reference(backend, dtype, temperature, device, reference, poison, small_triton_blocks):
    seed = len(backend) * 100 + int(temperature * 10) + (dtype == torch.bfloat16)
    logits, targets, g_lp, g_ent = _inputs(dtype, seed, device)
    logits.requires_grad_(True)
    lp, ent = vocab_parallel_logprobs(logits, targets, temperature=temperature, backend=backend,
                                      token_chunk=16, vocab_chunk=128)
    ref_lp, ref_ent = reference(logits.detach(), targets, temperature)
    assert lp.dtype == ent.dtype == torch.float32 and lp.shape == ent.shape == (T,)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert (lp <= 0).all() and (ent >= 0).all()
    torch.testing.assert_close(lp.double(), ref_lp, **TOL[torch.float32])
    torch.testing.assert_close(ent.double(), ref_ent, **TOL[torch.float32])

    (grad,) = torch.autograd.grad([lp, ent], [logits], [g_lp, g_ent])
    ref_logits = logits.detach().double().requires_grad_(True)
    ref_lp, ref_ent = reference(ref_logits, targets, temperature)
    (ref_grad,) = torch.autograd.grad([ref_lp, ref_ent], [ref_logits], [g_lp.double(), g_ent.double()])
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    assert (grad[g_lp == 0] == 0).all()  # masked tokens get exactly no gradient
    torch.testing.assert_close(grad.double(), ref_grad, **TOL[dtype])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_one_grad_unused_and_default_chunks(backend, device, reference):
    logits, targets, g_lp, _ = _inputs(torch.float32, 5, device)
    logits.requires_grad_(True)
    lp, _ = vocab_parallel_logprobs(logits, targets, backend=backend)
    (grad,) = torch.autograd.grad(lp, logits, g_lp)
    ref_logits = logits.detach().double().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(reference(ref_logits, targets)[0], ref_logits, g_lp.double())
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_peaked_and_extreme_logits_keep_invariants(backend, device, reference):
    logits = torch.full((4, V), -30.0, device=device)
    logits[:, 7] = 40.0  # nearly one-hot: entropy ~ 0, target logprob ~ 0 or ~ -70
    logits[2] = 0.0  # uniform: entropy = log V
    targets = torch.tensor([7, 8, 9, 7], device=device)
    lp, ent = vocab_parallel_logprobs(logits, targets, backend=backend)
    ref_lp, ref_ent = reference(logits, targets)
    assert (lp <= 0).all() and (ent >= 0).all()
    torch.testing.assert_close(lp.double(), ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_non_contiguous_inputs_are_handled(backend, device, reference):
    logits, targets, _, _ = _inputs(torch.float32, 3, device)
    wide = torch.randn(T, V + 20, device=device)
    wide[:, 5:V + 5] = logits
    row_strided = wide[:, 5:V + 5]
    col_strided = logits.t().contiguous().t()
    for view in (row_strided, col_strided):
        lp, ent = vocab_parallel_logprobs(view, torch.stack([targets, targets], 1)[:, 0], backend=backend)
        ref_lp, ref_ent = reference(logits, targets)
        torch.testing.assert_close(lp.double(), ref_lp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-6)


def test_bad_input_names_the_problem():
    logits = torch.randn(5, 11)
    good = torch.randint(0, 11, (5,))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab_parallel_logprobs(logits, torch.tensor([0, 1, 11, 2, 3]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab_parallel_logprobs(logits, torch.tensor([0, -1, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"targets: expected shape \[5\]"):
        vocab_parallel_logprobs(logits, good[:4])
    with pytest.raises(ValueError, match="targets: expected int64"):
        vocab_parallel_logprobs(logits, good.float())
    with pytest.raises(ValueError, match="logits: expected"):
        vocab_parallel_logprobs(logits[None], good)
    with pytest.raises(ValueError, match="logits: dtype"):
        vocab_parallel_logprobs(logits.double(), good)
    with pytest.raises(ValueError, match="temperature"):
        vocab_parallel_logprobs(logits, good, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        vocab_parallel_logprobs(logits, good, backend="cuda")
    with pytest.raises(ValueError, match="vocab_chunk"):
        vocab_parallel_logprobs(logits, good, vocab_chunk=0)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        vocab_parallel_logprobs(torch.randn(3, 5), torch.tensor([0, 1, 2]), backend="triton")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_minus_inf_logits_are_probability_zero(backend, device, reference, poison, small_triton_blocks):
    """Callers that mask ids with -inf: entropy and grads stay finite (no 0 * -inf), equal to the
    softmax over the finite ids only, and masked ids get exactly zero gradient. Row 0 has a whole
    vocabulary tile (and several Triton blocks) of -inf."""
    logits, targets, g_lp, g_ent = _inputs(torch.float32, 5, device)
    g = torch.Generator().manual_seed(6)
    masked = torch.rand(T, V, generator=g) < 0.3
    masked[0, :128] = True
    masked[torch.arange(T), targets.cpu()] = False
    logits = logits.masked_fill(masked.to(device), float("-inf")).requires_grad_(True)
    lp, ent = vocab_parallel_logprobs(logits, targets, temperature=0.7, backend=backend, token_chunk=16,
                                      vocab_chunk=128)
    (grad,) = torch.autograd.grad([lp, ent], [logits], [g_lp, g_ent])
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all() and torch.isfinite(grad).all()
    assert (grad[masked.to(device)] == 0).all()
    for i in range(T):  # reference: the softmax over this row's finite ids
        keep = (~masked[i]).nonzero()[:, 0].to(device)
        row = logits.detach()[i, keep].double()[None].requires_grad_(True)
        target = (keep == targets[i]).nonzero()[:, 0]
        ref_lp, ref_ent = reference(row, target, 0.7)
        (ref_grad,) = torch.autograd.grad([ref_lp, ref_ent], [row], [g_lp[i:i + 1].double(), g_ent[i:i + 1].double()])
        torch.testing.assert_close(lp[i:i + 1].double(), ref_lp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ent[i:i + 1].double(), ref_ent, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[i, keep].double(), ref_grad[0], rtol=1e-5, atol=1e-6)
