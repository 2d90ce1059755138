"""Reward checks in worker processes, each under a time limit enforced from outside.

A `RewardPool` owns `num_workers` processes (`worker.py`, started as
`python -m areal_mega.reward.worker`, so they never re-import the caller's
`__main__`: plain scripts without a `__main__` guard, `python -c`,
notebooks and torchrun ranks can all use it). Identical checks of a batch
are run once. The parent sends a chunk of checks to an idle worker over a
socket and gets one answer message per chunk; the worker marks the check it
is on, and when it started, in a page shared with the parent (`progress.py`),
so each check still has its own deadline. A worker that misses it (a hung
sympy call) or dies (out of memory: each worker runs under an address-space
limit) is killed and replaced: that check counts as wrong, and the other
checks of its chunk are re-run on another worker. Nothing on the builtin path
executes model output (see `parse.py`); responses longer than
`max_response_chars` are wrong without being looked at.

`cfg.checker` picks the verdict: our parser ("builtin"), HF math-verify
("math_verify", optional extra, run inside the same workers), or "both"
(correct when either says so; `stats["disagreements"]` counts the checks
where they differ). `cfg.mode` picks the answer extraction (`extract.py`).

`math_equal` and `math_reward` use one lazily started process-wide pool with
one worker, closed at interpreter exit.
"""
from __future__ import annotations

import atexit
import logging
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from multiprocessing.connection import Connection, wait

from areal_mega.reward.config import RewardConfig
from areal_mega.reward.progress import PROGRESS

MAX_CHUNK = 64  # checks per message to a worker: a message costs a worker about as much CPU as a check
START_TIMEOUT_S = 120.0
log = logging.getLogger(__name__)
# -P: the caller's working directory (a `sympy.py` or `math_verify.py` next to a script) is not on sys.path.
_SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()  # a worker imports sympy (and math-verify); on a loaded machine that can take a while


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    """A `python -m areal_mega.reward.worker` process and the parent's end of its socket pair."""

    def __init__(self, memory_limit_mb: int, checker: str):
        parent, child = socket.socketpair()
        self._page = tempfile.TemporaryFile()  # the worker's PROGRESS record, mapped by both processes
        self._page.truncate(PROGRESS.size)
        self.progress = mmap.mmap(self._page.fileno(), PROGRESS.size)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        env["OMP_NUM_THREADS"] = "1"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *_SAFE_PATH, "-m", "areal_mega.reward.worker", str(child.fileno()),
                 str(self._page.fileno()), str(memory_limit_mb), checker],
                pass_fds=(child.fileno(), self._page.fileno()), stdin=subprocess.DEVNULL, env=env, close_fds=True,
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.started = time.monotonic()
        self.ready = False
        self.seq = 0  # of the chunk in flight
        self.chunk: list[int] = []  # its task indices, in order; empty when idle
        self.sent = 0.0  # when it was sent (time.monotonic)

    def running(self) -> tuple[int, float]:
        """(position in the chunk of the check the worker is on, when it started, time.monotonic s);
        (0, send time) before it starts the chunk; position len(chunk) once the chunk is done."""
        seq, pos, start = PROGRESS.unpack_from(self.progress)
        return (pos, start) if seq == self.seq else (0, self.sent)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()
        self.progress.close()
        self._page.close()


