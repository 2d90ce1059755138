"""Trainer side of weight sync: broadcast full HF-named tensors to every generation server.

    group = init_weight_update_group(client, "127.0.0.1", port, "weight_update_group", "gloo")
    stats = broadcast_weights(group, client, named_tensors, weight_version="3")

The caller (the rank that holds its stage's gathered weights) feeds a plain
iterable of (hf_name, full tensor); TP gathering and the HF <-> Megatron
name map live in the engine. The sender is rank 0 of the group; server i
(tp_size ranks each) is ranks 1 + i * tp_size ... (SGLang's `rank_offset +
tp_rank`; SGLang broadcasts from src 0 of the group named in the request).

One update: pause every server (SGLang's /pause_generation, mode "abort" by
default: running requests finish as "abort" and the rollout manager sends
them again after the update, so no sample mixes two weight versions); then
`stream_weights`: per bucket of at most `bucket_bytes` one
/update_weights_from_distributed call per server (names/dtypes/shapes and
load_format "flattened_bucket"), issued concurrently with one broadcast of
the bucket's tensors packed into one byte buffer (rollout/flat_bucket.py;
`flatten=False`: one broadcast per tensor, in the same order, SGLang's
original protocol); the next bucket starts only when every server has
answered, so no buffer a server may still read is reused. A bucket goes out
as soon as the next tensor would overflow it, so the sender holds at most one
bucket, its packed copy (none for a one-tensor bucket) and that one tensor. The last bucket carries `weight_version`; then caches are
flushed, generation continues, and every server's version is checked. A
failed update leaves the servers paused (they hold part of the new weights
and must not serve them) and raises naming the servers that failed.

Time-outs: the group's collectives, each HTTP call and each bucket as a whole
are bounded by `timeout_s` (WeightSyncConfig.timeout_s); broadcasts run in
daemon threads, so a broadcast stuck on a dead peer never blocks the error
or the interpreter's exit.

Pipeline parallelism (weight_sync/stages.py): one group per PP stage, as
slime does. Stage s's sender (its tp 0, dp 0 rank) hosts the group
`{group_name}_pp{s}` as its rank 0 on its own host and makes that group's
HTTP calls itself (join and /update_weights_from_distributed with
`group_name`), so its stage streams straight from its memory to the
servers; every server joins every stage's group with the same rank_offset
(SGLang keeps one group per name). The controller (global rank 0) pauses
before and resumes after. Stages go in turn (stage s+1 starts when every rank
agreed that stage s succeeded): SGLang serialises weight updates per server
(`is_pause_cond`), so stages sending at once could leave server A receiving
stage 0 while server B receives stage 1, each broadcast waiting for the other
server. Only the last stage's final bucket carries the version, so a server
reports the new version only once every stage has landed.
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

from areal_mega.platform.process_group import DEFAULT_TIMEOUT_S, join_group
from areal_mega.rollout import flat_bucket
from areal_mega.rollout.client import GenerationClient

DEFAULT_BUCKET_BYTES = 512 * 2**20


class WeightSyncError(RuntimeError):
    """A weight update failed; the message names the servers (URLs) and the step that failed."""


@dataclass
class WeightUpdateGroup:
    """The sender's handle: the process group (sender = rank 0) and where its tensors must live."""

    pg: dist.ProcessGroup
    group_name: str
    backend: str
    world_size: int
    device: torch.device
    timeout_s: float = DEFAULT_TIMEOUT_S


