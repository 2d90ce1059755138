"""The record a reward worker keeps in a page it shares with the pool: which check it is on, since when.

Written by the worker (`worker.py`) before each check, read by the pool (`pool.py`) to give each
check its own deadline and, when it kills a hung worker, to know which check hung. Fields:
chunk sequence number, position in the chunk (its length once the chunk is done), start of that
check in `time.monotonic()` seconds (the clock is system-wide, so both processes read the same).
"""
import struct

PROGRESS = struct.Struct("<QQd")