class RewardPool:
    """Batch answer checker over worker processes; use as a context manager or call `close()`."""

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()
        self._workers = [self._new_worker() for _ in range(self.cfg.num_workers)]
        self.stats = {"checks": 0, "timeouts": 0, "crashes": 0, "too_long": 0, "disagreements": 0}
        self._failed_starts = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []

    def _new_worker(self) -> _Worker:
        return _Worker(self.cfg.memory_limit_mb, self.cfg.checker)

    def _replace(self, w: _Worker) -> None:
        if not w.ready:
            self._failed_starts += 1
            if self._failed_starts > 3 * len(self._workers):
                raise RuntimeError("reward workers keep dying before they are ready (their stderr is above; memory_limit_mb too low?)")
        w.kill()
        self._workers[self._workers.index(w)] = self._new_worker()

    def _verdict(self, ours: bool | None, mv: bool | None) -> bool:
        if self.cfg.checker == "builtin":
            return bool(ours)
        if self.cfg.checker == "math_verify":
            return bool(mv)
        self.stats["disagreements"] += bool(ours) != bool(mv)
        return bool(ours) or bool(mv)

    def _run(self, tasks: list[tuple[str, str | None, str]], timeout: float) -> list[bool]:
        """Results of `tasks` [(kind, a, b)] in order; a check past `timeout` seconds or crashing is False.

        Identical tasks run once. An idle worker gets a chunk of up to MAX_CHUNK distinct tasks in one
        message and answers with one message; each check has `timeout` seconds from its own start (read
        from the worker's PROGRESS page). A worker past it is killed, that check is wrong, and the rest
        of its chunk, answered or not, goes back to the queue.
        """
        if not self._workers:
            raise RuntimeError("RewardPool is closed")
        first: dict[tuple, int] = {}
        which = [first.setdefault(t, len(first)) for t in tasks]  # task i is distinct task which[i]
        distinct = list(first)
        raw: list[tuple | None] = [None] * len(distinct)  # (builtin, math_verify) verdicts; None: failed
        pending = deque(range(len(distinct)))
        while pending or any(w.chunk for w in self._workers):
            for w in list(self._workers):
                if w.ready and not w.chunk and pending:
                    size = max(1, min(MAX_CHUNK, len(pending) // (2 * len(self._workers))))
                    chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                    w.seq += 1
                    try:
                        w.conn.send((w.seq, self.cfg.mode, [distinct[j] for j in chunk]))
                    except (BrokenPipeError, OSError):  # died while idle: the chunk never ran
                        pending.extendleft(reversed(chunk))
                        self.stats["crashes"] += 1
                        self._replace(w)
                        continue
                    w.chunk, w.sent = chunk, time.monotonic()
            now = time.monotonic()
            deadlines = [w.running()[1] + timeout for w in self._workers if w.chunk]
            deadlines += [w.started + START_TIMEOUT_S for w in self._workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 1.0
            ready = wait([w.conn for w in self._workers], timeout=wait_s)
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._finish_failed(w, raw, pending, "crashes")
                        continue
                    if msg == "ready":
                        w.ready = True
                        self._failed_starts = 0
                    elif w.chunk:
                        for j, verdicts in zip(w.chunk, msg):
                            raw[j] = verdicts
                        w.chunk = []
                elif w.chunk:
                    pos, start = w.running()
                    # read twice: a record read while the worker writes it could be torn
                    if time.monotonic() > start + timeout and w.running() == (pos, start):
                        self._finish_failed(w, raw, pending, "timeouts")
                elif not w.ready and time.monotonic() > w.started + START_TIMEOUT_S:
                    raise RuntimeError(f"a reward worker did not start within {START_TIMEOUT_S:.0f} s "
                                       f"(command: {' '.join(w.proc.args)})")
        self.stats["checks"] += len(tasks)
        return [r is not None and self._verdict(*r) for r in (raw[j] for j in which)]

    def _finish_failed(self, w: _Worker, raw: list, pending: deque, reason: str) -> None:
        """The check `w` is on stays failed (`reason`: timeouts / crashes); the rest of its chunk is re-queued
        (answers of a chunk come in one message, so those it had finished are lost with the worker)."""
        if w.chunk:
            pos = min(w.running()[0], len(w.chunk) - 1)
            self.stats[reason] += 1
            pending.extendleft(reversed(w.chunk[:pos] + w.chunk[pos + 1 :]))
            w.chunk = []
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
        before = self.stats["disagreements"]
        for i, ok in zip(keep, self._run(tasks, self.cfg.timeout_s if timeout is None else timeout)):
            out[i] = ok
        if self.cfg.checker == "both" and tasks:
            differ = self.stats["disagreements"] - before
            log.info("reward checkers disagree on %d of %d responses (%.1f%%)", differ, len(tasks),
                     100.0 * differ / len(tasks))
        return out

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (a killed worker's replacement has a new one)."""
        return [w.proc.pid for w in self._workers]

    def disagreement_rate(self) -> float:
        """Fraction of all checks so far where builtin and math-verify differed (checker "both"; else 0)."""
        return self.stats["disagreements"] / self.stats["checks"] if self.stats["checks"] else 0.0

    def score(self, responses: list[str], golds: list[str], correct: float = 5.0, wrong: float = -5.0) -> list[float]:
        """Rewards: `correct` or `wrong` per response, [len(responses)] floats (the trainer uses algo.reward_*)."""
        return [correct if ok else wrong for ok in self.correct(responses, golds)]


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
