"""Forward of packed micro-batches: per-response-token logprobs and entropy.

The last pipeline stage's output layer is switched to return the final-norm
hidden states; `fused_linear_logprobs` then computes logprobs and entropy
against the (vocab-parallel) output weight without materialising
`[tokens, V/TP]` logits, and only at response positions.

Packed rows: on CPU (local layer spec) a block-diagonal causal mask; on GPU
with Transformer Engine, THD packing through `PackedSeqParams`. RoPE depends
only on relative positions, so both give the logprobs of unpacked sequences.
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


def block_causal_mask(seq_lens: torch.Tensor) -> torch.Tensor:
    """[1, 1, T, T] bool, True where attention is masked (other sequence or future)."""
    seq_id = torch.repeat_interleave(torch.arange(len(seq_lens)), seq_lens)
    same = seq_id[:, None] == seq_id[None, :]
    causal = torch.ones(len(seq_id), len(seq_id), dtype=torch.bool).tril()
    return ~(same & causal)[None, None]


def model_inputs(mb: MicroBatch, device: torch.device, use_te: bool) -> dict:
    """Keyword arguments for GPTModel.forward for one packed row."""
    inputs = dict(
        input_ids=mb.input_ids.to(device),
        position_ids=mb.position_ids.to(device),
    )
    if use_te:
        from megatron.core.packed_seq_params import PackedSeqParams

        cu = torch.zeros(len(mb.seq_lens) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(mb.seq_lens, 0)
        cu = cu.to(device)
        max_len = int(mb.seq_lens.max())
        inputs["attention_mask"] = None
        inputs["packed_seq_params"] = PackedSeqParams(
            qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max_len, max_seqlen_kv=max_len
        )
    else:
        inputs["attention_mask"] = block_causal_mask(mb.seq_lens).to(device)
    return inputs


_PADDED_LOGIT = -1.0e4


def _exclude_padding(h: torch.Tensor, weight: torch.Tensor, num_padded: int):
    """Append a constant-1 feature to `h` and a column to `weight` that is 0 for real
    vocabulary rows and -1e4 for the `num_padded` padding rows at the end of this
    shard, so padded ids get a logit of -1e4 and drop out of the softmax."""
    bias = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    bias[weight.shape[0] - num_padded :] = _PADDED_LOGIT
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1), torch.cat([weight, bias], dim=1)


def response_logprobs(hidden: torch.Tensor, output_weight: torch.Tensor, mb: MicroBatch, tp_group,
                      temperature: float, backend: str, num_padded: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprobs and entropy of the response tokens of one row.

    hidden: [1, T, H] final-norm hidden states; output_weight: [V/TP, H].
    num_padded: None when the vocabulary has no padding (Qwen's and Llama's are
      multiples of TP); otherwise the padding rows at the end of this rank's
      shard, possibly 0 (every TP rank must then augment, the shapes of the
      TP all-reduces must agree).
    Returns ([N] float32, [N] float32) in the order of `mb.targets`.
    """
    device = hidden.device
    h = hidden[0].index_select(0, mb.loss_positions.to(device))
    if num_padded is not None:
        h, output_weight = _exclude_padding(h, output_weight, num_padded)
    return fused_linear_logprobs(
        h, output_weight, mb.targets.to(device), tp_group=tp_group, temperature=temperature, backend=backend
    )