def _as_client(client_or_urls, api_key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> GenerationClient:
    if isinstance(client_or_urls, GenerationClient):
        return client_or_urls
    return GenerationClient(list(client_or_urls), api_key=api_key, timeout_s=timeout_s)


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


def describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def init_weight_update_group(
    client_or_urls,
    master_addr: str,
    master_port: int,
    group_name: str = "weight_update_group",
    backend: str = "gloo",
    tp_size: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    api_key: str | None = None,
) -> WeightUpdateGroup:
    """Create the group: this process hosts the store on master_addr:master_port as rank 0 while every
    server joins through /init_weights_update_group. world_size = 1 + num_servers * tp_size.

    Raises WeightSyncError naming the address, the port and the servers that failed or did not
    answer within `timeout_s`.
    """
    client = _as_client(client_or_urls, api_key, timeout_s)
    world_size = 1 + len(client.urls) * tp_size
    where = f"weight-update group {group_name!r} at tcp://{master_addr}:{master_port}"

    async def run():
        joined = asyncio.wrap_future(
            _in_thread(join_group, master_addr, master_port, 0, world_size, group_name, backend, timeout_s)
        )
        calls = {url: asyncio.ensure_future(client.init_weights_update_group(
            url, master_addr, master_port, 1 + i * tp_size, world_size, group_name, backend))
            for i, url in enumerate(client.urls)}
        try:
            done, pending = await asyncio.wait([joined, *calls.values()], timeout=timeout_s + 10,
                                               return_when=asyncio.FIRST_EXCEPTION)
            failed = any(t.exception() for t in done)
            waiting = "still waiting" if failed else f"not finished within {timeout_s + 10:g} s"
            problems = [f"{url}: {describe_error(t.exception())}" for url, t in calls.items()
                        if t.done() and t.exception()]
            problems += [f"{url}: {waiting}" for url, t in calls.items() if not t.done()]
            if joined.done() and joined.exception():
                problems.insert(0, f"this side: {describe_error(joined.exception())}")
            elif pending and not failed:
                problems.insert(0, f"this side: rendezvous {waiting}")
            if problems:
                raise WeightSyncError(f"{where} (world size {world_size}): " + "; ".join(problems))
            return joined.result()
        finally:
            for t in calls.values():
                t.cancel()
            await client.close()

    pg = asyncio.run(run())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return WeightUpdateGroup(pg, group_name, backend, world_size, device, timeout_s)


def buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[tuple[list, bool]]:
    """Group (name, tensor) pairs, in order, into lists of at most `bucket_bytes` (one larger tensor alone).

    Yields (bucket, is_last). A bucket is yielded as soon as the next tensor would overflow it, so
    at most one bucket and that one tensor are held at a time.
    """
    bucket, size = [], 0
    for name, t in named_tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket, False
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket, True


def _broadcast_bucket(group: WeightUpdateGroup, tensors: list[torch.Tensor], flatten: bool) -> None:
    """One broadcast per tensor, or (flatten) one of the bucket packed into one uint8 buffer."""
    if group.device.type == "cuda":
        torch.cuda.set_device(group.device)  # a new thread starts on device 0
    for t in [flat_bucket.pack(tensors)] if flatten else tensors:
        dist.broadcast(t, group=group.pg, group_src=0)
    if group.device.type == "cuda":
        torch.cuda.synchronize()


def stream_weights(
    group: WeightUpdateGroup,
    client_or_urls,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    weight_version: str | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    api_key: str | None = None,
    flatten: bool = True,
) -> dict:
    """Send every (hf_name, full tensor) to every server, bucket by bucket; no pause, no resume.

    The last bucket carries `weight_version` (None: the version stays). Tensors go in the
    dtype given. `flatten`: one broadcast per bucket (SGLang's load_format "flattened_bucket", see
    rollout/flat_bucket.py), else one per tensor. Returns {"seconds", "bytes", "num_buckets",
    "num_tensors", "num_broadcasts"}.
    """
    client = _as_client(client_or_urls, api_key, group.timeout_s)

    async def run():
        try:
            return await stream(client, group, named_tensors, weight_version, bucket_bytes, flatten)
        finally:
            await client.close()

    return asyncio.run(run())


async def stream(client: GenerationClient, group: WeightUpdateGroup, named_tensors, weight_version,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, flatten: bool = True) -> dict:
    """`stream_weights` inside a running event loop, on a client the caller keeps open (and closes)."""
    nbytes = num_buckets = num_tensors = 0
    t0 = time.perf_counter()
    on_device = ((n, t.detach().to(group.device).contiguous()) for n, t in named_tensors)
    for bucket, last in buckets(on_device, bucket_bytes):
        await _send(client, group, bucket, weight_version if last else None, num_buckets, flatten)
        num_buckets += 1
        num_tensors += len(bucket)
        nbytes += sum(t.numel() * t.element_size() for _, t in bucket)
        del bucket
    if num_buckets == 0:
        raise ValueError("named_tensors: nothing to send")
    return {"seconds": time.perf_counter() - t0, "bytes": nbytes, "num_buckets": num_buckets,
            "num_tensors": num_tensors, "num_broadcasts": num_buckets if flatten else num_tensors}


def broadcast_weights(
    group: WeightUpdateGroup,
    client_or_urls,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    weight_version: str,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    pause_mode: str | None = "abort",
    api_key: str | None = None,
    flatten: bool = True,
) -> dict:
    """Pause, send every (hf_name, full tensor) to every server, set their weight version, resume.

    Tensors are sent in the dtype given (the dtype the server runs); `flatten` as in stream_weights.
    `pause_mode` None (or "none") skips the pause (when nothing can be generating).
    Returns {"seconds", "gigabytes", "gb_per_s", "num_buckets", "num_tensors", "num_broadcasts"}
    (GB = 1e9 bytes, counted once, not per server).
    """
    client = _as_client(client_or_urls, api_key, group.timeout_s)
    weight_version = str(weight_version)

    async def run():
        try:
            await pause(client, pause_mode)
            out = await stream(client, group, named_tensors, weight_version, bucket_bytes, flatten)
            await resume_and_check(client, weight_version)
        finally:
            await client.close()
        return {"seconds": out["seconds"], "gigabytes": out["bytes"] / 1e9,
                "gb_per_s": out["bytes"] / 1e9 / out["seconds"], "num_buckets": out["num_buckets"],
                "num_tensors": out["num_tensors"], "num_broadcasts": out["num_broadcasts"]}

    return asyncio.run(run())


async def pause(client: GenerationClient, pause_mode: str | None) -> None:
    """Pause every server (not for None or "none") and open its weight update (always)."""
    await client.pause_generation(pause_mode or "none")


async def resume_and_check(client: GenerationClient, weight_version: str) -> None:
    """After a whole update: flush caches, then continue generation and check every server reports the
    version (the version was set with the last bucket, so both go at once: one round trip fewer)."""
    await client.flush_cache()
    resumed, versions = await asyncio.gather(client.continue_generation(), client.get_weight_versions(),
                                             return_exceptions=True)
    for outcome in (resumed, versions):
        if isinstance(outcome, BaseException):
            raise outcome
    if any(v != weight_version for v in versions):
        raise WeightSyncError(f"weight version not updated: servers {client.urls} report {versions}, "
                              f"expected {weight_version}")


async def _send(client: GenerationClient, group: WeightUpdateGroup, bucket: list, weight_version,
                index: int, flatten: bool) -> None:
    """One bucket: HTTP calls to every server and the broadcasts, concurrently, within group.timeout_s.

    flatten: the names go by item size, largest first (the flat layout's alignment), and the bucket
    is packed in the broadcasting thread while the servers allocate their receive buffers.
    """
    if flatten:
        bucket = [bucket[i] for i in flat_bucket.aligned_order([t for _, t in bucket])]
    names = [n for n, _ in bucket]
    dtypes = [str(t.dtype).removeprefix("torch.") for _, t in bucket]
    shapes = [list(t.shape) for _, t in bucket]
    load_format = flat_bucket.LOAD_FORMAT if flatten else None
    calls = {url: asyncio.ensure_future(client.update_weights_from_distributed(
        url, names, dtypes, shapes, group.group_name, weight_version=weight_version, load_format=load_format))
        for url in client.urls}
    sent = asyncio.wrap_future(_in_thread(_broadcast_bucket, group, [t for _, t in bucket], flatten))
    done, pending = await asyncio.wait([sent, *calls.values()], timeout=group.timeout_s,
                                       return_when=asyncio.FIRST_EXCEPTION)
    if not pending and not any(t.exception() for t in done):
        return
    if pending and any(t.exception() for t in done):  # let the other calls report for a moment
        _, pending = await asyncio.wait(pending, timeout=min(5.0, group.timeout_s))
    for t in pending:
        t.cancel()
    problems = [f"{url}: {describe_error(t.exception())}" for url, t in calls.items()
                if t.done() and not t.cancelled() and t.exception()]
    problems += [f"{url}: no answer within {group.timeout_s:g} s" for url, t in calls.items() if t in pending]
    if sent.done() and not sent.cancelled() and sent.exception():
        problems.append(f"broadcast: {describe_error(sent.exception())}")
    elif sent in pending:
        problems.append(f"broadcast: not finished within {group.timeout_s:g} s")
    down = [url for url, ok in zip(client.urls, await client.check_health(force=True)) if not ok]
    raise WeightSyncError(
        f"weight update of group {group.group_name!r} failed at bucket {index} ({len(names)} tensors, first "
        f"{names[0]}); servers not answering /health: {down or 'none'}; " + "; ".join(problems))
