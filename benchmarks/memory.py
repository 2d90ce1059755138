"""Resident-memory readings from /proc (Linux), shared by the CPU benchmarks."""
from __future__ import annotations


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
