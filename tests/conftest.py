"""Shared fixtures: tiny HF checkpoints built on the spot, env for CPU runs."""
import os

import torch  # does not import triton, so TRITON_INTERPRET can still be chosen below

# Triton compiles on CUDA and runs under its interpreter on CPU (set before triton is imported)
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    """A tiny tied-embedding Qwen2 with the character tokenizer."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("tiny_qwen2")
    build_char_tokenizer(d)
    build_tiny_model(d, arch="qwen2", tie_word_embeddings=True)
    return d


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny untied Llama with the character tokenizer."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("tiny_llama")
    build_char_tokenizer(d)
    build_tiny_model(d, arch="llama", tie_word_embeddings=False, num_kv_heads=4)
    return d
