"""Async HTTP client for a pool of generation servers speaking SGLang's protocol (v0.5.23).

The same client talks to SGLang (`python -m sglang.launch_server`) and to the
reference server (`areal_mega.rollout.server`); it never knows which.

- Load balancing: each request goes to the healthy server with the fewest
  outstanding tokens (prompt tokens + max_new_tokens x n of its requests in
  flight).
- Bounded concurrency: at most `max_concurrency` requests in flight.
- Failures: a connection error, time-out or 5xx takes the server out of the
  pool and the request is retried on another, up to `max_retries` times.
  A server out of the pool is probed on `/health` (at most every
  `health_interval_s`) and comes back when it answers 200. When no server is
  healthy after the retries, `AllServersDownError` names each URL and its
  last error. A 4xx answer is the request's fault: `ValueError` with the
  server's message, no retry.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp


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


def _error_message(body) -> str:
    """The message of an SGLang error body: {"error": {"message"}} or {"error": str} or text."""
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body))
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    return str(body)


class GenerationClient:
    """A pool of servers behind one `generate` call. Use inside one or more event loops (`asyncio.run`)."""

    def __init__(
        self,
        urls: list[str],
        api_key: str | None = None,
        timeout_s: float = 3600.0,
        max_retries: int = 3,
        max_concurrency: int = 256,
        health_interval_s: float = 2.0,
        retry_backoff_s: float = 0.5,
    ):
        if not urls:
            raise ValueError("urls: at least one server URL is required")
        self.servers = [ServerState(u.rstrip("/")) for u in urls]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.health_interval_s = health_interval_s
        self.retry_backoff_s = retry_backoff_s
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
                      timeout_s: float | None = None):
        """One HTTP call to one server: (status, parsed JSON or text). Network errors propagate."""
        session = self._bind()
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        async with session.request(method, url + path, json=payload, timeout=timeout) as resp:
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

    async def generate(self, input_ids: list[int], sampling_params: dict, return_logprob: bool = True) -> dict:
        """POST /generate for one prompt `[prompt_len]` on the least-loaded server; returns SGLang's JSON.

        With sampling_params["n"] > 1 the JSON is a list of n results.
        """
        self._bind()
        cost = len(input_ids) + int(sampling_params.get("max_new_tokens", 128)) * int(sampling_params.get("n", 1))
        payload = {"input_ids": list(input_ids), "sampling_params": sampling_params, "return_logprob": return_logprob}
        async with self._sem:
            for attempt in range(self.max_retries + 1):
                server = await self._pick()
                if server is None:
                    await asyncio.sleep(self.retry_backoff_s * (attempt + 1))
                    continue
                server.outstanding_tokens += cost
                try:
                    status, body = await self.request(server.url, "/generate", payload)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    self._mark_down(server, f"/generate: {type(e).__name__}: {e}")
                    continue
                finally:
                    server.outstanding_tokens -= cost
                if status == 200:
                    return body
                if 400 <= status < 500:
                    raise ValueError(f"{server.url}/generate answered {status}: {_error_message(body)}")
                self._mark_down(server, f"/generate answered {status}: {_error_message(body)}")
        raise AllServersDownError(
            f"/generate failed after {self.max_retries + 1} attempts; servers: {self._down_report()}"
        )

    async def _all(self, path: str, payload: dict | None = None, method: str = "POST") -> list:
        """Call `path` on every server (healthy or not); raise naming the servers that failed."""
        results = await asyncio.gather(
            *(self.request(s.url, path, payload, method=method) for s in self.servers), return_exceptions=True
        )
        failed = [f"{s.url}: {r if isinstance(r, Exception) else _error_message(r[1])}"
                  for s, r in zip(self.servers, results) if isinstance(r, Exception) or r[0] != 200]
        if failed:
            raise RuntimeError(f"{path} failed on {len(failed)} server(s): " + "; ".join(failed))
        return [r[1] for r in results]

    async def flush_cache(self) -> None:
        await self._all("/flush_cache")

    async def pause_generation(self, mode: str = "abort") -> None:
        """Stop every server generating (SGLang's /pause_generation; 'abort' finishes running requests)."""
        await self._all("/pause_generation", {"mode": mode})

    async def destroy_weights_update_group(self, group_name: str) -> None:
        """Every server leaves the weight-update group `group_name` (before it is rebuilt)."""
        await self._all("/destroy_weights_update_group", {"group_name": group_name})

    async def continue_generation(self) -> None:
        await self._all("/continue_generation", {})

    async def get_weight_versions(self) -> list[str]:
        """Each server's weight version: `/get_weight_version` (SGLang <= 0.5.2) or `/model_info` (0.5.23)."""
        out = []
        for s in self.servers:
            status, body = await self.request(s.url, "/get_weight_version", method="GET")
            if status == 404:
                status, body = await self.request(s.url, "/model_info", method="GET")
            if status != 200:
                raise RuntimeError(f"{s.url}: cannot read weight version ({status}: {_error_message(body)})")
            out.append(str(body["weight_version"]))
        return out

    async def init_weights_update_group(self, url: str, master_address: str, master_port: int, rank_offset: int,
                                        world_size: int, group_name: str, backend: str) -> None:
        """Ask one server to join the weight-update group (it blocks until every rank joined)."""
        status, body = await self.request(url, "/init_weights_update_group", {
            "master_address": master_address, "master_port": master_port, "rank_offset": rank_offset,
            "world_size": world_size, "group_name": group_name, "backend": backend,
        })
        if status != 200 or not body.get("success", False):
            raise RuntimeError(f"{url}/init_weights_update_group failed ({status}): {_error_message(body)}")

    async def update_weights_from_distributed(self, url: str, names: list[str], dtypes: list[str],
                                              shapes: list[list[int]], group_name: str,
                                              weight_version: str | None = None, flush_cache: bool = True) -> None:
        """Tell one server to receive one bucket of broadcasts (names/dtypes/shapes in broadcast order)."""
        payload = {"names": names, "dtypes": dtypes, "shapes": shapes, "group_name": group_name,
                   "flush_cache": flush_cache}
        if weight_version is not None:
            payload["weight_version"] = weight_version
        status, body = await self.request(url, "/update_weights_from_distributed", payload)
        if status != 200 or not body.get("success", False):
            raise RuntimeError(f"{url}/update_weights_from_distributed failed ({status}): {_error_message(body)}")

    async def update_weight_version(self, new_version: str) -> None:
        await self._all("/update_weight_version", {"new_version": new_version, "abort_all_requests": False})
