"""Rollout manager: prompts x n samples on the server pool -> one `RolloutBatch`.

Each sample is one `/generate` request (n = 1), so the client can balance and
retry samples one by one. A sample that comes back with finish_reason
"abort" (a server paused for a weight update) is sent again from scratch, up
to `abort_retries` times, so no kept sample mixes two weight versions; after
that it is kept as "abort" and the trainer decides.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.protocol import Sample

FORMAT_VERSION = 1


@dataclass
class RolloutBatch:
    """Per-sample lists (length num_prompts x n); samples of one prompt are consecutive.

    prompt_index: which prompt (0..num_prompts-1); prompt_ids / response_ids:
    token ids (response includes the stop token when finish_reason is "stop");
    rollout_logprobs: one float per response token, from the server's
    sampling distribution; finish_reasons: "stop" / "length" / "abort";
    weight_versions: the server's weight version that generated the sample.
    """

    prompt_index: list[int] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)
    rollout_logprobs: list[list[float]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    weight_versions: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_index)

    @property
    def response_lengths(self) -> list[int]:
        return [len(r) for r in self.response_ids]

    def save(self, path: str | Path) -> None:
        """Write the batch as one JSON file (so rollout and training can run apart)."""
        Path(path).write_text(json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}))

    @classmethod
    def load(cls, path: str | Path) -> "RolloutBatch":
        """Read a batch written by `save`; errors name the file and the bad field."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a rollout batch JSON file: {e}") from None
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{path}: missing or unknown format_version (expected {FORMAT_VERSION})")
        names = {f for f in cls.__dataclass_fields__}
        if set(data) != names:
            raise ValueError(f"{path}: fields {sorted(set(data) ^ names)} missing or unexpected")
        batch = cls(**data)
        n = len(batch.prompt_index)
        for name in names - {"metrics"}:
            if len(getattr(batch, name)) != n:
                raise ValueError(f"{path}: field {name} has {len(getattr(batch, name))} entries, expected {n}")
        for i, (r, lp) in enumerate(zip(batch.response_ids, batch.rollout_logprobs)):
            if len(r) != len(lp):
                raise ValueError(f"{path}: sample {i}: {len(r)} response tokens but {len(lp)} rollout_logprobs")
        return batch


def _parse(sample: Sample) -> tuple[list[int], list[float], str, str]:
    """One `Sample` (any backend) -> (response ids, logprobs, finish type, weight version)."""
    return sample.output_ids, sample.output_logprobs, sample.finish_reason, sample.weight_version


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def generate(
    client: GenerationClient,
    prompts: list[list[int]],
    n: int,
    sampling_params: dict,
    quiet: bool = False,
    abort_retries: int = 3,
) -> RolloutBatch:
    """Generate `n` samples for each prompt (token ids); returns them prompt-major in a RolloutBatch.

    `sampling_params` are in SGLang's names (temperature, top_p, top_k,
    max_new_tokens, stop_token_ids, ignore_eos...; the client's protocol
    translates them for its backend); its "n", if any, is replaced by 1 per
    request. A `sampling_seed` S gives sample k (prompt-major order) the seed
    S + k, so a batch is reproducible whatever server serves it. metrics: gen_tokens_per_s, latency_p50/p90/p99_s, num_samples,
    gen_tokens, num_aborted (kept as abort), num_abort_retries, wall_s.
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    params = {**sampling_params, "n": 1}
    latencies: list[float] = []
    retried = [0]
    bar = tqdm(total=len(prompts) * n, desc="rollout", unit="sample", disable=quiet, delay=2.0)  # shown after 2 s

    async def one(prompt: list[int], k: int):
        sample_params = params
        if params.get("sampling_seed") is not None:  # one seed per sample, reproducible across restarts
            sample_params = {**params, "sampling_seed": params["sampling_seed"] + k}
        for _ in range(abort_retries + 1):
            t0 = time.monotonic()
            ids, lps, reason, version = _parse(await client.generate(prompt, sample_params, return_logprob=True))
            latencies.append(time.monotonic() - t0)
            if reason != "abort":
                break
            retried[0] += 1
        bar.update(1)
        return ids, lps, reason, version

    t0 = time.monotonic()
    try:
        results = await asyncio.gather(*(one(p, i * n + j) for i, p in enumerate(prompts) for j in range(n)))
    finally:
        bar.close()
    wall = time.monotonic() - t0
    batch = RolloutBatch()
    for k, (ids, lps, reason, version) in enumerate(results):
        i = k // n
        batch.prompt_index.append(i)
        batch.prompt_ids.append(list(prompts[i]))
        batch.response_ids.append(ids)
        batch.rollout_logprobs.append(lps)
        batch.finish_reasons.append(reason)
        batch.weight_versions.append(version)
    gen_tokens = sum(batch.response_lengths)
    batch.metrics = {
        "num_samples": len(batch),
        "gen_tokens": gen_tokens,
        "gen_tokens_per_s": gen_tokens / wall if wall > 0 else 0.0,
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p90_s": _percentile(latencies, 0.9),
        "latency_p99_s": _percentile(latencies, 0.99),
        "num_aborted": batch.finish_reasons.count("abort"),
        "num_abort_retries": retried[0],
        "wall_s": wall,
    }
    return batch


def generate_sync(client: GenerationClient, prompts: list[list[int]], n: int, sampling_params: dict,
                  quiet: bool = False, abort_retries: int = 3) -> RolloutBatch:
    """`generate` from synchronous code (runs its own event loop; not from inside a running loop)."""

    async def run():
        try:
            return await generate(client, prompts, n, sampling_params, quiet=quiet, abort_retries=abort_retries)
        finally:
            await client.close()

    return asyncio.run(run())
