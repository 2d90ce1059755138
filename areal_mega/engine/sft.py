"""Supervised fine-tuning through the same engine: cross-entropy on response tokens."""
from __future__ import annotations

import torch


def sft_loss(logprobs: torch.Tensor, entropy: torch.Tensor, fields: dict, mb, global_num_tokens: float,
             global_num_seqs: float) -> tuple[torch.Tensor, dict]:
    """Token-mean negative log-likelihood over the whole global batch.

    logprobs, entropy: [N] float32 of this micro-batch's response tokens.
    Returns the micro-batch's share of the global loss and its mean NLL.
    """
    nll = -logprobs
    return nll.sum() / global_num_tokens, {"nll": nll.mean().detach(), "entropy": entropy.mean().detach()}
