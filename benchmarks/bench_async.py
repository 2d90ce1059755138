"""Synchronous vs asynchronous RL (trainer.async_rollout, eta = 1, 2, 4) vs TRL's GRPOTrainer on the
quickstart workload, one run, one warm start (benchmarks/bench_rl.py's SFT, or BENCH_RL_SFT=DIR).

Each of ours runs `configs/quickstart/rl.yaml` for N steps from the same SFT export with one
reference server; figures per run: steady seconds per optimizer step ((wall at N - wall at 1) /
(N - 1)), samples/s (prompts x n per step over that), the idle fraction of each side (sync: the
trainer waits through the rollout, the server idles through logprobs + train + sync; async: the
stream's own clocks, async/trainer_wait_fraction and async/generation_idle_fraction), mean and max
staleness, held-out greedy accuracy of the final export after the same number of samples, and
peak RSS of the process tree. TRL: bench_rl's GRPOTrainer child on the same batch.

With BENCH_ASYNC_PINNED=1 a second set runs the server on core 0 (`taskset -c 0`) and the trainer
on core 1 (`taskset -c 1`, engine TP=1), so generation and training cannot take each other's core.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_rl import BATCH, ROOT, _env, _run_tree, _sft, _steady_seconds_per_step, _torchrun, _trl, greedy_accuracy

ETAS = (1, 2, 4)


def _ours(work: Path, sft_dir: Path, steps: int, name: str, overrides: list[str], prefix: list[str] = (),
          nproc: int = 2) -> dict:
    from areal_mega.metrics import read_metrics

    run_dir = work / name
    cmd = [*prefix, *_torchrun("configs/quickstart/rl.yaml", [
        f"engine.model_path={sft_dir}", f"trainer.run_dir={run_dir}", "trainer.eval_every=0",
        f"trainer.stages=[{{max_new_tokens: {BATCH['max_new_tokens']}, steps: {steps}}}]", *overrides])]
    cmd[cmd.index("--nproc-per-node") + 1] = str(nproc)
    wall, peak = _run_tree(cmd, _env(1), work / f"{name}.log")
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "time/train" in r]
    s_per_step = _steady_seconds_per_step({r["step"]: r["wall_seconds"] for r in rows}, steps)
    steady = rows[1:]
    samples = BATCH["prompts"] * BATCH["n_samples"]
    out = {"s_per_step": s_per_step, "samples_per_s": samples / s_per_step, "wall_s": wall, "peak_rss_mb": peak,
           "accuracy_after": greedy_accuracy(run_dir / "hf"),
           "train_reward_accuracy_last5": sum(r["reward/accuracy"] for r in rows[-5:]) / 5}
    if "async/trainer_wait_fraction" in rows[-1]:
        out["trainer_idle_fraction"] = rows[-1]["async/trainer_wait_fraction"]
        out["generation_idle_fraction"] = rows[-1]["async/generation_idle_fraction"]
        out["staleness_mean"] = sum(r["async/staleness_mean"] for r in steady) / len(steady)
        out["staleness_max"] = max(r["async/staleness_max"] for r in rows)
    else:
        rollout = sum(r["time/rollout"] for r in steady) / len(steady)
        out["trainer_idle_fraction"] = rollout / s_per_step
        out["generation_idle_fraction"] = 1.0 - rollout / s_per_step
    return {f"{name}_{k}": v for k, v in out.items()}


def _pinned_server(sft_dir: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """A reference server on core 0; returns (process, url) once /health answers."""
    from areal_mega.platform.device import free_port
    from areal_mega.rollout.launcher import wait_healthy

    port = free_port()
    log = work / "pinned_server.log"
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "areal_mega.rollout.server",
                             "--model", str(sft_dir), "--port", str(port)], cwd=ROOT, env=_env(1),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log, time.monotonic() + 300)
    return proc, url


def main(quick: bool = False) -> dict:
    steps, sft_steps = (5, 60) if quick else (30, 240)
    work = ROOT / "outputs" / ("bench_async_quick" if quick else "bench_async")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sft_dir, _ = _sft(work, sft_steps)
    figures = {"rl_steps": steps, **{f"batch_{k}": v for k, v in BATCH.items()},
               "accuracy_before": greedy_accuracy(sft_dir)}
    figures.update(_ours(work, sft_dir, steps, "sync", []))
    for eta in ETAS:
        figures.update(_ours(work, sft_dir, steps, f"async{eta}",
                             ["trainer.async_rollout=true", f"trainer.max_staleness={eta}"]))
    figures.update(_trl(work, sft_dir, steps))
    figures["trl_samples_per_s"] = BATCH["prompts"] * BATCH["n_samples"] / figures["trl_s_per_step"]
    for name in ("sync", *(f"async{eta}" for eta in ETAS)):
        figures[f"{name}_over_trl_samples_per_s"] = figures[f"{name}_samples_per_s"] / figures["trl_samples_per_s"]
    if os.environ.get("BENCH_ASYNC_PINNED") == "1":
        proc, url = _pinned_server(sft_dir, work)
        try:
            pinned = [f"rollout.urls=[{url}]", "engine.parallel.tp=1"]
            one_core = ["taskset", "-c", "1"]
            figures.update(_ours(work, sft_dir, steps, "pinned_sync", pinned, one_core, nproc=1))
            figures.update(_ours(work, sft_dir, steps, "pinned_async2",
                                 [*pinned, "trainer.async_rollout=true", "trainer.max_staleness=2"], one_core, nproc=1))
        finally:
            proc.kill()
        figures["pinned_async2_over_sync_samples_per_s"] = (figures["pinned_async2_samples_per_s"]
                                                            / figures["pinned_sync_samples_per_s"])
    return figures
