"""Rollout on generation servers speaking SGLang's HTTP protocol (v0.5.23).

client (GenerationClient: balanced, retrying, async), manager (prompts x n ->
RolloutBatch), launcher (start SGLang or reference servers), server (the
reference CPU server on transformers), config (RolloutConfig).
"""
from areal_mega.rollout.client import AllServersDownError, GenerationClient
from areal_mega.rollout.config import RolloutConfig
from areal_mega.rollout.launcher import ServerPool, ServerStartError, launch_servers
from areal_mega.rollout.manager import RolloutBatch, generate, generate_sync

__all__ = [
    "AllServersDownError", "GenerationClient", "RolloutBatch", "RolloutConfig", "ServerPool", "ServerStartError",
    "generate", "generate_sync", "launch_servers",
]
