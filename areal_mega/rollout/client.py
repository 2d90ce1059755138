"""Async HTTP client for a pool of generation servers of one backend (SGLang, vLLM or the reference server).

The client does the I/O; what each backend's routes and bodies look like
lives in its protocol object (`protocol_for(backend)`: protocol_sglang for
SGLang and the reference server, protocol_vllm for vLLM). `generate` returns
`Sample`s, the same for every backend.

- Load balancing: each request goes to the healthy server with the fewest
  outstanding tokens (prompt tokens + max_new_tokens x n of its requests in
  flight).
- Bounded concurrency: at most `max_concurrency` requests in flight.
- Batched requests (`batch_requests`, on for the reference server): the
  n = 1 requests of one event-loop turn go as one /generate per healthy
  server (`SGLangProtocol.generate_batch`).
- Failures: a connection error, time-out or 5xx takes the server out of the
  pool and the request is retried on another, up to `max_retries` times.
  A server out of the pool is probed on `/health` (at most every
  `health_interval_s`) and comes back when it answers 200. When no server is
  healthy after the retries, `AllServersDownError` names each URL and its
  last error. A 4xx answer is the request's fault: `ValueError` with the
  server's message, no retry.
- Weight updates: the control-plane methods (pause_generation, init group,
  update_weights_from_distributed per bucket, flush_cache,
  continue_generation, versions) are the same for every backend, so
  weight_sync drives any of them unchanged; each protocol maps them onto its
  routes (vLLM's start / finish of an update ride on the pause and on the
  bucket that carries the version).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from areal_mega.rollout.protocol import Call, Sample, error_message, protocol_for


class AllServersDownError(RuntimeError):
    """No generation server answered; the message lists each URL and its last error."""


@dataclass
class ServerState:
    url: str
    healthy: bool = True
    outstanding_tokens: int = 0
    last_error: str = ""
    down_since: float = 0.0
    probing: bool = False


def _cost(input_ids: list[int], params: dict) -> int:
    """A request's load on a server: prompt tokens + max_new_tokens x n."""
    return len(input_ids) + int(params.get("max_new_tokens", 128)) * int(params.get("n", 1))


