"""HF `config.json` -> megatron-core `TransformerConfig` + `GPTModel` (Qwen2, Llama).

`ModelDims` is the architecture in plain numbers, read once from the HF
directory; the name map, the checkpoint loader and weight sync all take it.
The Transformer Engine layer spec is used when TE is importable on CUDA, the
local spec (Megatron's own modules, with `PackedAttention` as core attention,
`models/swiglu.SwiGLU` as the MLP activation and `models/norm.RMSNorm` as
every norm) otherwise; both read packed rows as
THD `PackedSeqParams` and both run under sequence parallelism.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F

SUPPORTED_ARCHS = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """Architecture of a HF decoder, as megatron-core needs it."""

    arch: str  # "qwen2" | "llama"
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    norm_eps: float
    qkv_bias: bool
    tie_word_embeddings: bool

    def padded_vocab_size(self, tp_size: int) -> int:
        """Vocabulary padded up to a multiple of `tp_size` (padding is trimmed on export)."""
        return -(-self.vocab_size // tp_size) * tp_size


def read_hf_dims(model_dir: str | Path) -> ModelDims:
    """Read `model_dir/config.json`; errors name the missing file or unsupported field."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a HF model directory)")
    cfg = json.loads(path.read_text())
    archs = cfg.get("architectures") or []
    arch = next((SUPPORTED_ARCHS[a] for a in archs if a in SUPPORTED_ARCHS), None)
    if arch is None:
        raise ValueError(
            f"{path}: unsupported architectures {archs}; supported: {sorted(SUPPORTED_ARCHS)}"
        )
    if cfg.get("rope_scaling") not in (None, {}) and (cfg["rope_scaling"] or {}).get("rope_type", "default") != "default":
        raise ValueError(f"{path}: rope_scaling {cfg['rope_scaling']} is not supported")
    heads = cfg["num_attention_heads"]
    rope_theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return ModelDims(
        arch=arch,
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        ffn_hidden_size=cfg["intermediate_size"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads", heads),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg.get("max_position_embeddings", 32768),
        rope_theta=float(rope_theta),
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        qkv_bias=True if arch == "qwen2" else bool(cfg.get("attention_bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def use_transformer_engine() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def transformer_config(dims: ModelDims, tp_size: int, pp_size: int, params_dtype: torch.dtype,
                       recompute_granularity: str = "none", recompute_method: str = "uniform",
                       recompute_num_layers: int = 1, sequence_parallel: bool = False):
    """megatron-core TransformerConfig for `dims` at TP x PP, no dropout.

    engine.recompute.* is translated here: recompute_granularity none |
    selective (core attention) | full (with recompute_method uniform | block
    and recompute_num_layers). engine.sequence_parallel too (needs TP > 1):
    the norms, residuals and dropout-free adds between the TP regions then
    hold T/TP tokens per rank (megatron all-gathers before the QKV and fc1
    linears and reduce-scatters after proj and fc2); on the local spec the
    norms are `models/norm.RMSNorm` (megatron's own torch norm refuses SP),
    and engine/forward.py gathers the final hidden states along the sequence
    before the fused log-probs. Packed rows are then padded to a multiple of
    TP (engine/packing.py).
    """
    from megatron.core.transformer import TransformerConfig

    if dims.num_heads % tp_size or dims.num_kv_heads % tp_size:
        raise ValueError(
            f"parallel.tp={tp_size} must divide num_attention_heads={dims.num_heads} "
            f"and num_key_value_heads={dims.num_kv_heads}"
        )
    if dims.num_layers % pp_size:
        raise ValueError(f"parallel.pp={pp_size} must divide num_hidden_layers={dims.num_layers}")
    if sequence_parallel and tp_size == 1:
        raise ValueError("engine.sequence_parallel needs parallel.tp > 1 (it splits the sequence over the TP ranks)")
    recompute = {}
    if recompute_granularity == "selective":
        recompute = {"recompute_granularity": "selective"}
    elif recompute_granularity == "full":
        if recompute_method == "uniform" and (dims.num_layers // pp_size) % recompute_num_layers:
            raise ValueError(f"engine.recompute.num_layers={recompute_num_layers} must divide the "
                             f"{dims.num_layers // pp_size} layers of a pipeline stage (method uniform)")
        recompute = {"recompute_granularity": "full", "recompute_method": recompute_method,
                     "recompute_num_layers": recompute_num_layers}
    elif recompute_granularity != "none":
        raise ValueError(f"engine.recompute.granularity: unknown '{recompute_granularity}'")
    return TransformerConfig(
        num_layers=dims.num_layers,
        hidden_size=dims.hidden_size,
        ffn_hidden_size=dims.ffn_hidden_size,
        num_attention_heads=dims.num_heads,
        num_query_groups=dims.num_kv_heads,
        kv_channels=dims.head_dim,
        tensor_model_parallel_size=tp_size,
        pipeline_model_parallel_size=pp_size,
        normalization="RMSNorm",
        layernorm_epsilon=dims.norm_eps,
        add_bias_linear=False,
        add_qkv_bias=dims.qkv_bias,
        gated_linear_unit=True,
        activation_func=F.silu,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        # the local spec's MLP hands the whole fc1 output to its spec activation (models/swiglu.SwiGLU);
        # megatron names the switch after TE's activation ops, which the TE spec here does not use
        use_te_activation_func=not use_transformer_engine(),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        pipeline_dtype=params_dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        variable_seq_lengths=True,
        moe_token_dispatcher_type="alltoall",  # unused (dense); "allgather" rejects variable lengths
        calculate_per_token_loss=True,
        deallocate_pipeline_outputs=False,
        sequence_parallel=sequence_parallel,
        **recompute,
    )


def build_gpt_model(dims: ModelDims, config, pre_process: bool, post_process: bool, tp_size: int):
    """A megatron-core GPTModel for one pipeline stage (no weights loaded yet)."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )
    from megatron.core.transformer.spec_utils import ModuleSpec

    rotary_base = int(dims.rope_theta)
    if use_transformer_engine():
        spec = get_gpt_layer_with_transformer_engine_spec()
    else:  # Megatron's own modules, attention within each packed sequence (no [T, T] mask)
        from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

        from areal_mega.models.norm import RMSNorm
        from areal_mega.models.packed_attention import PackedAttention
        from areal_mega.models.swiglu import SwiGLU

        layer = get_gpt_layer_local_spec(normalization="RMSNorm")
        # PackedAttention applies RoPE itself (models/packed_rope.py), so this GPTModel has no position embedding
        layer.submodules.self_attention.submodules.core_attention = ModuleSpec(
            module=PackedAttention, params={"rotary_base": rotary_base})
        layer.submodules.mlp.submodules.activation_func = SwiGLU  # with config.use_te_activation_func
        # megatron's WrappedTorchNorm refuses sequence parallelism; ours is the same RMSNorm with the
        # weight attribute that makes finalize_model_grads all-reduce its grads over TP (no qk norms: the
        # supported architectures have none)
        layer.submodules.input_layernorm = layer.submodules.pre_mlp_layernorm = RMSNorm
        spec = TransformerBlockSubmodules(layer_specs=[layer] * get_num_layers_to_build(config), layer_norm=RMSNorm)
    return GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=dims.padded_vocab_size(tp_size),
        max_sequence_length=dims.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=dims.tie_word_embeddings,
        position_embedding_type="rope" if use_transformer_engine() else "none",
        rotary_base=rotary_base,
    )
