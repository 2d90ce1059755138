"""SFT through the engine: cross-entropy on response tokens falls on a tiny synthetic corpus."""
import json
import os
import random
import subprocess
import sys

import pytest

from areal_mega.platform.device import free_port


def _corpus(path, n=200, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            f.write(json.dumps({"prompt": f"Compute {a}+{b}.", "response": f" \\boxed{{{a + b}}}"}) + "\n")


def _sft(args, nproc):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "areal_mega.engine.sft", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.multirank
def test_sft_lowers_the_loss_at_tp2(tiny_qwen2_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    _corpus(data)
    proc = _sft(["--model", str(tiny_qwen2_dir), "--data", str(data), "--steps", "30", "--batch-size", "16",
                 "--lr", "3e-3", "--tp", "2", "--out", str(tmp_path / "run"), "--save-hf"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nll = [s["nll"] for s in json.loads((tmp_path / "run" / "sft_metrics.json").read_text())]
    first, last = sum(nll[:3]) / 3, sum(nll[-3:]) / 3
    assert first > 4.0  # ~ln(101) for a random init
    assert last < 0.5 * first, nll
    assert (tmp_path / "run" / "hf" / "model.safetensors.index.json").is_file()


def test_bad_record_names_file_and_line(tiny_qwen2_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "a"}\n')
    proc = subprocess.run([sys.executable, "-m", "areal_mega.engine.sft", "--model", str(tiny_qwen2_dir),
                           "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{data}:3: field 'response'" in proc.stderr