class GenerationClient:
    """A pool of servers behind one `generate` call. Use inside one or more event loops (`asyncio.run`)."""

    def __init__(
        self,
        urls: list[str],
        api_key: str | None = None,
        backend: str = "sglang",
        timeout_s: float = 3600.0,
        max_retries: int = 3,
        max_concurrency: int = 256,
        health_interval_s: float = 2.0,
        retry_backoff_s: float = 0.5,
        batch_requests: bool | None = None,
    ):
        if not urls:
            raise ValueError("urls: at least one server URL is required")
        self.servers = [ServerState(u.rstrip("/")) for u in urls]
        self.backend = backend
        self.protocol = protocol_for(backend)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.health_interval_s = health_interval_s
        self.retry_backoff_s = retry_backoff_s
        # the reference server decodes static batches, so a batched request delays none of its samples
        self.batch_requests = backend == "reference" if batch_requests is None else batch_requests
        self._queued: list[tuple] = []  # (input_ids, params, return_logprob, future) of this loop turn
        self._chunks: set[asyncio.Task] = set()
        self._loop = None
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def _bind(self) -> aiohttp.ClientSession:
        """One session and semaphore per event loop (asyncio objects cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._session is None or self._session.closed:
            self._loop = loop
            self._queued = []
            self._session = aiohttp.ClientSession(
                headers=self.headers, connector=aiohttp.TCPConnector(limit=self.max_concurrency + 16)
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def request(self, url: str, path: str, payload: dict | None = None, method: str = "POST",
                      timeout_s: float | None = None, query: dict | None = None):
        """One HTTP call to one server: (status, parsed JSON or text). Network errors propagate."""
        session = self._bind()
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        async with session.request(method, url + path, json=payload, params=query or None,
                                   timeout=timeout) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    def _mark_down(self, server: ServerState, error: str) -> None:
        server.healthy = False
        server.last_error = error
        server.down_since = time.monotonic()

    async def _probe(self, server: ServerState) -> None:
        server.probing = True
        try:
            status, _ = await self.request(server.url, "/health", method="GET", timeout_s=5.0)
            if status == 200:
                server.healthy = True
            else:
                self._mark_down(server, f"/health answered {status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self._mark_down(server, f"/health: {type(e).__name__}: {e}")
        finally:
            server.probing = False

    async def check_health(self, force: bool = False) -> list[bool]:
        """Probe the servers out of the pool (all of them when `force`); returns each server's health."""
        now = time.monotonic()
        due = [s for s in self.servers if (force or (not s.healthy and now - s.down_since >= self.health_interval_s))
               and not s.probing]
        await asyncio.gather(*(self._probe(s) for s in due))
        return [s.healthy for s in self.servers]

    async def _pick(self) -> ServerState | None:
        await self.check_health()
        healthy = [s for s in self.servers if s.healthy]
        return min(healthy, key=lambda s: s.outstanding_tokens) if healthy else None

    def _down_report(self) -> str:
        return "; ".join(f"{s.url}: {s.last_error or 'unhealthy'}" for s in self.servers)

    async def _call(self, url: str, call: Call, timeout_s: float | None = None):
        return await self.request(url, call.path, call.payload, method=call.method, timeout_s=timeout_s,
                                  query=call.query)

    async def generate(self, input_ids: list[int], sampling_params: dict,
                       return_logprob: bool = True) -> Sample | list[Sample]:
        """Generate for one prompt `[prompt_len]` on the least-loaded server.

        `sampling_params` in SGLang's names (see rollout.protocol). Returns one
        `Sample`, or a list of n with sampling_params["n"] = n > 1.

        With `batch_requests` (default for the reference server), the n = 1
        requests made in one event-loop turn (a rollout's gather) travel as
        batched /generate calls, one contiguous chunk per healthy server (at
        most max_concurrency samples each): one HTTP round trip and one server
        batch instead of one per sample. A chunk fails or is retried as a whole.
        """
        self._bind()
        n = int(sampling_params.get("n", 1))
        if self.batch_requests and n == 1:
            future = asyncio.get_running_loop().create_future()
            if not self._queued:
                asyncio.get_running_loop().call_soon(self._flush)
            self._queued.append((list(input_ids), sampling_params, return_logprob, future))
            return await future
        samples = await self._send(self.protocol.generate(input_ids, sampling_params, return_logprob),
                                   _cost(input_ids, sampling_params))
        return samples[0] if n == 1 else samples

    def _flush(self) -> None:
        """Send the requests queued in this loop turn as batched calls (per return_logprob value)."""
        queued, self._queued = self._queued, []
        for want_lp in (True, False):
            items = [q for q in queued if q[2] == want_lp]
            if not items:
                continue
            parts = max(1, sum(s.healthy for s in self.servers), -(-len(items) // self.max_concurrency))
            size = -(-len(items) // parts)
            for k in range(0, len(items), size):
                task = asyncio.ensure_future(self._send_chunk(items[k:k + size], want_lp))
                self._chunks.add(task)
                task.add_done_callback(self._chunks.discard)

    async def _send_chunk(self, items: list[tuple], return_logprob: bool) -> None:
        """One batched /generate for `items`; each caller's future gets its Sample or the chunk's error."""
        futures = [i[3] for i in items]
        try:
            call = self.protocol.generate_batch([i[0] for i in items], [i[1] for i in items], return_logprob)
            samples = await self._send(call, sum(_cost(i[0], i[1]) for i in items))
            if len(samples) != len(items):
                raise RuntimeError(f"{call.path} answered {len(samples)} samples for {len(items)} prompts")
            for f, s in zip(futures, samples):
                if not f.done():
                    f.set_result(s)
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise
        except Exception as e:
            for f in futures:
                if not f.done():
                    f.set_exception(e)

    async def _send(self, call: Call, cost: int) -> list[Sample]:
        """A /generate `call` on the least-loaded healthy server, retried on others (see the module doc)."""
        async with self._sem:
            for attempt in range(self.max_retries + 1):
                server = await self._pick()
                if server is None:
                    await asyncio.sleep(self.retry_backoff_s * (attempt + 1))
                    continue
                server.outstanding_tokens += cost
                try:
                    status, body = await self._call(server.url, call)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    self._mark_down(server, f"{call.path}: {type(e).__name__}: {e}")
                    continue
                finally:
                    server.outstanding_tokens -= cost
                if status == 200:
                    return self.protocol.parse_generate(body)
                if 400 <= status < 500:
                    raise ValueError(f"{server.url}{call.path} answered {status}: {error_message(body)}")
                self._mark_down(server, f"{call.path} answered {status}: {error_message(body)}")
        raise AllServersDownError(
            f"{call.path} failed after {self.max_retries + 1} attempts; servers: {self._down_report()}"
        )

    async def _all(self, call: Call | None) -> list:
        """Make `call` on every server (healthy or not); raise naming the servers that failed. None: nothing to do."""
        if call is None:
            return []
        results = await asyncio.gather(*(self._call(s.url, call) for s in self.servers), return_exceptions=True)
        failed = [f"{s.url}: {r if isinstance(r, Exception) else error_message(r[1])}"
                  for s, r in zip(self.servers, results) if isinstance(r, Exception) or r[0] != 200]
        if failed:
            raise RuntimeError(f"{call.path} failed on {len(failed)} server(s): " + "; ".join(failed))
        return [r[1] for r in results]

    async def _one(self, url: str, call: Call | None) -> None:
        """Make a weight-update `call` on one server; raise with the server's message unless it succeeded."""
        if call is None:
            return
        status, body = await self._call(url, call)
        if status != 200 or not self.protocol.succeeded(body):
            raise RuntimeError(f"{url}{call.path} failed ({status}): {error_message(body)}")

    async def flush_cache(self) -> None:
        await self._all(self.protocol.flush_cache())

    async def _call_again(self, url: str, call: Call):
        """`_call` right after a refused one: uvicorn drops the connection of a route that raised (vLLM) after
        answering, so the pooled connection that call used may be dead; one retry takes a new one."""
        try:
            return await self._call(url, call)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            return await self._call(url, call)

    async def _all_closing_open_update(self, call: Call | None) -> None:
        """`call` on every server; a server that refuses it is asked to close a weight update that a sync
        failing part-way left open (`protocol.close_update`: vLLM refuses to start an update, or to leave
        the group, while one is open) and, if that succeeds, gets `call` again. Raises naming the servers
        that still fail, with both answers."""
        close = self.protocol.close_update()
        if call is None or close is None:
            await self._all(call)
            return

        async def one(url: str) -> None:
            try:
                status, body = await self._call(url, call)
                if status == 200 and self.protocol.succeeded(body):
                    return
                refused = f"answered {status}: {error_message(body)}"
            except (aiohttp.ClientError, OSError) as e:  # vLLM drops the connection of a route that raised
                refused = f"{type(e).__name__}: {e}"
            c_status, c_body = await self._call_again(url, close)
            if c_status != 200:
                raise RuntimeError(f"{call.path} {refused} (and no update was left open to close: {close.path} "
                                   f"answered {c_status}: {error_message(c_body)})")
            status, body = await self._call_again(url, call)
            if status != 200 or not self.protocol.succeeded(body):
                raise RuntimeError(f"{call.path} answered {status} after {close.path}: {error_message(body)}")

        results = await asyncio.gather(*(one(s.url) for s in self.servers), return_exceptions=True)
        failed = [f"{s.url}: {r}" for s, r in zip(self.servers, results) if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"{call.path} failed on {len(failed)} server(s): " + "; ".join(failed))

    async def pause_generation(self, mode: str = "abort") -> None:
        """Stop every server generating and open a weight update on it ('abort': running requests end as
        "abort" and the rollout manager sends them again; "none": no pause, when nothing can be generating,
        the update is still opened). SGLang: /pause_generation, /begin_weight_update; vLLM: /pause,
        /start_weight_update; either closes first an update a failed sync left open."""
        if mode != "none":
            await self._all(self.protocol.pause(mode))
        await self._all_closing_open_update(self.protocol.start_update())

    async def continue_generation(self) -> None:
        await self._all(self.protocol.resume())

    async def destroy_weights_update_group(self, group_name: str) -> None:
        """Every server leaves the weight-update group `group_name` (before it is rebuilt; an update a failed
        sync left open is closed first)."""
        await self._all_closing_open_update(self.protocol.destroy_group(group_name))

    async def get_weight_versions(self) -> list[str]:
        """Each server's weight version (SGLang: /get_weight_version or /model_info; vLLM: /weight_info),
        every server asked at once."""
        async def one(url: str) -> str:
            for call in self.protocol.version_calls():
                status, body = await self._call(url, call)
                if status != 404:
                    break
            if status != 200:
                raise RuntimeError(f"{url}: cannot read weight version ({status}: {error_message(body)})")
            return self.protocol.parse_version(body)

        return list(await asyncio.gather(*(one(s.url) for s in self.servers)))

    async def init_weights_update_group(self, url: str, master_address: str, master_port: int, rank_offset: int,
                                        world_size: int, group_name: str, backend: str) -> None:
        """Ask one server to join the weight-update group (it blocks until every rank joined)."""
        await self._one(url, self.protocol.init_group(master_address, master_port, rank_offset, world_size,
                                                      group_name, backend))

    async def update_weights_from_distributed(self, url: str, names: list[str], dtypes: list[str],
                                              shapes: list[list[int]], group_name: str,
                                              weight_version: str | None = None, flush_cache: bool = True,
                                              load_format: str | None = None) -> None:
        """Tell one server to receive one bucket of broadcasts (names/dtypes/shapes in broadcast order;
        load_format "flattened_bucket": one broadcast of the bucket packed, rollout/flat_bucket.py).

        The bucket that carries `weight_version` is the update's last: the server then holds the new
        weights under that version (SGLang: in the same call; vLLM: /finish_weight_update right after).
        """
        await self._one(url, self.protocol.update_bucket(names, dtypes, shapes, group_name, weight_version,
                                                         flush_cache, load_format))
        if weight_version is not None:
            await self._one(url, self.protocol.finish_update(weight_version))

    async def update_weight_version(self, new_version: str) -> None:
        await self._all(self.protocol.set_version(new_version))
