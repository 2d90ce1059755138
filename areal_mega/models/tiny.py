"""Tiny Qwen2/Llama checkpoints and a character-level tokenizer, built on the spot.

No model can be downloaded here, so tests, benchmarks and the CPU quickstart
build their own HF directories (config.json + safetensors + tokenizer) with
these functions. The tokenizer is a WordLevel vocabulary over single
characters; load it back with `load_tokenizer` (PreTrainedTokenizerFast),
since transformers' AutoTokenizer may reinterpret it as Qwen2's byte-level
tokenizer and drop spaces.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

PAD, EOS, BOS = "<pad>", "</s>", "<s>"
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer(out_dir: str | Path, chars: str = CHARS):
    """Write a character-level fast tokenizer to `out_dir`; returns it loaded."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, BOS: 2}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=BOS)
    fast.save_pretrained(str(out_dir))
    return load_tokenizer(out_dir)


def _is_word_level(model_dir: Path) -> bool:
    """True for a tokenizer.json whose model is WordLevel (ours), whatever tokenizer_class the
    transformers version that saved it wrote (older ones: PreTrainedTokenizerFast; 5.24:
    TokenizersBackend, which AutoTokenizer then reads as the model type's byte-level BPE)."""
    path = model_dir / "tokenizer.json"
    return path.is_file() and json.loads(path.read_text()).get("model", {}).get("type") == "WordLevel"


def load_tokenizer(model_dir: str | Path):
    """Load a tokenizer saved in `model_dir` faithfully (see module docstring)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if _is_word_level(Path(model_dir)):
        return PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    return AutoTokenizer.from_pretrained(str(model_dir))


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "qwen2",
    vocab_size: int = 101,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    tie_word_embeddings: bool = True,
    max_position_embeddings: int = 512,
    seed: int = 0,
    init_std: float = 0.02,
):
    """Write a randomly initialised HF model (`qwen2` or `llama`) to `out_dir`; returns it.

    Weights are drawn with std `init_std` (biases included, so a test can see a
    missing or misplaced bias) under `seed`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    if arch == "qwen2":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    elif arch == "llama":
        config, cls = LlamaConfig(**common, attention_bias=False, mlp_bias=False), LlamaForCausalLM
    else:
        raise ValueError(f"unknown tiny arch '{arch}' (qwen2 or llama)")
    torch.manual_seed(seed)
    model = cls(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, init_std)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return model
