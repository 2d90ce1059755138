"""bench_async with generation and training on one core each (server on core 0, trainer on core 1);
see benchmarks/bench_async.py. `python -m benchmarks.run async_pinned`."""
from benchmarks.bench_async import main as _async


def main(quick: bool = False) -> dict:
    return _async(quick, pinned=True)
