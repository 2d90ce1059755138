"""The reference server's decode loop (in process): seeded sampling as its definition gives it, whatever
the batch; one prefill per distinct prompt; finished rows leave the batch; one batch for a quickstart step."""
import pytest
import torch
from rollout_refs import greedy_decode, response_logprobs

from areal_mega.rollout.reference_engine import ReferenceEngine, Sample, _filter_top_k_top_p, validate_sampling

EOS = 1


@pytest.fixture(scope="module")
def engine(tiny_qwen2_dir):
    return ReferenceEngine(str(tiny_qwen2_dir))


def _run(engine, samples):
    with engine.model_lock:  # the scheduler thread takes the same lock
        engine._run_batch(samples)
    return [s.future.result(timeout=0) for s in samples]


def _sample(engine, prompt, **params):
    return Sample(list(prompt), validate_sampling({"stop_token_ids": [EOS], **params}, engine.vocab_size))


def seeded_reference(model, prompt, seed, temperature, max_new_tokens, top_k=-1, top_p=1.0):
    """A seeded sample by definition: full recomputation per token, torch.multinomial with the sample's own
    generator over softmax(logits / T) restricted to top-k / top-p; stops after EOS."""
    g = torch.Generator().manual_seed(seed)
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            probs = _filter_top_k_top_p(torch.softmax(logits / temperature, -1)[None], torch.tensor([top_k]),
                                        torch.tensor([top_p]))[0]
            t = int(torch.multinomial(probs, 1, generator=g))
            out.append(t)
            ids.append(t)
            if t == EOS:
                break
    return out


def test_seeded_samples_follow_their_definition_in_a_mixed_batch(engine):
    """Samples of different prompts, lengths, temperatures, top-k/top-p and max_new_tokens, several per prompt
    (shared prefill), some finishing early (rows leaving the batch): each equals its own full-recompute
    reference, token for token, with the logprobs of the temperature-scaled distribution."""
    prompts = [[5, 6, 7], [30], [40, 41, 42, 43, 44, 45, 46], [9, 9]]
    cases = []
    for k in range(16):
        p = dict(temperature=[1.0, 0.7, 1.5][k % 3], max_new_tokens=3 + (5 * k) % 11, sampling_seed=100 + k)
        if k % 4 == 1:
            p["top_k"] = 5
        if k % 5 == 2:
            p["top_p"] = 0.8
        cases.append((prompts[k % 4], p))
    cases.append((prompts[0], dict(temperature=0, max_new_tokens=6)))  # a greedy row in the same batch
    results = _run(engine, [_sample(engine, q, **p) for q, p in cases])
    lengths = {len(r["output_ids"]) for r in results}
    assert len(lengths) > 3  # rows finished at different steps
    for (prompt, p), r in zip(cases, results):
        if p["temperature"] == 0:
            assert r["output_ids"] == greedy_decode(engine.model, prompt, 6, eos_id=EOS)
            continue
        ref = seeded_reference(engine.model, prompt, p["sampling_seed"], p["temperature"], p["max_new_tokens"],
                               p.get("top_k", -1), p.get("top_p", 1.0))
        assert r["output_ids"] == ref, (prompt, p)
        lps = response_logprobs(engine.model, prompt, r["output_ids"], temperature=p["temperature"])
        assert max(abs(a - b) for a, b in zip(r["logprobs"], lps)) < 1e-5
        reason = r["finish_reason"]
        assert reason == ({"type": "stop", "matched": EOS} if ref[-1] == EOS and len(ref) <= p["max_new_tokens"]
                          else {"type": "length", "length": p["max_new_tokens"]})


