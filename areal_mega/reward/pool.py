"""Reward checks in worker processes, each under a time limit enforced from outside.

A `RewardPool` owns `num_workers` processes (`worker.py`, started as
`python -m areal_mega.reward.worker`, so they never re-import the caller's
`__main__`: plain scripts without a `__main__` guard, `python -c`,
notebooks and torchrun ranks can all use it). The parent sends one check at
a time to an idle worker over a socket and waits on all of them with a
deadline; a worker that misses its deadline (a hung sympy call) or dies (out
of memory: each worker runs under an address-space limit) is killed and
replaced, and that check counts as wrong. Nothing on the builtin path
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
import os
import socket
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait

from areal_mega.reward.config import RewardConfig

MAX_CHUNK = 16  # checks per message to a worker (one pipe round trip per check costs more than a check)
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
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        env["OMP_NUM_THREADS"] = "1"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *_SAFE_PATH, "-m", "areal_mega.reward.worker", str(child.fileno()),
                 str(memory_limit_mb), checker],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True,
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.started = time.monotonic()
        self.ready = False
        self.tasks: deque[int] = deque()  # sent, not yet answered, in order
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


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

        An idle worker gets a chunk of up to MAX_CHUNK tasks in one message and answers them one by
        one, so the time limit applies to each check: the head of a worker's chunk has `timeout`
        seconds from the previous answer. A worker past it is killed, that check is wrong, and the
        rest of its chunk goes back to the queue.
        """
        if not self._workers:
            raise RuntimeError("RewardPool is closed")
        results = [False] * len(tasks)
        pending = deque(range(len(tasks)))
        while pending or any(w.tasks for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and not w.tasks and pending:
                    size = max(1, min(MAX_CHUNK, len(pending) // (2 * len(self._workers))))
                    chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                    try:
                        w.conn.send([(*tasks[i], self.cfg.mode) for i in chunk])
                    except (BrokenPipeError, OSError):  # died while idle: the chunk never ran
                        pending.extendleft(reversed(chunk))
                        self.stats["crashes"] += 1
                        self._replace(w)
                        continue
                    w.tasks.extend(chunk)
                    w.deadline = now + timeout
            deadlines = [w.deadline for w in self._workers if w.tasks]
            deadlines += [w.started + START_TIMEOUT_S for w in self._workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 1.0
            ready = wait([w.conn for w in self._workers], timeout=wait_s)
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        while True:  # every answer already sent, without blocking
                            msg = w.conn.recv()
                            if msg == "ready":
                                w.ready = True
                                self._failed_starts = 0
                            elif w.tasks:
                                results[w.tasks.popleft()] = self._verdict(*msg)
                                w.deadline = time.monotonic() + timeout
                                self.stats["checks"] += 1
                            if not w.conn.poll():
                                break
                    except (EOFError, OSError):
                        self._finish_failed(w, results, pending, "crashes")
                        continue
                elif w.tasks and time.monotonic() > w.deadline:
                    self._finish_failed(w, results, pending, "timeouts")
                elif not w.ready and time.monotonic() > w.started + START_TIMEOUT_S:
                    raise RuntimeError(f"a reward worker did not start within {START_TIMEOUT_S:.0f} s "
                                       f"(command: {' '.join(w.proc.args)})")
        return results

    def _finish_failed(self, w: _Worker, results: list[bool], pending: deque, reason: str) -> None:
        """The check `w` was on is wrong (`reason`: timeouts / crashes); the rest of its chunk is re-queued."""
        if w.tasks:
            results[w.tasks.popleft()] = False
            self.stats["checks"] += 1
            self.stats[reason] += 1
            pending.extendleft(reversed(w.tasks))
            w.tasks.clear()
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
