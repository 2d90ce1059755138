"""Training curves like AReaL v0.1's Figure 1: reward and response length per RL step, to PNG.

    python -m areal_mega.plot RUN_DIR [--out FILE] [--window 25]

Reads RUN_DIR/metrics.jsonl and draws two panels side by side: the training
reward and the mean response length (tokens) against the step, each as the raw
values (faint) and their trailing moving average over `window` steps (the
first points average what is there). Rows without the key (an SFT step, a
skipped NaN step logged as null) are left out of that panel.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from areal_mega.metrics import read_metrics

REWARD_KEY = "reward/mean"
LENGTH_KEY = "response_length/mean"
FIGSIZE = (10.0, 4.0)  # inches; at DPI this is a 1000 x 400 pixel PNG
DPI = 100


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start); same length as `values`."""
    if window < 1:
        raise ValueError(f"window: must be >= 1, got {window}")
    csum = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def _series(rows: list[dict], key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
    if not points:
        present = sorted({k for r in rows for k in r} - {"step"})
        raise ValueError(f"{path}: no numeric '{key}' in any row (keys present: {', '.join(present) or 'none'})")
    steps, values = zip(*sorted(points))
    return np.asarray(steps), np.asarray(values, dtype=np.float64)


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    window: int = 25,
    reward_key: str = REWARD_KEY,
    length_key: str = LENGTH_KEY,
) -> Path:
    """Draw RUN_DIR/metrics.jsonl's reward and length curves to `out` (default RUN_DIR/curves.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is RUN_DIR the run's output folder?)")
    rows = read_metrics(path)
    panels = [(reward_key, "training reward", "tab:blue"), (length_key, "response length (tokens)", "tab:orange")]
    series = [_series(rows, key, path) for key, _, _ in panels]
    fig, axes = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI)
    for ax, (key, label, color), (steps, values) in zip(axes, panels, series):
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, moving_average(values, window), color=color, linewidth=2.0, label=f"moving average ({window})")
        ax.set_xlabel("RL step")
        ax.set_ylabel(label)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(Path(run_dir).resolve().name)
    fig.tight_layout()
    out = Path(out) if out is not None else Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run's output folder, holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    parser.add_argument("--window", type=int, default=25, help="moving-average window in steps")
    parser.add_argument("--reward-key", default=REWARD_KEY)
    parser.add_argument("--length-key", default=LENGTH_KEY)
    args = parser.parse_args(argv)
    try:
        out = plot_run(args.run_dir, args.out, args.window, args.reward_key, args.length_key)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"error: {e}\n")
    print(out)


if __name__ == "__main__":
    main()
