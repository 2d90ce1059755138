"""Weight sync from a pipeline-parallel trainer: each PP stage's sender streams its own stage.

Every rank of the job builds one `StageWeightSync` and calls `join` and `sync`
together (the protocol is in broadcast.py's docstring). Control messages
between ranks (the server URLs, each step's success or error) are small
Python objects on `layout.group`, the engine's gloo group over the whole job;
weights never go through it: stage s's sender reads its stage's gathered
tensors one by one from the engine and broadcasts them to the servers in
buckets, so no rank holds more than one bucket plus one tensor of weights.

    sync = StageWeightSync(layout, cfg.weight_sync, server_tp_size=1)
    sync.join(urls if rank == 0 else None)               # all ranks
    stats = sync.sync(stage_weights_or_None, version)    # all ranks; stats on rank 0

Failures: any rank's error in a step is shared with every rank, which all
raise `WeightSyncError` naming the step, the rank and the servers; a rank that
died surfaces as the gloo group's error (time-out: the group's own). A sync
starts with the controller's pause, which is also its check that every server
answers: when the pause fails, the controller probes the servers' /health;
one that died leaves the pool, every stage's group is rebuilt without it (a
broadcast to a dead rank would fail) and the pause is made again; a server
that answers /health but refuses the pause fails the sync, naming it.

Per sync and PP = 1 the ranks exchange two flag tensors: whether the pause
failed (broadcast by the controller) and whether the stage failed anywhere
(all-reduced; the controller, sender of the last stage, has resumed generation
before it). Errors and other ranks' statistics travel as Python objects only
when there are some. The controller's HTTP calls run on one event
loop kept for the object's life, with one client per URL list, so its
connections to the servers are reused from phase to phase and sync to sync.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

from areal_mega.platform.process_group import leave_group
from areal_mega.rollout.client import GenerationClient
from areal_mega.weight_sync.broadcast import (
    WeightSyncError,
    WeightUpdateGroup,
    describe_error,
    init_weight_update_group,
    pause,
    resume_and_check,
    stream,
)
from areal_mega.weight_sync.config import WeightSyncConfig, is_loopback, resolve_master_addr, url_host


@dataclass(frozen=True)
class StageLayout:
    """This rank's part in a sync.

    stage / num_stages: its pipeline stage. sender: it sends its stage (tp 0,
    dp 0 of the stage; one per stage). gathers: it iterates its stage's weights
    with the sender (the sender's TP peers, whose all-gathers the iteration
    needs). group: gloo group over the whole job, rank 0 the controller.
    """

    stage: int
    num_stages: int
    sender: bool
    gathers: bool
    group: object


def stage_group_name(group_name: str, stage: int, num_stages: int) -> str:
    """The weight-update group of `stage`: `group_name` itself without PP, else `{group_name}_pp{stage}`."""
    return group_name if num_stages == 1 else f"{group_name}_pp{stage}"


class StageWeightSync:
    """One per rank; `join` and `sync` are collective over `layout.group`."""

    def __init__(self, layout: StageLayout, cfg: WeightSyncConfig, server_tp_size: int = 1,
                 api_key: str | None = None, server_backend: str = "sglang"):
        self.layout, self.cfg = layout, cfg
        self.server_tp_size, self.api_key = server_tp_size, api_key
        self.server_backend = server_backend  # rollout.backend: which protocol the client speaks
        self.rank = dist.get_rank()
        self.is_controller = self.rank == 0
        self.urls: list[str] = []
        self.group: WeightUpdateGroup | None = None
        self.senders = self._senders()
        self._loop: asyncio.AbstractEventLoop | None = None  # this rank's, for every HTTP call of a sync
        self._http_client: GenerationClient | None = None  # for self.urls, open on self._loop

    @property
    def group_name(self) -> str:
        return stage_group_name(self.cfg.group_name, self.layout.stage, self.layout.num_stages)

    # ------------------------------------------------------------ control messages
    def _senders(self) -> list[int]:
        """Global rank of each stage's sender; exactly one per stage."""
        roles = self._all(self.layout.stage if self.layout.sender else None, "finding each stage's sender")
        senders = [[r for r, s in enumerate(roles) if s == stage] for stage in range(self.layout.num_stages)]
        if any(len(ranks) != 1 for ranks in senders):
            raise ValueError(f"weight sync: each pipeline stage needs exactly one sender, got ranks {senders}")
        return [ranks[0] for ranks in senders]

    def _all(self, obj, what: str) -> list:
        try:
            out = [None] * dist.get_world_size(self.layout.group)
            dist.all_gather_object(out, obj, group=self.layout.group)
            return out
        except Exception as e:  # a dead rank or a time-out of the object group
            raise WeightSyncError(
                f"weight sync: rank {self.rank} lost the job while {what}: {describe_error(e)}") from e

    def _from_controller(self, obj, what: str):
        box = [obj]
        try:
            dist.broadcast_object_list(box, src=0, group=self.layout.group)
        except Exception as e:
            raise WeightSyncError(
                f"weight sync: rank {self.rank} lost the job while {what}: {describe_error(e)}") from e
        return box[0]

    def _flags(self, flags: list[bool], what: str, controller_only: bool = False) -> list[bool]:
        """Every rank: the controller's `flags` (controller_only) or each flag OR-ed over the ranks, as one
        small tensor collective on the job's group (no pickling)."""
        t = torch.tensor([float(f) for f in flags])
        try:
            if controller_only:
                dist.broadcast(t, src=0, group=self.layout.group)
            else:
                dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.layout.group)
        except Exception as e:  # a dead rank or a time-out of the group
            raise WeightSyncError(
                f"weight sync: rank {self.rank} lost the job while {what}: {describe_error(e)}") from e
        return [bool(x) for x in t.tolist()]

    def _agree(self, error: str | None, what: str, result=None) -> list:
        """Every rank: raise if any rank reports an error for this step (all raise the same). Returns, on
        the controller, the ranks' `result`s that are not None ([] elsewhere). When no rank failed and
        only the controller has a result (PP = 1) that is one all-reduce of two flags; messages and
        results travel as objects only otherwise."""
        failed, others = self._flags([error is not None, result is not None and not self.is_controller], what)
        if not failed and not others:
            return [result] if self.is_controller and result is not None else []
        answers = self._all((error, result), what)
        bad = [(r, e) for r, (e, _) in enumerate(answers) if e]
        if bad:
            rank, msg = bad[0]
            more = f" (and on {len(bad) - 1} other rank(s))" if len(bad) > 1 else ""
            raise WeightSyncError(f"weight sync: {what} failed on rank {rank}{more}: {msg}")
        return [r for _, r in answers if r is not None] if self.is_controller else []

    # ------------------------------------------------------------ HTTP, on one kept event loop
    def _run(self, coro):
        """Run `coro` to completion on this rank's own event loop (made once, kept across syncs)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def _http(self) -> GenerationClient:
        """This rank's client for the current URLs (the controller's, or a PP stage sender's), kept open on
        self._loop, so its connections are reused, until the URLs change."""
        if self._http_client is not None and self._http_client.urls != [u.rstrip("/") for u in self.urls]:
            self._run(self._http_client.close())
            self._http_client = None
        if self._http_client is None:
            self._http_client = self._client(self.urls)
        return self._http_client

    def close(self) -> None:
        """Close the kept client and event loop (every rank, at the end of the run)."""
        if self._loop is None:
            return
        if self._http_client is not None:
            self._run(self._http_client.close())
            self._http_client = None
        self._loop.close()
        self._loop = None

    # ------------------------------------------------------------ group membership
    def join(self, urls: list[str] | None) -> None:
        """All ranks: the controller's `urls` become every rank's; each stage's sender builds its group
        with every server, stage after stage. No URLs: nothing to join (sync is a no-op)."""
        plan = (list(urls or []), socket.gethostname()) if self.is_controller else None
        self.urls, controller_host = self._from_controller(plan, "waiting for the server URLs")
        if not self.urls:
            return
        for stage in range(self.layout.num_stages):
            error = None
            if self.layout.sender and self.layout.stage == stage:
                try:
                    self._join_own_stage(controller_host)
                except Exception as e:
                    error = describe_error(e)
            self._agree(error, f"joining weight-update group "
                               f"{stage_group_name(self.cfg.group_name, stage, self.layout.num_stages)!r}")

    def _join_own_stage(self, controller_host: str) -> None:
        from areal_mega.platform.device import free_port

        local = [u for u in self.urls if is_loopback(url_host(u))]
        if local and socket.gethostname() != controller_host:
            raise ValueError(f"rollout URLs {local} are loopback addresses of the controller's host "
                             f"{controller_host}; stage {self.layout.stage}'s weight sender on {socket.gethostname()} "
                             f"cannot reach them: give the servers' routable addresses (rollout.urls / rollout.host)")
        addr = resolve_master_addr(self.cfg.master_addr, self.urls)
        port = self.cfg.master_port + self.layout.stage if self.cfg.master_port else free_port()
        self.group = init_weight_update_group(self._client(self.urls), addr, port, self.group_name,
                                              self.cfg.resolved_backend(),
                                              self.server_tp_size, self.cfg.timeout_s, self.api_key)

    def _leave(self, alive: list[str]) -> None:
        async def destroy():
            client = self._client(alive)
            try:
                await client.destroy_weights_update_group(self.group_name)
            finally:
                await client.close()

        try:
            asyncio.run(destroy())
        finally:
            leave_group(self.group.pg)
            self.group = None

    def _pause(self) -> dict:
        """All ranks: the controller pauses every server (and opens its update). If that fails it probes
        their /health: servers that died leave the pool, every group is rebuilt without them and the
        pause is made again; a pause refused by servers that answer /health raises on every rank.
        Returns {"rollout/servers_lost": n} when servers were dropped, else {}."""
        plan = None
        if self.is_controller:
            error, dead = None, []
            try:
                self._run(pause(self._http(), self.cfg.pause_mode))
            except Exception as e:
                error = describe_error(e)
                healthy = self._run(self._http().check_health(force=True))
                dead = [u for u, ok in zip(self.urls, healthy) if not ok]
            plan = (error, dead)
        what = "waiting for the controller to pause generation"
        if not self._flags([plan is not None and plan[0] is not None], what, controller_only=True)[0]:
            return {}
        error, dead = self._from_controller(plan, what)
        if not dead:
            if error:
                raise WeightSyncError(f"weight sync: pausing generation failed on rank 0 (every server answers "
                                      f"/health): {error}")
            return {}
        alive = [u for u in self.urls if u not in dead]
        if not alive:
            raise WeightSyncError(f"weight sync: every generation server is down: {dead} (pausing: {error})")
        if self.is_controller:
            print(f"[areal_mega] generation servers lost, continuing without them: {dead}", flush=True)
        error = None
        if self.layout.sender:
            try:
                self._leave(alive)
            except Exception as e:
                error = describe_error(e)
        self._agree(error, "leaving the weight-update groups")
        self.join(alive if self.is_controller else None)
        self._controller_step(lambda client: pause(client, self.cfg.pause_mode), "pausing generation")
        return {"rollout/servers_lost": float(len(dead))}

    def _client(self, urls: list[str]) -> GenerationClient:
        return GenerationClient(urls, api_key=self.api_key, timeout_s=self.cfg.timeout_s, backend=self.server_backend)

    # ------------------------------------------------------------ one update
    def sync(self, named_tensors: Iterable[tuple[str, torch.Tensor]] | None, weight_version: str) -> dict:
        """All ranks: send every stage's weights to every server and set their version.

        `named_tensors`: this rank's stage as (hf_name, full tensor), in the dtype the servers run,
        on ranks with layout.gathers (None elsewhere). Returns on the controller
        {"seconds", "gigabytes", "gb_per_s", "num_buckets", "num_tensors", "num_broadcasts"} (+ "rollout/servers_lost"
        when a server was dropped), {} elsewhere and when there are no servers.
        """
        if not self.urls:
            return {}
        weight_version = str(weight_version)
        t0 = time.perf_counter()
        lost = self._pause()
        last = self.layout.num_stages - 1
        # the controller sends the last stage itself (PP = 1): it resumes right after it, in the same step
        resume_inline = self.senders[last] == 0
        parts = []
        for stage in range(self.layout.num_stages):
            error, mine = None, None
            if self.layout.gathers and self.layout.stage == stage:
                try:
                    if self.layout.sender:
                        mine = self._run(stream(self._http(), self.group, named_tensors,
                                                weight_version if stage == last else None,
                                                self.cfg.bucket_bytes, self.cfg.flatten_buckets))
                    else:
                        for _ in named_tensors:  # the sender's TP peers: their part of each all-gather
                            pass
                except Exception as e:
                    error = describe_error(e)
                if error is None and stage == last and resume_inline and self.is_controller:
                    try:
                        self._run(resume_and_check(self._http(), weight_version))
                    except Exception as e:
                        error = f"resuming generation: {describe_error(e)}"
            what = f"sending pipeline stage {stage} (sender rank {self.senders[stage]})"
            parts += self._agree(error, what + (" and resuming generation" if resume_inline and stage == last else ""),
                                 mine)
        if not resume_inline:
            self._controller_step(lambda client: resume_and_check(client, weight_version), "resuming generation")
        seconds = time.perf_counter() - t0
        if not self.is_controller:
            return {}
        nbytes = sum(p["bytes"] for p in parts)
        return {"seconds": seconds, "gigabytes": nbytes / 1e9, "gb_per_s": nbytes / 1e9 / seconds,
                "num_buckets": sum(p["num_buckets"] for p in parts),
                "num_tensors": sum(p["num_tensors"] for p in parts),
                "num_broadcasts": sum(p["num_broadcasts"] for p in parts), **lost}

    def _controller_step(self, step, what: str) -> None:
        """The controller runs `step(client)` (async) on the servers; every rank learns whether it worked."""
        error = None
        if self.is_controller:
            try:
                self._run(step(self._http()))
            except Exception as e:
                error = describe_error(e)
        self._agree(error, what)
