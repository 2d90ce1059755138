"""Fixtures for the kernel tests: the device, float64 references and NaN-poisoned outputs."""
import pytest
import torch


def reference_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """(logprobs, entropy) in float64 from plain log_softmax over the full vocabulary."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


@pytest.fixture
def device():
    """CUDA when present (the Triton backend then compiles), else CPU (Triton under TRITON_INTERPRET=1)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def reference():
    return reference_logprobs


@pytest.fixture
def poison(monkeypatch):
    """Every buffer the kernels allocate starts as NaN, so unwritten entries show."""
    from areal_mega.kernels import _common

    def nan_empty(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(_common, "empty", nan_empty)


@pytest.fixture
def small_triton_blocks(monkeypatch):
    """Force several Triton column blocks per row even at test sizes."""
    from areal_mega.kernels import tile_triton

    monkeypatch.setattr(tile_triton, "MAX_BLOCK_V", 64)
