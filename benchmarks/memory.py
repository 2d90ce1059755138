"""Resident-memory readings from /proc (Linux), shared by the CPU benchmarks."""
from __future__ import annotations

import os


def status_kb(field: str, pid: int | str = "self") -> int:
    """A `/proc/PID/status` field in KiB (VmRSS: current resident set, VmHWM: its peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no field {field}")


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set of a process so far, MB."""
    return status_kb("VmHWM", pid) / 1024


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a vLLM server: API server, engine core, workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:  # exited meanwhile
            continue
    return out


def tree_peak_rss_mb(pid: int) -> float:
    """Sum of the peak resident sets of `pid` and its descendants, MB (pages they share count per process)."""
    total = 0
    for p in descendants(pid):
        try:
            total += status_kb("VmHWM", p)
        except (OSError, KeyError):
            continue
    return total / 1024
