"""Reward checks in worker processes, each under a time limit enforced from outside.

A `RewardPool` owns `num_workers` processes. The parent sends one check at a
time to an idle worker over a pipe and waits on all pipes with a deadline; a
worker that misses its deadline (a hung sympy call) or dies (out of memory:
each worker runs under an address-space limit) is killed and replaced, and
that check counts as wrong. Nothing on this path executes model output
(see `parse.py`); responses longer than `max_response_chars` are wrong
without being looked at.

`math_equal` and `math_reward` use one lazily started process-wide pool with
one worker, closed at interpreter exit.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import time
from collections import deque
from multiprocessing.connection import wait

from areal_mega.reward.config import RewardConfig


def _worker_main(conn, memory_limit_mb: int) -> None:
    """Worker loop: receive (kind, a, b), send back a bool; runs until the pipe closes."""
    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from areal_mega.reward.equal import equal_unguarded
    from areal_mega.reward.extract import extract_answer

    conn.send("ready")
    while True:
        try:
            kind, a, b = conn.recv()
        except (EOFError, OSError):
            return
        try:
            pred = extract_answer(a) if kind == "response" else a
            ok = equal_unguarded(pred, b)
        except (MemoryError, RecursionError, ValueError, TypeError, ArithmeticError, AttributeError):
            ok = False
        conn.send(bool(ok))


class _Worker:
    def __init__(self, ctx, memory_limit_mb: int):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, memory_limit_mb), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class RewardPool:
    """Batch answer checker over worker processes; use as a context manager or call `close()`."""

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()
        self._ctx = mp.get_context(self.cfg.start_method)
        self._workers = [_Worker(self._ctx, self.cfg.memory_limit_mb) for _ in range(self.cfg.num_workers)]
        self.stats = {"checks": 0, "timeouts": 0, "crashes": 0, "too_long": 0}
        self._failed_starts = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []

    def _replace(self, w: _Worker) -> None:
        if not w.ready:
            self._failed_starts += 1
            if self._failed_starts > 3 * len(self._workers):
                raise RuntimeError("reward workers keep dying before they are ready (memory_limit_mb too low?)")
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.cfg.memory_limit_mb)

    def _run(self, tasks: list[tuple[str, str, str]], timeout: float) -> list[bool]:
        """Results of `tasks` [(kind, a, b)] in order; a check past `timeout` seconds or crashing is False."""
        if not self._workers:
            raise RuntimeError("RewardPool is closed")
        results = [False] * len(tasks)
        pending = deque(range(len(tasks)))
        while pending or any(w.task is not None for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and w.task is None and pending:
                    try:
                        w.conn.send(tasks[pending[0]])
                    except (BrokenPipeError, OSError):  # died while idle: the task never ran
                        self.stats["crashes"] += 1
                        self._replace(w)
                        continue
                    w.task = pending.popleft()
                    w.deadline = now + timeout
            busy = [w for w in self._workers if w.task is not None]
            deadlines = [w.deadline for w in busy]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 1.0
            ready = wait([w.conn for w in self._workers], timeout=wait_s)
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._finish_failed(w, results, "crashes")
                        continue
                    if msg == "ready":
                        w.ready = True
                        self._failed_starts = 0
                    elif w.task is not None:
                        results[w.task] = msg
                        w.task = None
                        self.stats["checks"] += 1
                elif w.task is not None and time.monotonic() > w.deadline:
                    self._finish_failed(w, results, "timeouts")
        return results

    def _finish_failed(self, w: _Worker, results: list[bool], reason: str) -> None:
        if w.task is not None:
            results[w.task] = False
            self.stats["checks"] += 1
            self.stats[reason] += 1
        self._replace(w)

    def check(self, preds: list[str | None], golds: list[str], timeout: float | None = None) -> list[bool]:
        """math_equal for each (pred, gold) pair: [len(preds)] bools."""
        if len(preds) != len(golds):
            raise ValueError(f"preds ({len(preds)}) and golds ({len(golds)}) differ in length")
        tasks = [("answer", p, str(g)) for p, g in zip(preds, golds)]
        return self._run(tasks, self.cfg.timeout_s if timeout is None else timeout)

    def correct(self, responses: list[str], golds: list[str], timeout: float | None = None) -> list[bool]:
        """Whether each response's extracted answer equals its gold: [len(responses)] bools."""
        if len(responses) != len(golds):
            raise ValueError(f"responses ({len(responses)}) and golds ({len(golds)}) differ in length")
        limit = self.cfg.max_response_chars
        keep = [i for i, r in enumerate(responses) if isinstance(r, str) and len(r) <= limit]
        self.stats["too_long"] += len(responses) - len(keep)
        tasks = [("response", responses[i], str(golds[i])) for i in keep]
        out = [False] * len(responses)
        for i, ok in zip(keep, self._run(tasks, self.cfg.timeout_s if timeout is None else timeout)):
            out[i] = ok
        return out

    def score(self, responses: list[str], golds: list[str]) -> list[float]:
        """Rewards: cfg.correct_reward or cfg.wrong_reward per response, [len(responses)] floats."""
        return [self.cfg.correct_reward if ok else self.cfg.wrong_reward for ok in self.correct(responses, golds)]


_default: dict[int, RewardPool] = {}


def default_pool() -> RewardPool:
    """The process-wide one-worker pool behind `math_equal`/`math_reward` (one per process id)."""
    pid = os.getpid()
    if pid not in _default:
        _default[pid] = RewardPool(RewardConfig(num_workers=1))
        atexit.register(_default[pid].close)
    return _default[pid]


def math_equal(pred: str | None, gold: str, timeout: float = 5.0) -> bool:
    """True when answer `pred` equals `gold` (see equal.py); False on time-out."""
    return default_pool().check([pred], [gold], timeout=timeout)[0]


def math_reward(response: str, gold: str, correct: float = 5.0, wrong: float = -5.0, timeout: float = 5.0) -> float:
    """`correct` when the answer extracted from `response` equals `gold`, else `wrong`."""
    return correct if default_pool().correct([response], [gold], timeout=timeout)[0] else wrong
