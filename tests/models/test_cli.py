"""The model CLIs: `areal_mega.cli.check` and `areal_mega.cli.convert`."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from areal_mega.platform.device import free_port


def _run(module: str, args: list[str], nproc: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module` (nproc None) or the same under torchrun with `nproc` ranks."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if nproc is None:
        cmd = [sys.executable, "-m", module, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "-m", module, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def other_qwen2_dir(tmp_path_factory):
    """Same architecture as tiny_qwen2_dir, different weights (seed 1)."""
    from areal_mega.models.tiny import build_char_tokenizer, build_tiny_model

    d = tmp_path_factory.mktemp("other_qwen2")
    build_char_tokenizer(d)
    build_tiny_model(d, arch="qwen2", tie_word_embeddings=True, seed=1)
    return d


@pytest.mark.multirank
def test_check_passes_at_tp2(tiny_qwen2_dir):
    proc = _run("areal_mega.cli.check", ["--hf", str(tiny_qwen2_dir), "--tp", "2"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if "max |dlogprob|" in ln)
    assert float(line.split("= ")[1].split()[0]) <= 1e-4 and line.endswith("OK")


def test_check_fails_against_other_weights(tiny_qwen2_dir, other_qwen2_dir):
    proc = _run("areal_mega.cli.check", ["--hf", str(tiny_qwen2_dir), "--reference", str(other_qwen2_dir)])
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if "max |dlogprob|" in ln)
    assert float(line.split("= ")[1].split()[0]) > 1e-2 and line.endswith("FAIL")


def test_check_names_missing_safetensors_file(tiny_qwen2_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_qwen2_dir, broken)
    (broken / "model.safetensors").rename(broken / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "model.norm.weight": "model-00002-of-00002.safetensors"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    proc = _run("areal_mega.cli.check", ["--hf", str(broken)])
    assert proc.returncode == 2
    assert "model-00002-of-00002.safetensors" in proc.stderr and "missing" in proc.stderr
    (broken / "model.safetensors.index.json").unlink()
    proc = _run("areal_mega.cli.check", ["--hf", str(broken)])
    assert proc.returncode == 2 and "no model.safetensors" in proc.stderr


def test_check_names_unsupported_architecture(tiny_qwen2_dir, tmp_path):
    odd = tmp_path / "gpt2ish"
    shutil.copytree(tiny_qwen2_dir, odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (odd / "config.json").write_text(json.dumps(cfg))
    proc = _run("areal_mega.cli.check", ["--hf", str(odd)])
    assert proc.returncode == 2
    assert "GPT2LMHeadModel" in proc.stderr and "config.json" in proc.stderr and "Qwen2ForCausalLM" in proc.stderr


@pytest.mark.multirank
def test_convert_hf_to_megatron_and_back_is_identical(tiny_qwen2_dir, other_qwen2_dir, tmp_path):
    from safetensors.torch import load_file

    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    proc = _run("areal_mega.cli.convert", ["--hf", str(tiny_qwen2_dir), "--out", str(ckpt), "--tp", "2"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (ckpt / "step_000000").glob("rank*.pt")) == ["rank0_0_0.pt", "rank1_0_0.pt"]
    # The base dir only supplies config/tokenizer; its (different) weights must all be overwritten.
    proc = _run("areal_mega.cli.convert", ["--to-hf", "--ckpt", str(ckpt), "--hf", str(other_qwen2_dir),
                                              "--out", str(back)], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    original = load_file(str(tiny_qwen2_dir / "model.safetensors"))
    converted = {}
    for f in back.glob("*.safetensors"):
        converted.update(load_file(str(f)))
    assert converted.keys() == original.keys()
    for name, t in original.items():
        assert torch.equal(converted[name], t), name
    assert (back / "tokenizer.json").is_file() and (back / "config.json").is_file()


def test_convert_names_missing_checkpoint(tmp_path):
    proc = _run("areal_mega.cli.convert", ["--to-hf", "--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert proc.returncode == 2 and "no complete checkpoint" in proc.stderr
