"""RolloutStream against a real reference server: the staleness bound, interrupted requests
continuing on new weights with per-token versions, and eta = 0 reproducing the synchronous rollout."""
import asyncio
import time

import pytest

from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate_sync
from areal_mega.rollout.stream import RolloutStream

N = 4
# long enough that a batch outlives the test's pause before each weight update (see below)
PARAMS = {"temperature": 1.0, "max_new_tokens": 400, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir):
    with launch_servers(tiny_qwen2_dir, 1) as pool:
        yield pool.urls[0]


def _pull(k):
    """Batch k: 3 prompts, a seed per batch (as the trainer's rollout does per step)."""
    prompts = [[5 + (3 * k + i) % 40, 6, 7] for i in range(3)]
    return prompts, {**PARAMS, "sampling_seed": 1000 + 17 * k}, {"k": k}


def _update_weights(url, version):
    """What a weight sync does to the servers: pause (abort running requests), new version, continue."""
    async def run():
        client = GenerationClient([url])
        try:
            await client.pause_generation("abort")
            await asyncio.sleep(0.05)
            await client.update_weight_version(str(version))
            await client.continue_generation()
        finally:
            await client.close()
    asyncio.run(run())


@pytest.mark.slow
def test_staleness_bound_and_interrupted_requests(server):
    eta, steps = 2, 5
    stream = RolloutStream(GenerationClient([server]), n=N, max_staleness=eta, next_batch=_pull).start()
    interrupted, ran_ahead = [], 0
    try:
        for k in range(steps):
            batch = stream.get(k, timeout_s=300)
            assert batch.tag == {"k": k} and batch.index == k
            assert len(batch.samples) == 3 * N
            assert batch.submitted_version >= k - eta
            ran_ahead += batch.submitted_version < k
            for s in batch.samples:
                assert len(s.response_ids) == len(s.logprobs) == len(s.token_versions) == 400
                assert s.finish_reason == "length"
                assert min(s.token_versions) >= k - eta  # never more than eta versions behind the trainer
                assert max(s.token_versions) <= k
                assert s.token_versions == sorted(s.token_versions)
                assert all(lp <= 0 for lp in s.logprobs)
                if s.interruptions:
                    interrupted.append(s)
            # "training" while the next batch generates: from the second update on, a batch submitted at the
            # previous update has run for this long, far less than its 400 tokens take, so it is interrupted
            time.sleep(0.15)
            _update_weights(server, k + 1)  # the trainer trained on batch k and synced version k + 1
            stream.set_version(k + 1)
    finally:
        stream.close()
    assert ran_ahead > 0, "generation never ran ahead of training"
    assert interrupted, "no request was in flight during a weight update"
    # an interrupted response carries its own version before and after the update
    assert any(len(set(s.token_versions)) > 1 for s in interrupted)


@pytest.mark.slow
def test_eta_zero_is_the_synchronous_rollout(server):
    stream = RolloutStream(GenerationClient([server]), n=N, max_staleness=0, next_batch=_pull).start()
    try:
        got = []
        for k in range(2):
            batch = stream.get(k, timeout_s=300)
            assert batch.submitted_version == k  # submitted only once the previous update landed
            assert all(s.interruptions == 0 for s in batch.samples)
            got.append(batch)
            stream.set_version(k + 1)
    finally:
        stream.close()
    for k, batch in enumerate(got):
        prompts, params, _ = _pull(k)
        want = generate_sync(GenerationClient([server]), prompts, N, params, quiet=True)
        assert [s.response_ids for s in batch.samples] == want.response_ids
        got_lp = [x for s in batch.samples for x in s.logprobs]
        assert got_lp == pytest.approx([x for lp in want.rollout_logprobs for x in lp], abs=1e-5)


def test_arguments_and_failures_are_reported():
    with pytest.raises(ValueError, match="max_staleness"):
        RolloutStream(GenerationClient(["http://127.0.0.1:9"]), n=2, max_staleness=-1, next_batch=_pull)
    stream = RolloutStream(GenerationClient(["http://127.0.0.1:9"], max_retries=0), n=1, max_staleness=0,
                           next_batch=_pull).start()
    try:
        with pytest.raises(RuntimeError, match="rollout stream failed"):
            stream.get(0, timeout_s=60)
    finally:
        stream.close()


class SlowClient:
    """Every request takes `seconds` and returns one token (a stand-in for a server, timing only)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def generate(self, prompt, params):
        from areal_mega.rollout.protocol import Sample

        await asyncio.sleep(self.seconds)
        return Sample([1], [-0.5], "length", "0")

    async def close(self):
        pass


def test_generation_idle_time_excludes_generating():
    """eta = 0, generation 0.5 s a batch, "training" 0.5 s: the servers idle only while the trainer trains
    (3 x 0.5 s); the old clock also counted each batch's own generation (3 s)."""
    stream = RolloutStream(SlowClient(0.5), n=2, max_staleness=0, next_batch=_pull).start()
    try:
        for k in range(3):
            stream.get(k, timeout_s=60)
            time.sleep(0.5)
            stream.set_version(k + 1)
        stream.get(3, timeout_s=60)
    finally:
        stream.close()
    assert 1.2 < stream.wait_s["generation_idle"] < 2.2, stream.wait_s
