"""A reference server keeps one weight-update group per name (one per trainer PP stage), as SGLang does:
each stage's group updates its own tensors, the version moves only with the bucket that carries it,
joining a name again replaces that group, and destroying an unknown group is refused."""
import asyncio
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rollout"))
from rollout_refs import greedy_decode  # noqa: E402

from areal_mega.platform.device import free_port  # noqa: E402
from areal_mega.platform.process_group import leave_group  # noqa: E402
from areal_mega.rollout.client import GenerationClient  # noqa: E402
from areal_mega.rollout.launcher import launch_servers  # noqa: E402
from areal_mega.rollout.manager import generate_sync  # noqa: E402
from areal_mega.weight_sync.broadcast import init_weight_update_group, stream_weights  # noqa: E402

PROMPTS = [[5, 6, 7, 8], [20, 21]]


def _call(urls, method: str, *args):
    async def run():
        client = GenerationClient(urls)
        try:
            return await getattr(client, method)(*args)
        finally:
            await client.close()

    return asyncio.run(run())


@pytest.mark.multirank
@pytest.mark.slow
def test_one_group_per_stage_name(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    trainer = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    named = list(trainer.named_parameters())
    half = len(named) // 2
    stages = {"weight_update_group_pp0": named[:half], "weight_update_group_pp1": named[half:]}
    with launch_servers(tiny_qwen2_dir, 1) as pool:
        groups = {name: init_weight_update_group(pool.urls, "127.0.0.1", free_port(), name) for name in stages}
        # a restarted stage-0 sender joins the same name again: the server replaces that group
        leave_group(groups["weight_update_group_pp0"].pg)
        groups["weight_update_group_pp0"] = init_weight_update_group(pool.urls, "127.0.0.1", free_port(),
                                                                     "weight_update_group_pp0")
        _call(pool.urls, "pause_generation", "none")  # opens the update the two stages then fill
        stream_weights(groups["weight_update_group_pp0"], pool.urls, stages["weight_update_group_pp0"], None, 4096)
        assert _call(pool.urls, "get_weight_versions") == ["default"]  # stage 0 alone does not move the version
        # the sync fails here, leaving the server's update session open (SGLang then refuses to begin
        # another): the next sync's pause closes it and opens its own
        _call(pool.urls, "pause_generation", "none")
        stream_weights(groups["weight_update_group_pp0"], pool.urls, stages["weight_update_group_pp0"], None, 4096)
        stream_weights(groups["weight_update_group_pp1"], pool.urls, stages["weight_update_group_pp1"], "5", 4096)
        assert _call(pool.urls, "get_weight_versions") == ["5"]
        out = generate_sync(GenerationClient(pool.urls), PROMPTS, 1, {"temperature": 0.0, "max_new_tokens": 10,
                                                                       "ignore_eos": True}, quiet=True)
        assert out.response_ids == [greedy_decode(trainer, p, 10) for p in PROMPTS]

        _call(pool.urls, "destroy_weights_update_group", "weight_update_group_pp1")
        with pytest.raises(RuntimeError, match="does not exist"):
            _call(pool.urls, "destroy_weights_update_group", "weight_update_group_pp1")
        for group in groups.values():
            leave_group(group.pg)
