"""Rollout on generation servers: SGLang (v0.5.23), vLLM (0.32) or the reference CPU server.

client (GenerationClient: balanced, retrying, async; one interface over every
backend), protocol / protocol_sglang / protocol_vllm (each backend's routes and
bodies, no I/O), manager (prompts x n -> RolloutBatch), launcher (start
SGLang, vLLM or reference servers), server + reference_engine (the reference
CPU server on transformers), vllm_transfer (our weight-transfer engine inside
vLLM's processes), config (RolloutConfig).

Dependencies: rollout -> platform (the weight-update group its servers join),
models; never weight_sync or the trainer. weight_sync sits above it and drives
the servers through GenerationClient.
"""
from areal_mega.rollout.client import AllServersDownError, GenerationClient
from areal_mega.rollout.config import RolloutConfig
from areal_mega.rollout.launcher import ServerPool, ServerStartError, launch_servers
from areal_mega.rollout.manager import RolloutBatch, generate, generate_sync

__all__ = [
    "AllServersDownError", "GenerationClient", "RolloutBatch", "RolloutConfig", "ServerPool", "ServerStartError",
    "generate", "generate_sync", "launch_servers",
]
