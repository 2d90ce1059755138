"""Forward of packed micro-batches: per-response-token logprobs and entropy.

The last pipeline stage's output layer is switched to return the final-norm
hidden states; `fused_linear_logprobs` then computes logprobs and entropy
against the (vocab-parallel) output weight without materialising
`[tokens, V/TP]` logits, and only at response positions; the vocabulary's
TP padding rows are left out inside the kernel.

Packed rows go to the model as THD `PackedSeqParams` (sequence boundaries),
read by Transformer Engine on GPU and by `models/packed_attention.py` on the
local spec; attention stays within each sequence and RoPE restarts at each
sequence start, so every path gives the logprobs of unpacked sequences.

Under sequence parallelism the final hidden states leave the model split along
the sequence over the TP ranks; `response_logprobs` all-gathers them first
(the fused log-probs read every token against this rank's vocabulary shard).
"""
from __future__ import annotations

import types

import torch

from areal_mega.engine.packing import MicroBatch
from areal_mega.kernels import fused_linear_logprobs


def _return_hidden(self, hidden_states, weight=None, runtime_gather_output=None):
    return hidden_states, None


def output_hidden_states(gpt_model) -> None:
    """Make a last-stage GPTModel return final-norm hidden states instead of logits."""
    gpt_model.output_layer.forward = types.MethodType(_return_hidden, gpt_model.output_layer)


_INT32_MAX = 2**31 - 1


def model_inputs(mb: MicroBatch, device: torch.device) -> dict:
    """Keyword arguments for GPTModel.forward for one packed row.

    The sequence boundaries go in THD `PackedSeqParams` (int32 `cu_seqlens`)
    for both layer specs: Transformer Engine reads them on GPU, the local
    spec's `PackedAttention` elsewhere; Megatron's RoPE restarts at each
    boundary. A padded row's padding is one more segment. No attention mask is built.
    """
    from megatron.core.packed_seq_params import PackedSeqParams

    lens = mb.seq_lens
    if int(lens.sum()) + mb.num_pad != mb.num_tokens or bool((lens <= 0).any()):
        raise ValueError(f"micro-batch of sequences {mb.seq_index}: seq_lens {lens.tolist()} must be positive "
                         f"and sum to the row's {mb.num_tokens} tokens less its {mb.num_pad} padding")
    if mb.num_pad:
        lens = torch.cat([lens, torch.tensor([mb.num_pad], dtype=lens.dtype)])
    if mb.num_tokens > _INT32_MAX:
        raise ValueError(f"micro-batch of sequences {mb.seq_index}: {mb.num_tokens} tokens overflow the int32 "
                         "cu_seqlens of packed attention; lower engine.max_tokens_per_micro_batch")
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lens, 0)
    cu = cu.to(device)
    max_len = int(lens.max())
    return dict(
        input_ids=mb.input_ids.to(device),
        position_ids=mb.position_ids.to(device),
        attention_mask=None,
        packed_seq_params=PackedSeqParams(
            qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max_len, max_seqlen_kv=max_len
        ),
    )


def response_logprobs(hidden: torch.Tensor, output_weight: torch.Tensor, mb: MicroBatch, tp_group,
                      temperature: float, backend: str, vocab_size: int,
                      sequence_parallel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprobs and entropy of the response tokens of one row.

    hidden: [1, T, H] final-norm hidden states, or this TP rank's [1, T/TP, H]
      slice of them with `sequence_parallel`; output_weight: [V/TP, H], this
      rank's shard of the vocabulary padded to a multiple of TP.
    vocab_size: the real vocabulary; the kernel leaves the padding rows out.
    Targets are checked against it here, on the CPU (the kernel does not read
    device data to check them).
    Returns ([N] float32, [N] float32) in the order of `mb.targets`.
    """
    targets = mb.targets
    if len(targets) and not (0 <= int(targets.min()) and int(targets.max()) < vocab_size):
        bad = targets[(targets < 0) | (targets >= vocab_size)][0].item()
        raise ValueError(f"micro-batch of sequences {mb.seq_index}: token id {bad} outside the vocabulary "
                         f"[0, {vocab_size})")
    device = hidden.device
    if sequence_parallel:
        hidden = gather_sequence(hidden, tp_group)
    h = hidden[0].index_select(0, mb.loss_positions.to(device))
    return fused_linear_logprobs(h, output_weight, targets.to(device), tp_group=tp_group, temperature=temperature,
                                 backend=backend, vocab_size=vocab_size)


def gather_sequence(hidden: torch.Tensor, tp_group) -> torch.Tensor:
    """[1, T/TP, H] -> [1, T, H]: all-gather a sequence-parallel row along the sequence over `tp_group`.

    megatron's gather_from_sequence_parallel_region with tensor_parallel_output_grad=False: its backward
    keeps this rank's slice of the gradient, which is already the full-vocabulary one (the fused
    log-probs all-reduce grad_hidden over TP; a reduce-scatter here would count it TP times).
    """
    from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

    full = gather_from_sequence_parallel_region(hidden.transpose(0, 1), tensor_parallel_output_grad=False,
                                                group=tp_group)
    return full.transpose(0, 1)
