"""Trainer side of weight sync: broadcast full HF-named tensors to every generation server.

    group = init_weight_update_group(client, "127.0.0.1", port, "weight_update_group", "gloo")
    stats = broadcast_weights(group, client, named_tensors, weight_version="3")

The caller (the engine's rank that holds the gathered weights) feeds a plain
iterable of (hf_name, full tensor); TP gathering and the HF <-> Megatron
name map live in the engine. The trainer is rank 0 of the group; server i
(tp_size ranks each) is ranks 1 + i * tp_size ... (SGLang's `rank_offset +
tp_rank`).

One update: pause every server (SGLang's /pause_generation, mode "abort" by
default: running requests finish as "abort" and the rollout manager sends
them again after the update, so no sample mixes two weight versions); then
per bucket of at most `bucket_bytes` one /update_weights_from_distributed
call per server (names/dtypes/shapes), issued concurrently with the
broadcasts of that bucket's tensors, in the same order; the next bucket
starts only when every server has answered, so no buffer a server may still
read is reused. The last bucket carries `weight_version`; then caches are
flushed, generation continues, and every server's version is checked.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

from areal_mega.rollout.client import GenerationClient
from areal_mega.weight_sync.group import join_group

DEFAULT_BUCKET_BYTES = 512 * 2**20


@dataclass
class WeightUpdateGroup:
    """The trainer's handle: the process group (trainer = rank 0) and where its tensors must live."""

    pg: dist.ProcessGroup
    group_name: str
    backend: str
    world_size: int
    device: torch.device


def _as_client(client_or_urls, api_key: str | None = None) -> GenerationClient:
    if isinstance(client_or_urls, GenerationClient):
        return client_or_urls
    return GenerationClient(list(client_or_urls), api_key=api_key)


def _in_thread(fn, *args) -> Future:
    """Run a blocking call in a daemon thread (a hung rendezvous must not block interpreter exit)."""
    fut: Future = Future()

    def run():
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # handed to the waiting coroutine
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def init_weight_update_group(
    client_or_urls,
    master_addr: str,
    master_port: int,
    group_name: str = "weight_update_group",
    backend: str = "gloo",
    tp_size: int = 1,
    timeout_s: float = 300.0,
    api_key: str | None = None,
) -> WeightUpdateGroup:
    """Create the group: the trainer hosts the store on master_addr:master_port as rank 0 while every
    server joins through /init_weights_update_group. world_size = 1 + num_servers * tp_size."""
    client = _as_client(client_or_urls, api_key)
    world_size = 1 + len(client.urls) * tp_size

    async def run():
        joined = asyncio.wrap_future(
            _in_thread(join_group, master_addr, master_port, 0, world_size, group_name, backend, timeout_s)
        )
        calls = [asyncio.ensure_future(client.init_weights_update_group(
            url, master_addr, master_port, 1 + i * tp_size, world_size, group_name, backend))
            for i, url in enumerate(client.urls)]
        try:
            done, _ = await asyncio.wait([joined, *calls], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed server call raises here instead of waiting out the rendezvous
            await asyncio.gather(*calls)
            return await joined
        finally:
            await client.close()

    pg = asyncio.run(run())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return WeightUpdateGroup(pg, group_name, backend, world_size, device)


def buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[list]:
    """Group (name, tensor) pairs, in order, into lists of at most `bucket_bytes` (one larger tensor alone)."""
    bucket, size = [], 0
    for name, t in named_tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


def _broadcast_bucket(group: WeightUpdateGroup, bucket: list) -> None:
    for _, t in bucket:
        dist.broadcast(t, group=group.pg, group_src=0)
    if group.device.type == "cuda":
        torch.cuda.synchronize()


def broadcast_weights(
    group: WeightUpdateGroup,
    client_or_urls,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    weight_version: str,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    pause_mode: str | None = "abort",
    api_key: str | None = None,
) -> dict:
    """Send every (hf_name, full tensor) to every server and set their weight version.

    Tensors are sent in the dtype given (the dtype the server runs).
    `pause_mode` None (or "none") skips the pause (when nothing can be generating).
    Returns {"seconds", "gigabytes", "gb_per_s", "num_buckets", "num_tensors"}
    (GB = 1e9 bytes, counted once, not per server).
    """
    client = _as_client(client_or_urls, api_key)
    weight_version = str(weight_version)
    pause_mode = None if pause_mode == "none" else pause_mode

    async def run():
        loop = asyncio.get_running_loop()
        if pause_mode is not None:
            await client.pause_generation(pause_mode)
        nbytes = num_buckets = num_tensors = 0
        t0 = time.perf_counter()
        pending = None
        try:
            for bucket in buckets(named_tensors, bucket_bytes):
                if pending is not None:  # the previous bucket; its version marker rides on the last one
                    await _send(client, group, pending, None, loop)
                pending = [(n, t.detach().to(group.device).contiguous()) for n, t in bucket]
                num_buckets += 1
                num_tensors += len(pending)
                nbytes += sum(t.numel() * t.element_size() for _, t in pending)
            if pending is None:
                raise ValueError("named_tensors: nothing to send")
            await _send(client, group, pending, weight_version, loop)
            seconds = time.perf_counter() - t0
            await client.flush_cache()
        finally:
            if pause_mode is not None:
                await client.continue_generation()
            await client.close()
        versions = await _versions(client)
        if any(v != weight_version for v in versions):
            raise RuntimeError(f"weight version not updated: servers report {versions}, expected {weight_version}")
        return {"seconds": seconds, "gigabytes": nbytes / 1e9, "gb_per_s": nbytes / 1e9 / seconds,
                "num_buckets": num_buckets, "num_tensors": num_tensors}

    return asyncio.run(run())


async def _versions(client: GenerationClient) -> list[str]:
    try:
        return await client.get_weight_versions()
    finally:
        await client.close()


async def _send(client: GenerationClient, group: WeightUpdateGroup, bucket: list, weight_version, loop) -> None:
    """One bucket: HTTP calls to every server and the broadcasts, concurrently; wait for both."""
    names = [n for n, _ in bucket]
    dtypes = [str(t.dtype).removeprefix("torch.") for _, t in bucket]
    shapes = [list(t.shape) for _, t in bucket]
    calls = [asyncio.ensure_future(client.update_weights_from_distributed(
        url, names, dtypes, shapes, group.group_name, weight_version=weight_version)) for url in client.urls]
    sent = loop.run_in_executor(None, _broadcast_bucket, group, bucket)
    results = await asyncio.gather(sent, *calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"weight update bucket ({len(names)} tensors, first {names[0]}) failed: {errors[0]}") \
            from errors[0]
