"""areal_mega.plot: moving average, a PNG of the right size from a synthetic run, clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from areal_mega.plot import DPI, FIGSIZE, moving_average, plot_run


def test_moving_average_against_loop():
    values = np.random.default_rng(0).normal(size=60)
    got = moving_average(values, 25)
    want = [values[max(0, i - 24): i + 1].mean() for i in range(60)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(moving_average(values, 1), values)
    with pytest.raises(ValueError, match="window"):
        moving_average(values, 0)


def _synthetic_run(run_dir, steps=120):
    rng = np.random.default_rng(1)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, steps + 1):
            row = {"step": step, "reward/mean": -2 + 4 * step / steps + rng.normal(0, 0.8),
                   "response_length/mean": 300 + 2 * step + rng.normal(0, 30)}
            if step == 50:
                row["reward/mean"] = None  # a skipped NaN step
            f.write(json.dumps(row) + "\n")


def test_png_of_the_right_size(tmp_path):
    import matplotlib.image

    _synthetic_run(tmp_path)
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI))
    assert image[..., :3].std() > 0.05, "the image is blank"


def test_cli_writes_png_and_reports_missing_key(tmp_path):
    _synthetic_run(tmp_path, steps=30)
    out = tmp_path / "fig.png"
    done = subprocess.run([sys.executable, "-m", "areal_mega.plot", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "areal_mega.plot", str(tmp_path), "--reward-key", "acc"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'acc'" in bad.stderr and "reward/mean" in bad.stderr


def test_missing_run_dir_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path / "nope")
