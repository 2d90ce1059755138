"""One runner for every benchmark: `python -m benchmarks.run NAME [--quick]`.

Each benchmark is `benchmarks/bench_NAME.py` with `main(quick: bool) -> dict`
that measures our path and its baseline in the same run and returns a flat
dict of figures (ratios and peak memory included). The runner adds the date,
device and host, prints a markdown table and writes
`benchmarks/results/NAME.json`; copy the row you stand behind into
`benchmarks/RESULTS.md`.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
from pathlib import Path

import torch


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="benchmark name: benchmarks/bench_<name>.py")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    module = importlib.import_module(f"benchmarks.bench_{args.name}")
    figures = module.main(quick=args.quick)
    record = {
        "benchmark": args.name,
        "date": datetime.date.today().isoformat(),
        "device": device_name(),
        "torch": torch.__version__,
        "quick": args.quick,
        **figures,
    }
    out = Path(__file__).parent / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print("| key | value |\n| --- | --- |")
    for k, v in record.items():
        print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
