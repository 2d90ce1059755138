"""Batched requests to the reference server: a rollout's n = 1 requests travel as one /generate per server,
return what per-sample requests return, and a chunk on a server that dies is sent again to another."""
import asyncio
import os
import signal

import pytest

from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate, generate_sync

PROMPTS = [[5 + i, 6 + i % 3, 7] for i in range(16)]
PARAMS = {"temperature": 1.0, "max_new_tokens": 12, "stop_token_ids": [1], "sampling_seed": 77}


class CallCounter(GenerationClient):
    """Counts the /generate calls it makes, by server."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def _call(self, url, call, timeout_s=None):
        if call.path == "/generate":
            self.calls.append(url)
        return await super()._call(url, call, timeout_s)


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir):
    with launch_servers(tiny_qwen2_dir, 1) as pool:
        yield pool.urls[0]


def test_a_rollout_is_one_request_with_the_same_samples(server):
    batched = CallCounter([server], backend="reference")
    single = CallCounter([server], backend="reference", batch_requests=False)
    a = generate_sync(batched, PROMPTS, 8, PARAMS, quiet=True)
    b = generate_sync(single, PROMPTS, 8, PARAMS, quiet=True)
    assert len(batched.calls) == 1 and len(single.calls) == 128
    assert a.response_ids == b.response_ids and a.finish_reasons == b.finish_reasons  # per-sample seeds S + k
    assert a.weight_versions == b.weight_versions and a.prompt_index == b.prompt_index
    for x, y in zip(a.rollout_logprobs, b.rollout_logprobs):
        assert max((abs(p - q) for p, q in zip(x, y)), default=0.0) < 1e-5
    assert len({tuple(r) for r in a.response_ids}) > 16  # the 8 samples of a prompt differ


def test_a_bad_prompt_fails_its_chunk_with_the_server_message(server):
    client = GenerationClient([server], backend="reference")
    with pytest.raises(ValueError, match="100000"):
        generate_sync(client, [[5, 6], [5, 100000]], 2, PARAMS, quiet=True)
    assert len(generate_sync(client, [[5, 6]], 2, PARAMS, quiet=True)) == 2  # the server is fine


@pytest.mark.slow
def test_one_chunk_per_server_and_a_dead_servers_chunk_moves(tiny_qwen2_dir):
    params = {"temperature": 1.0, "max_new_tokens": 48, "ignore_eos": True}
    with launch_servers(tiny_qwen2_dir, 2) as pool:
        client = CallCounter(pool.urls, backend="reference", health_interval_s=60.0)
        both = generate_sync(client, PROMPTS[:8], 8, params, quiet=True)
        assert sorted(client.calls) == sorted(pool.urls) and len(both) == 64

        async def run():
            client.calls.clear()
            task = asyncio.ensure_future(generate(client, PROMPTS[:8], 8, params, quiet=True))
            while not all(s.outstanding_tokens for s in client.servers):  # both chunks in flight
                await asyncio.sleep(0.005)
            os.killpg(pool.procs[0].pid, signal.SIGKILL)
            batch = await task
            await client.close()
            return batch

        batch = asyncio.run(run())
        assert len(batch) == 64 and all(len(r) == 48 for r in batch.response_ids)
        assert batch.prompt_index == [i for i in range(8) for _ in range(8)]
        assert not client.servers[0].healthy and client.calls.count(pool.urls[1]) == 2  # its own + the moved one