def test_a_seeded_sample_is_the_same_alone_and_in_a_full_batch(engine):
    """Batch composition does not move a seeded sample: alone, and as one of 128 rows (16 prompts x 8, the
    quickstart's step) whose other rows finish at other steps: the same tokens and logprobs."""
    prompts = [[5 + i, 6 + i % 3, 7] for i in range(16)]
    params = dict(temperature=1.0, max_new_tokens=16)
    full = _run(engine, [_sample(engine, q, sampling_seed=1000 + k, **params)
                         for k, q in enumerate(q for q in prompts for _ in range(8))])
    for k in (0, 37, 127):
        alone = _run(engine, [_sample(engine, prompts[k // 8], sampling_seed=1000 + k, **params)])[0]
        assert alone["output_ids"] == full[k]["output_ids"], k
        # a batch of 1 and of 128 take other GEMM kernels: logprobs agree to float32 rounding
        assert max(abs(a - b) for a, b in zip(alone["logprobs"], full[k]["logprobs"])) < 1e-5, k


def test_one_prefill_per_distinct_prompt_and_finished_rows_leave(engine, monkeypatch):
    """8 samples of each of 2 prompts: the prefill runs on 2 rows; every later forward runs only the rows
    still decoding (a row that stopped is gone by the next step)."""
    sizes = []
    forward = engine._forward

    def spy(ids, mask, pos, cache):
        sizes.append(ids.shape[0])
        return forward(ids, mask, pos, cache)

    monkeypatch.setattr(engine, "_forward", spy)
    samples = [_sample(engine, q, temperature=1.0, max_new_tokens=1 + k, sampling_seed=k)
               for k, q in enumerate([[5, 6, 7]] * 8 + [[30, 31]] * 8)]
    results = _run(engine, samples)
    assert sizes[0] == 2
    for step, rows in enumerate(sizes[1:], start=1):  # forward `step` feeds token `step` of the rows left
        assert rows == sum(len(r["output_ids"]) > step for r in results), (step, sizes)


def test_a_quickstart_step_is_decoded_in_one_batch(tiny_qwen2_dir):
    """128 samples submitted together (16 prompts x 8) run as one batch: the default max_running holds them."""
    engine = ReferenceEngine(str(tiny_qwen2_dir))
    batches = []
    run = engine._run_batch
    engine._run_batch = lambda batch: (batches.append(len(batch)), run(batch))
    with engine.model_lock:  # hold the scheduler until every sample is queued
        samples = [engine.submit([5 + k % 16, 6], validate_sampling({"max_new_tokens": 2}, engine.vocab_size))
                   for k in range(128)]
    for s in samples:
        s.future.result(timeout=120)
    assert batches == [128]


def test_server_threads_reach_the_reference_server_only():
    from areal_mega.rollout.config import RolloutConfig
    from areal_mega.rollout.launcher import server_command

    cmd = server_command("reference", "m", "127.0.0.1", 1, None, 1, 0.8, 0, num_threads=2)
    assert cmd[cmd.index("--num-threads") + 1] == "2"
    assert "--num-threads" not in server_command("reference", "m", "127.0.0.1", 1, None, 1, 0.8, 0)
    with pytest.raises(ValueError, match="only the reference server"):
        server_command("vllm", "m", "127.0.0.1", 1, None, 1, 0.8, 0, num_threads=2, on_gpu=False)
    with pytest.raises(ValueError, match="rollout.server_threads"):
        RolloutConfig(backend="sglang", server_threads=2)
    with pytest.raises(ValueError, match="rollout.server_threads must be >= 0"):
        RolloutConfig(server_threads=-1)


def test_a_requests_samples_are_queued_together_and_overflow_is_carried(tiny_qwen2_dir):
    """submit_many queues one request's samples as one item, so the live scheduler cannot start a batch
    between them; beyond max_running they start the next batch, first."""
    engine = ReferenceEngine(str(tiny_qwen2_dir), max_running=100)
    batches = []
    run = engine._run_batch
    engine._run_batch = lambda batch: (batches.append(len(batch)), run(batch))
    params = validate_sampling({"max_new_tokens": 2}, engine.vocab_size)
    samples = engine.submit_many([([5 + k % 16, 6], params) for k in range(128)])
    for s in samples:
        s.future.result(timeout=120)
    assert batches == [100, 28]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.submit_many([([5], params), ([500], params)])
    assert engine.waiting.empty()  # nothing of a refused request was queued
