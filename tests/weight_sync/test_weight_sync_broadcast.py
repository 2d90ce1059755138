"""Weight sync end to end: this process is the trainer (rank 0), two reference servers are subprocesses."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rollout"))
from rollout_refs import greedy_decode, response_logprobs  # noqa: E402

from areal_mega.platform.device import free_port  # noqa: E402
from areal_mega.rollout.client import GenerationClient  # noqa: E402
from areal_mega.rollout.launcher import launch_servers  # noqa: E402
from areal_mega.rollout.manager import generate_sync  # noqa: E402
from areal_mega.weight_sync.broadcast import broadcast_weights, buckets, init_weight_update_group  # noqa: E402

PROMPTS = [[5, 6, 7, 8], [20, 21], [40, 41, 42, 43, 44, 45]]


def test_buckets_keep_order_and_size():
    tensors = [(f"t{i}", torch.zeros(n, dtype=torch.float32)) for i, n in enumerate([10, 10, 30, 5, 1, 100])]
    got = list(buckets(tensors, bucket_bytes=80))
    assert [[n for n, _ in b] for b, _ in got] == [["t0", "t1"], ["t2"], ["t3", "t4"], ["t5"]]
    assert [last for _, last in got] == [False, False, False, True]
    assert [n for b, _ in got for n, _ in b] == [n for n, _ in tensors]


def test_buckets_stream_holding_one_bucket_and_one_tensor():
    """A bucket goes out when the next tensor would overflow it: the source is read only one tensor ahead."""
    pulled = []

    def source():
        for i in range(6):
            pulled.append(i)
            yield f"t{i}", torch.zeros(10, dtype=torch.float32)  # 40 bytes each; 2 per 80-byte bucket

    for k, (bucket, _) in enumerate(buckets(source(), bucket_bytes=80)):
        assert len(pulled) == min(2 * k + 3, 6)  # this bucket's two tensors + the one that did not fit


@pytest.mark.multirank
@pytest.mark.slow
def test_broadcast_makes_servers_match_perturbed_trainer(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    trainer = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32).eval()
    original = [greedy_decode(trainer, p, 12) for p in PROMPTS]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    expected = [greedy_decode(trainer, p, 12) for p in PROMPTS]
    assert expected != original, "perturbation too small to tell the weights apart"

    with launch_servers(tiny_qwen2_dir, 2) as pool:
        client = GenerationClient(pool.urls)
        params = {"temperature": 0.0, "max_new_tokens": 12, "ignore_eos": True}
        before = generate_sync(client, PROMPTS, 2, params, quiet=True)
        assert before.response_ids == [r for r in original for _ in range(2)]
        assert set(before.weight_versions) == {"default"}

        # a name of its own: torch keeps process-group names per process, and an earlier test in this pytest
        # process (the vLLM sync test) may still hold "weight_update_group"
        group = init_weight_update_group(client, "127.0.0.1", free_port(), "perturbed_trainer_group", "gloo")
        assert group.world_size == 3
        # named_parameters skips the tied lm_head.weight, as a Qwen 0.5B/1.5B trainer must;
        # a small bucket size forces several buckets.
        stats = broadcast_weights(group, client, list(trainer.named_parameters()), weight_version="1",
                                  bucket_bytes=64 * 1024)
        assert stats["num_buckets"] > 1 and stats["num_tensors"] == len(list(trainer.parameters()))
        assert stats["num_broadcasts"] == stats["num_buckets"]  # flattened buckets: one broadcast each
        assert stats["gb_per_s"] > 0

        after = generate_sync(client, PROMPTS, 2, params, quiet=True)
        assert after.response_ids == [r for r in expected for _ in range(2)]
        assert set(after.weight_versions) == {"1"}
        for k, i in enumerate(after.prompt_index):
            ref = response_logprobs(trainer, PROMPTS[i], after.response_ids[k])
            assert max(abs(a - b) for a, b in zip(after.rollout_logprobs[k], ref)) < 1e-4

        # An update during a rollout: running requests are aborted by the pause and sent again,
        # so every sample is wholly of one version.
        # long enough that the update lands mid-rollout: since the reference server's static-cache decode,
        # 4 x 300 tokens of this model finished before a pause 0.2 s in
        v1 = [greedy_decode(trainer, p, 480) for p in PROMPTS]
        with torch.no_grad():
            for p in trainer.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        v2 = [greedy_decode(trainer, p, 480) for p in PROMPTS]
        long = {**params, "max_new_tokens": 480}
        rollout_client = GenerationClient(pool.urls)
        with ThreadPoolExecutor(1) as ex:
            running = ex.submit(generate_sync, rollout_client, PROMPTS, 16, long, True)
            while sum(s.outstanding_tokens for s in rollout_client.servers) == 0:
                time.sleep(0.01)
            time.sleep(0.05)
            stats = broadcast_weights(group, client, list(trainer.named_parameters()), weight_version="2")
            batch = running.result()
        assert stats["num_buckets"] == 1
        assert batch.metrics["num_abort_retries"] > 0 and set(batch.finish_reasons) == {"length"}
        for k, i in enumerate(batch.prompt_index):
            want = {"1": v1, "2": v2}[batch.weight_versions[k]][i]
            assert batch.response_ids[k] == want


@pytest.mark.multirank
@pytest.mark.slow
def test_server_killed_mid_sync_fails_naming_it_within_the_timeout(tiny_qwen2_dir):
    """A server dies between two buckets of an update: the update fails well within weight_sync.timeout_s,
    naming that server, instead of waiting on its broadcast."""
    import os
    import signal

    from transformers import AutoModelForCausalLM

    from areal_mega.weight_sync.broadcast import WeightSyncError

    named = list(AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), dtype=torch.float32).named_parameters())
    timeout_s = 60.0
    with launch_servers(tiny_qwen2_dir, 2) as pool:
        # its own group name: this pytest process still holds the other test's group
        group = init_weight_update_group(pool.urls, "127.0.0.1", free_port(), "killed_server_group", "gloo",
                                         timeout_s=timeout_s)

        def killing_after(k):
            for i, item in enumerate(named):
                if i == k:
                    os.killpg(pool.procs[1].pid, signal.SIGKILL)
                    pool.procs[1].wait()
                yield item

        t0 = time.monotonic()
        with pytest.raises(WeightSyncError) as err:
            broadcast_weights(group, pool.urls, killing_after(4), weight_version="1", bucket_bytes=4096)
        elapsed = time.monotonic() - t0
    text = str(err.value)
    assert pool.urls[1] in text and f"servers not answering /health: ['{pool.urls[1]}']" in text, text
    assert elapsed < timeout_s / 2, f"{elapsed:.1f} s: {text}"
