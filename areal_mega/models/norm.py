"""RMSNorm for megatron's local layer spec that also runs under sequence parallelism.

megatron-core 0.16.1's local spec builds its norms as `WrappedTorchNorm`,
which returns `torch.nn.RMSNorm` but asserts `not config.sequence_parallel`.
Under sequence parallelism (SP) each tensor-parallel rank normalises only its
own T/TP tokens, so the gradient of a norm weight on one rank covers only
those tokens. megatron's `finalize_model_grads`
(`_allreduce_non_tensor_model_parallel_grads`) sums over the TP group the
gradient of every parameter that carries `sequence_parallel = True` when
`config.sequence_parallel` is on; this norm sets that attribute on its weight,
as megatron's `FusedLayerNorm` and Transformer Engine's norms do. The maths is
torch's RMSNorm, as in `WrappedTorchNorm`: y = x / sqrt(mean(x^2) + eps) * weight.
"""
from __future__ import annotations

import torch


class RMSNorm(torch.nn.RMSNorm):
    """torch.nn.RMSNorm over the last dimension `hidden_size`, built the way megatron builds norms.

    forward(x [..., hidden_size]) -> [..., hidden_size]; weight [hidden_size] replicated over TP.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, persist_layer_norm: bool = False,
                 zero_centered_gamma: bool = False, normalization: str = "RMSNorm"):
        if config.normalization != "RMSNorm" or config.layernorm_zero_centered_gamma:
            raise ValueError(f"models/norm.RMSNorm: normalization {config.normalization!r} with "
                             f"zero_centered_gamma={config.layernorm_zero_centered_gamma} is not RMSNorm")
        super().__init__(hidden_size, eps=eps)
        # megatron's finalize_model_grads all-reduces this weight's grad over TP when SP is on
        self.weight.sequence_parallel = config.sequence_parallel
